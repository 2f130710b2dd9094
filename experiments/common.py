"""What the experiment scripts share: the repository-relative data paths and common absl flags.

The shared data live in ``../shared/data`` beside the repository (``aclImdb_v1.tar.gz``,
``glue/``, ``wikitext-2/``); `--data_dir` overrides it. Run folders go under ``runs/`` (ignored by
git) unless `--output_dir` says otherwise.
"""

import pathlib

from absl import flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
RUNS_DIR = REPO_ROOT / "runs"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
GLUE_FOLDER = "glue"
COMMON_FLAGS = ("data_dir", "output_dir", "overwrite", "seed")


def define_common_flags():
    """Defines --data_dir, --output_dir, --overwrite and --seed (once per process)."""
    if "data_dir" in flags.FLAGS:
        return
    flags.DEFINE_string(
        "data_dir", None, "Shared data folder (default: ../shared/data beside the repository)."
    )
    flags.DEFINE_string("output_dir", None, "Run folder (default: runs/<script>/<name>).")
    flags.DEFINE_boolean("overwrite", False, "Replace an existing run folder.")
    flags.DEFINE_integer("seed", 0, "Seed for data subsets, weights, dropout and data order.")


def data_dir(value=None):
    """The data folder: `value` when given, else ``../shared/data`` beside the repository."""
    path = pathlib.Path(value) if value else DEFAULT_DATA_DIR
    if not path.is_dir():
        raise FileNotFoundError(
            f"Data folder {path} does not exist; pass --data_dir pointing at the shared data "
            "(aclImdb_v1.tar.gz, glue/, wikitext-2/)."
        )
    return path


def output_dir(value, script, name):
    """The run folder: `value` when given, else ``runs/<script>/<name>``."""
    return pathlib.Path(value) if value else RUNS_DIR / script / name


def display_path(path):
    """`path` relative to the current directory when it lies below it (for printed messages)."""
    path = pathlib.Path(path).resolve()
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)
