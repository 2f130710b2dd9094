"""IMDB Large Movie Review v1.0 (Maas et al., 2011): binary sentiment, 25,000 train + 25,000 test.

Three sources give the same examples (labels 0 = "neg", 1 = "pos", as in tfds `imdb_reviews`):

- the Stanford `aclImdb` folder (`<split>/pos/<id>_<rating>.txt`, `<split>/neg/...`);
- the original `aclImdb_v1.tar.gz`, read in place: the member list is scanned once, the sample is
  chosen from the names, and only the chosen members are decompressed and read (in archive
  order), so a balanced 1,000-per-class sample takes about two seconds instead of extracting
  50,000 files;
- tensorflow-datasets `imdb_reviews` from a prepared tfds data_dir (`"tfds"` for tfds' default
  directory). Nothing is ever downloaded: an unprepared directory fails at once with a message
  that points to the local archive.

Folder and archive give identical datasets for the same `seed`; tfds holds no review ids, so its
sample differs.
"""

import os
import pathlib
import re
import tarfile
import zlib

import numpy as np

from keras_effattn.data import _files
from keras_effattn.data.dataset import TextDataset
from keras_effattn_runtime.cleaning import clean_text

IMDB_CLASS_NAMES = ("neg", "pos")
IMDB_SPLITS = ("train", "test")
_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_HINT = (
    "pass the aclImdb folder, the aclImdb_v1.tar.gz archive (the project's copy is "
    "../shared/data/aclImdb_v1.tar.gz), or 'tfds' / a prepared tfds data_dir."
)


def read_imdb(
    source,
    split="train",
    max_per_class=None,
    seed=0,
    clean=True,
    encoding_errors="strict",
):
    """Reads one official IMDB split, optionally as a seeded balanced subset.

    Examples come in a seeded random order (fixed by `seed`), so any prefix is itself a random
    sample. Decoding policy: reviews must be UTF-8; by default a bad byte raises a `ValueError`
    naming the file (the real data set has none, so a bad byte means a corrupt copy), and
    `encoding_errors="replace"` substitutes U+FFFD instead.

    Args:
        source: path to the `aclImdb` folder, to `aclImdb_v1.tar.gz`, to a folder holding
            either (such as `../shared/data`), or `"tfds"` / a tfds data_dir holding a prepared
            `imdb_reviews`.
        split: `"train"` or `"test"` (the official 25,000/25,000 splits).
        max_per_class: int or `None` (default, all). Take this many reviews of each class,
            chosen at random with `seed`: a balanced subset.
        seed: int, default 0. Chooses the subset and the order.
        clean: bool, default `True`. Apply `clean_text` (HTML such as `<br />` removed,
            punctuation and whitespace normalised; case kept).
        encoding_errors: `"strict"` (default) or `"replace"`, see above.

    Returns:
        A `TextDataset` named `"imdb/<split>"` with `class_names == ("neg", "pos")`.

    Raises:
        FileNotFoundError: `source` does not exist, or tfds has no prepared `imdb_reviews`.
        ValueError: a wrong folder layout, a corrupt or truncated archive, an empty review,
            non-UTF-8 bytes (strict mode), or a bad argument.

    Example (``read_imdb("../shared/data/aclImdb_v1.tar.gz", "train", max_per_class=1000)``
    reads a balanced 2,000 of the real archive; here a two-review folder of the same layout):
    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "aclImdb"
    >>> for label, text in (("pos", "A <b>fine</b> film."), ("neg", "Dull.<br />Very.")):
    ...     folder = root / "train" / label
    ...     folder.mkdir(parents=True)
    ...     _ = (folder / "0_7.txt").write_text(text, encoding="utf-8")
    >>> train = read_imdb(root, "train")
    >>> len(train), train.class_counts().tolist()
    (2, [1, 1])
    >>> ds = train.to_tf_dataset(batch_size=2, shuffle=True, seed=0)

    References:
        Maas et al., "Learning Word Vectors for Sentiment Analysis", ACL 2011.
    """
    if split not in IMDB_SPLITS:
        raise ValueError(f"split must be one of {IMDB_SPLITS}, got {split!r}.")
    if max_per_class is not None:
        if isinstance(max_per_class, bool) or not isinstance(max_per_class, (int, np.integer)):
            raise ValueError(
                f"max_per_class must be a positive int or None, got {max_per_class!r}."
            )
        if max_per_class < 1:
            raise ValueError(f"max_per_class must be >= 1 (or None for all), got {max_per_class}.")
    _files.check_encoding_errors(encoding_errors)
    kind, location = _resolve_source(source, split)
    if kind == "tfds":
        texts, labels, origins = _read_tfds(location, split, max_per_class, seed, encoding_errors)
    else:
        names = _list_folder(location, split) if kind == "folder" else None
        if kind == "folder":
            chosen = _choose(names, split, max_per_class, seed, str(location))
            raw = [(pathlib.Path(location, n).read_bytes(), n) for n, _ in chosen]
        else:
            raw, chosen = _read_archive(location, split, max_per_class, seed)
        texts = [_files.decode(data, f"{location}: {name}", encoding_errors) for data, name in raw]
        labels = [label for _, label in chosen]
        origins = [f"{location}: {name}" for _, name in raw]
    if clean:
        texts = [clean_text(t) for t in texts]
    for text, origin in zip(texts, origins):
        if not text.strip():
            state = "empty after cleaning" if clean else "empty"
            raise ValueError(
                f"IMDB review {origin} is {state}; the copy is damaged, re-download it "
                "(every review of the real data set has text)."
            )
    return TextDataset(texts, np.asarray(labels, np.int32), IMDB_CLASS_NAMES, name=f"imdb/{split}")


def _resolve_source(source, split):
    """Returns ("folder" | "archive" | "tfds", location)."""
    path = _files.resolve_source(source, "IMDB source", _HINT)
    if path == "tfds":
        return "tfds", None
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return "archive", path
        raise ValueError(f"IMDB source {str(path)!r} is a file but not a .tar.gz archive; {_HINT}")
    if (path / "imdb_reviews").is_dir():
        return "tfds", path
    for root in (path, path / "aclImdb"):
        if (root / "train").is_dir() or (root / "test").is_dir():
            for label in IMDB_CLASS_NAMES:
                if not (root / split / label).is_dir():
                    raise ValueError(
                        f"IMDB folder {str(root)!r} has no {split}/{label} folder; the Stanford "
                        "layout is aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt."
                    )
            return "folder", root
    if (path / "aclImdb_v1.tar.gz").is_file():
        return "archive", path / "aclImdb_v1.tar.gz"
    raise ValueError(
        f"IMDB folder {str(path)!r} has the wrong layout: expected train/ and test/ folders "
        "with pos/ and neg/ inside (the Stanford aclImdb layout), an aclImdb/ folder holding "
        f"them, or a tfds data_dir holding imdb_reviews/; {_HINT}"
    )


def _list_folder(root, split):
    names = []
    for label in IMDB_CLASS_NAMES:
        folder = pathlib.Path(root, split, label)
        names.extend(f"{split}/{label}/{e.name}" for e in os.scandir(folder) if e.is_file())
    return names


def _choose(names, split, max_per_class, seed, where):
    """Picks `(name, label)` pairs: per class sorted by review id, seeded sample, seeded order."""
    by_class = {label: [] for label in IMDB_CLASS_NAMES}
    for name in names:
        m = _MEMBER.search(name)
        if m and m.group(1) == split:
            by_class[m.group(2)].append((int(m.group(3)), int(m.group(4)), name))
    rng = np.random.default_rng(seed)
    chosen = []
    for label_id, label in enumerate(IMDB_CLASS_NAMES):
        items = sorted(by_class[label])
        if not items:
            raise ValueError(
                f"IMDB source {where!r} holds no {split}/{label}/<id>_<rating>.txt reviews; "
                f"is it the Stanford aclImdb data? {_HINT}"
            )
        if max_per_class is not None:
            if max_per_class > len(items):
                raise ValueError(
                    f"max_per_class={max_per_class} exceeds the {len(items)} '{label}' reviews "
                    f"of split {split!r} in {where!r}; use at most {len(items)} or None."
                )
            keep = np.sort(rng.choice(len(items), size=max_per_class, replace=False))
            items = [items[i] for i in keep]
        chosen.extend((name, label_id) for _, _, name in items)
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]


def _read_archive(path, split, max_per_class, seed):
    """Scans the member list, picks the sample by name, then reads only those members."""
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {}  # "train/pos/0_9.txt" -> TarInfo, whatever folder the archive starts with
            for member in archive.getmembers():
                m = _MEMBER.search(member.name) if member.isfile() else None
                if m:
                    members[member.name[m.start(1) :]] = member
            chosen = _choose(list(members), split, max_per_class, seed, str(path))
            wanted = sorted((n for n, _ in chosen), key=lambda n: members[n].offset_data)
            data = {name: archive.extractfile(members[name]).read() for name in wanted}
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(
            f"IMDB archive {str(path)!r} is corrupt or truncated ({type(e).__name__}: {e}); "
            "re-download aclImdb_v1.tar.gz (sha256 in ../shared/data/README.md) or pass the "
            "extracted aclImdb folder."
        ) from None
    return [(data[name], name) for name, _ in chosen], chosen


def _read_tfds(data_dir, split, max_per_class, seed, encoding_errors):
    import tensorflow_datasets as tfds

    builder = tfds.builder("imdb_reviews", data_dir=None if data_dir is None else str(data_dir))
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:
        raise FileNotFoundError(
            f"tensorflow-datasets has no prepared imdb_reviews in {builder.data_dir!r}, and "
            "keras_effattn never downloads. Read the local archive instead: "
            "read_imdb('../shared/data/aclImdb_v1.tar.gz'), or the extracted aclImdb folder; "
            "or prepare it once online with tfds.builder('imdb_reviews').download_and_prepare()."
        ) from None
    raw_texts, raw_labels = [], []
    for example in tfds.as_numpy(ds):
        raw_texts.append(example["text"])
        raw_labels.append(int(example["label"]))
    where = f"tfds imdb_reviews/{split}"
    if not raw_texts:
        raise ValueError(f"{where} in {builder.data_dir!r} is empty; prepare it again.")
    labels = np.asarray(raw_labels, np.int64)
    rng = np.random.default_rng(seed)
    chosen = []
    for label_id, label in enumerate(IMDB_CLASS_NAMES):
        idx = np.flatnonzero(labels == label_id)
        if max_per_class is not None:
            if max_per_class > idx.size:
                raise ValueError(
                    f"max_per_class={max_per_class} exceeds the {idx.size} '{label}' reviews of "
                    f"{where}; use at most {idx.size} or None."
                )
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        chosen.extend(idx.tolist())
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    origins = [f"{where} example {i}" for i in chosen]
    texts = [_files.decode(raw_texts[i], o, encoding_errors) for i, o in zip(chosen, origins)]
    return texts, labels[chosen].astype(np.int32), origins
