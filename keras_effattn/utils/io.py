"""Atomic result writers: every file appears whole or not at all.

Each writer writes to a temporary file in the destination folder, flushes it to disk and then
renames it over the destination with `os.replace`, which is atomic on POSIX and Windows when both
paths are on the same file system. A reader (or a crashed run restarted later) therefore never
sees a half-written JSON, CSV, PNG or `.keras` file.

Example:

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_json(folder / "metrics.json", {"accuracy": 0.9})
>>> read_json(folder / "metrics.json")
{'accuracy': 0.9}
"""

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import pathlib
import shutil
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yields a temporary path beside `path`; on success renames it over `path`.

    Use it for writers that need a file name (Keras, matplotlib). On an exception the temporary
    file is removed and `path` is left as it was.

    Args:
        path: str or path-like. The destination file.
        suffix: str or None. The temporary file's suffix; defaults to `path`'s own suffixes, so
            writers that dispatch on the extension (``.keras``, ``.weights.h5``, ``.png``) work.

    Yields:
        A `pathlib.Path` to write to.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = pathlib.Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically, fsync'ed before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path, text):
    """Writes `text` (str) to `path` as UTF-8, atomically."""
    if not isinstance(text, str):
        raise ValueError(f"write_text expects a str, got {type(text).__name__}.")
    write_bytes(path, text.encode("utf-8"))


def to_jsonable(value):
    """Converts NumPy/TensorFlow scalars and arrays, paths, tuples and sets to JSON types.

    Non-finite floats become None so the file stays strict JSON.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, obj):
    """Writes `obj` as indented, key-sorted strict JSON, atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")


def read_json(path):
    """Reads a JSON file; raises FileNotFoundError naming the path when it is missing."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_csv(path, rows, columns=None):
    """Writes a list of dicts as CSV with a stable column order, atomically.

    Args:
        path: destination file.
        rows: list of dicts.
        columns: list of column names, or None for the union of the rows' keys in first-seen
            order. Missing values are written as empty cells.
    """
    rows = [to_jsonable(dict(r)) for r in rows]
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    write_text(path, buffer.getvalue())


def read_csv(path):
    """Reads a CSV written by `write_csv` into a list of dicts of strings."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}.")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def save_figure(figure, path, dpi=110):
    """Saves a matplotlib figure as PNG atomically and closes it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(figure)


def save_keras_model(model, path):
    """Saves a Keras model to a `.keras` file atomically."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"Model path must end with '.keras', got {str(path)!r}.")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def save_weights(model, path):
    """Saves a Keras model's weights (and its optimizer's state) to `.weights.h5` atomically."""
    if not str(path).endswith(".weights.h5"):
        raise ValueError(f"Weights path must end with '.weights.h5', got {str(path)!r}.")
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


# Folders this library claims carry this marker; only such folders (or empty ones) are ever
# deleted, so `overwrite` can never remove a user's folder (e.g. ``output_dir="."``).
OWNER_FILE = ".keras_effattn.json"


def _owner_fingerprint(kind, name):
    return hashlib.sha256(f"keras_effattn|{kind}|{name}".encode()).hexdigest()[:16]


def claim_folder(folder, kind, name):
    """Creates `folder` (if needed) and marks it as a keras_effattn folder of `kind`.

    The marker, ``OWNER_FILE``, holds the kind (``"run"`` for a training run folder,
    ``"sweep"`` for an experiment script's folder), a name (a run's config fingerprint, a
    script's name) and a fingerprint of both; `remove_owned_folder` deletes only folders whose
    marker checks out.

    Example:

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> claim_folder(folder, "run", "3f2a")["kind"]
    'run'
    >>> folder_owner(folder)["name"]
    '3f2a'
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = {"owner": "keras_effattn", "kind": str(kind), "name": str(name),
              "fingerprint": _owner_fingerprint(kind, name)}
    write_json(folder / OWNER_FILE, marker)
    return marker


def folder_owner(folder):
    """The marker of a folder claimed by `claim_folder`, or None (no marker, or one that is
    not valid JSON or whose fingerprint does not match its kind and name)."""
    path = pathlib.Path(folder) / OWNER_FILE
    if not path.is_file():
        return None
    try:
        marker = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("owner") != "keras_effattn":
        return None
    if marker.get("fingerprint") != _owner_fingerprint(marker.get("kind"), marker.get("name")):
        return None
    return marker


def folder_contents(folder):
    """The entries of `folder` other than its ownership marker (empty for a missing folder)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name != OWNER_FILE)


def remove_owned_folder(folder, kinds=("run", "sweep")):
    """Deletes `folder` only when keras_effattn provably owns it; refuses anything else.

    A missing or empty folder is left as it is (nothing to delete). A folder whose
    ``OWNER_FILE`` marker (see `claim_folder`) names one of `kinds` is deleted with everything
    in it. Any other folder (a user's folder, the working tree, a folder holding a hand-made
    ``config.json``, a symbolic link) raises ValueError and is not touched.

    Args:
        folder: str or path-like.
        kinds: the marker kinds that may be deleted, e.g. ``("run",)`` for a training run.

    Raises:
        ValueError: `folder` is a file, a symbolic link, or a non-empty folder without a
            matching marker.
    """
    folder = pathlib.Path(folder)
    if folder.is_symlink():
        raise ValueError(
            f"Refusing to delete {folder}: it is a symbolic link. Pass the folder it points to, "
            "or choose a new output folder."
        )
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"Refusing to delete {folder}: it is a file; give a folder path.")
    if not folder_contents(folder):
        return
    owner = folder_owner(folder)
    if owner is None or owner["kind"] not in kinds:
        what = (f"a keras_effattn {owner['kind']} folder, not a {' or '.join(kinds)} folder"
                if owner else f"not a folder keras_effattn created (no valid {OWNER_FILE})")
        raise ValueError(
            f"Refusing to overwrite {folder.resolve()}: it is not empty and is {what}. Choose a "
            "new or empty output folder, or delete this one yourself if you mean to."
        )
    shutil.rmtree(folder)
