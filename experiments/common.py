"""What the experiment scripts share: data paths, common absl flags, the command-line contract.

The shared data live in ``../shared/data`` beside the repository (``aclImdb_v1.tar.gz``,
``glue/``, ``wikitext-2/``); `--data_dir` overrides it. Run folders go under ``runs/`` (ignored by
git) unless `--output_dir` says otherwise.

Every script ends with ``common.run(main)`` (the sweep scripts through
`experiments.suite.run_script`): the exit-status contract of `keras_effattn_runtime.cli` (0 ok;
2 and one line on stderr for bad input; 1 and a traceback for an internal error) and the
``--verbose`` flag. Scripts check their flags with `check_attention_spec`, `data_dir` and the
like before they write anything or read any data.
"""

import pathlib
import re

from absl import flags

from keras_effattn_runtime import cli

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
RUNS_DIR = REPO_ROOT / "runs"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
GLUE_FOLDER = "glue"
COMMON_FLAGS = ("data_dir", "output_dir", "overwrite", "seed")
UsageError = cli.UsageError

# The flags this module defines count as key flags of the script that asked for them, so the
# script's --help lists them (absl shows the main module's key flags).
flags.disclaim_key_flags()


def run(main):
    """Runs a script's ``main`` under `keras_effattn_runtime.cli`'s exit-status contract.

    A sweep script given ``--fresh_process_per_row`` (`experiments.suite.define_tier_flags`)
    instead runs itself again in child processes, one new row each
    (`experiments.sweep.run_in_fresh_processes`), and exits with the last child's status.
    """
    import sys

    def dispatch(argv):
        if ("fresh_process_per_row" in flags.FLAGS and flags.FLAGS.fresh_process_per_row):
            from experiments import sweep

            if not sweep.in_fresh_process_child():
                spec = getattr(sys.modules["__main__"], "__spec__", None)
                if spec is None:
                    raise UsageError("--fresh_process_per_row re-runs the script as a module: "
                                     "start it with `python -m experiments.<script>`.")
                return sweep.run_in_fresh_processes(spec.name, sys.argv[1:])
        return main(argv)

    cli.run_absl(dispatch)


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


def check_attention_spec(spec, flag="--attention", num_layers=None, options=None):
    """Parses `spec` and constructs each distinct layer once: a typo fails here, before any work.

    Catches unknown kinds, bad syntax, unknown or invalid options (the layer constructors check
    those) and, when `num_layers` is given, a layer count that does not match. What depends on
    the built model (``k`` against the sequence length) is checked when the model is built.

    Args:
        spec: an attention spec string.
        flag: the flag (or setting) named in the error message.
        num_layers: optional int, the encoder depth when it is known without loading a model.
        options: optional per-kind default options, as for `parse_attention_spec`.

    Returns:
        The list of `LayerSpec`s (one per layer when `num_layers` is given).

    Raises:
        UsageError: the spec is not valid, naming `flag`, the value and the fix.
    """
    from keras_effattn.layers import spec as spec_lib

    text = str(spec).strip()
    if num_layers is None and text.lower().startswith("alternate:"):
        text = text.split(":", 1)[1]  # the pattern itself; its expansion needs the depth
    try:
        layers = spec_lib.parse_attention_spec(text, num_layers=num_layers, options=options)
        for layer in dict.fromkeys(layers):
            spec_lib.make_attention(layer, num_heads=2, key_dim=8)
    except (ValueError, TypeError) as error:
        raise UsageError(
            f"{flag}={spec!r} is not a valid attention spec: {cli.describe(error)} (examples: "
            "'exact', 'exact*4,favor(num_features=128)*2', 'lowrank(k=64)')"
        ) from None
    return layers


def safe_name(text):
    """`text` as a portable folder name: characters other than ``[A-Za-z0-9._=-]`` become ``-``.

    Example: ``"exact*4,favor(num_features=64)*2"`` -> ``"exact-4-favor-num_features=64-2"``.
    """
    name = re.sub(r"[^A-Za-z0-9._=-]+", "-", str(text)).strip("-.")
    return name or "run"


def load_model(path):
    """A saved ``.keras`` model for inference (`keras_effattn.utils.saving.load_for_inference`:
    uncompiled, without the optimizer-state warning).

    Raises:
        FileNotFoundError: `path` is not a file.
    """
    from keras_effattn.utils.saving import load_for_inference

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No saved model at {path}; pass the run folder of a finished training run "
            "(it holds model.keras)."
        )
    return load_for_inference(path)
