"""What the experiment scripts share: tiny model configs, the classifier builder, one flat row per
training run (through the one training engine), the sweep folder (where it goes, claiming it,
checking its rows and specs before anything runs) and its ``config.json``.

Tiers (``--tier``, `TIERS`): ``quick`` (``--quick``; a tiny from-scratch model for seconds, a
smoke test), ``cpu`` (the pretrained model at a scale 2 CPU cores afford: the published research
tables) and ``full`` (the GPU-sized defaults of the flags). Each script keeps its presets in
``PRESETS``; a flag given on the command line wins over its tier's value.

Where a sweep writes: ``--output_dir`` when given; else, with ``--publish``, the repository's
git-tracked ``results/<tier>/<name>/`` (the published tables `experiments.aggregate` reads);
else the git-ignored ``runs/<tier>/<name>/`` (the same layout as ``results/``, so
``python -m experiments.aggregate --results_dir=runs`` tabulates them). Paths are the
repository's, whatever the working directory. The folder is claimed with a marker
(`keras_effattn.utils.io.claim_folder`); ``--overwrite`` deletes only such a folder of the same
script (or an empty one), never a folder of other files.

Every training run goes through `keras_effattn.training.fit.train_and_evaluate`, so each run folder
(``<sweep>/runs/<run_id>/``) is the engine's self-describing folder: ``config.json``,
``metrics.json``, ``epochs.csv``, ``training_curves.png``, ``confusion_matrix.png``, ``report.md``,
``DONE``; the sweep runner adds ``row.json``. `train_row` flattens the engine's results into the
row the sweep tables are made of.

Example:

>>> build = classifier_builder(TINY_BACKBONE, "exact", max_length=32)
>>> sorted(flatten_results({"evaluation": {"accuracy": 1.0}}))[:2]
['accuracy', 'device_peak_mb']
"""

import math
import pathlib

from absl import flags

from experiments import common, sweep
from keras_effattn.utils import io
from keras_effattn.utils.metadata import run_metadata

# The flags this module defines count as key flags of the script that asked for them, so the
# script's --help lists them (absl shows the main module's key flags).
flags.disclaim_key_flags()

# A from-scratch DistilBERT small enough for 2 CPU cores: 2 layers, 4 heads of 16, width 64.
# The BERT uncased vocabulary keeps the MiniLM WordPiece tokenizer usable.
TINY_BACKBONE = {
    "num_layers": 2,
    "num_heads": 4,
    "hidden_dim": 64,
    "intermediate_dim": 128,
    "max_sequence_length": 512,
    "dropout": 0.1,
}
# The result columns every training row has, in this order.
ROW_COLUMNS = (
    "accuracy",
    "macro_f1",
    "eval_loss",
    "final_train_loss",
    "train_seconds",
    "epoch_seconds",
    "train_samples_per_s",
    "latency_ms_per_sample",
    "inference_samples_per_s",
    "peak_host_rss_mb",
    "device_peak_mb",
    "energy_kwh",
    "emissions_kg_co2",
    "energy_method",
    "trainable_params",
)


def backbone_source(name, tiny_overrides=None):
    """``"tiny"`` -> `TINY_BACKBONE` (with overrides), anything else passes through
    (``"minilm-l6"``, a folder, a preset)."""
    if name == "tiny":
        return {**TINY_BACKBONE, **(tiny_overrides or {})}
    if tiny_overrides:
        raise ValueError(
            f"Architecture overrides {tiny_overrides} only apply to the 'tiny' from-scratch "
            f"backbone, not to {name!r}; use --backbone=tiny."
        )
    return name


def classifier_builder(source, attention, max_length, num_classes=2, options=None,
                       backbone_dropout=None):
    """A no-argument builder for the training engine (called inside its precision scope)."""
    from keras_effattn.models import build_classifier

    def build():
        return build_classifier(
            source,
            attention=attention,
            num_classes=num_classes,
            max_length=max_length,
            options=options,
            backbone_dropout=backbone_dropout,
        )

    return build


def flatten_results(results):
    """The engine's nested results dict -> one flat row of `ROW_COLUMNS` (None where absent)."""
    ev = results.get("evaluation", {})
    tr = results.get("training", {})
    inference = ev.get("inference", {})
    energy = results.get("energy") or {}
    epochs = tr.get("epochs_run") or 0
    seconds = tr.get("train_seconds")
    per_epoch = [t for t in tr.get("epoch_seconds") or () if t is not None]
    return {
        "accuracy": ev.get("accuracy"),
        "macro_f1": ev.get("macro_f1"),
        "eval_loss": ev.get("loss"),
        "final_train_loss": tr.get("final_train_loss"),
        "train_seconds": seconds,
        # The epoch callback's time (the epoch's steps); older results, without it, fall back
        # to the training loop's wall time per epoch (setup and iterator shutdown included).
        "epoch_seconds": (sum(per_epoch) / len(per_epoch) if per_epoch
                          else seconds / epochs if seconds is not None and epochs else None),
        "train_samples_per_s": tr.get("train_samples_per_s"),
        "latency_ms_per_sample": inference.get("latency_ms_per_sample"),
        "inference_samples_per_s": inference.get("samples_per_s"),
        "peak_host_rss_mb": results.get("peak_host_rss_mb"),
        "device_peak_mb": inference.get("device_peak_mb"),
        "energy_kwh": energy.get("energy_kwh"),
        "emissions_kg_co2": energy.get("emissions_kg_co2"),
        "energy_method": energy.get("method"),
        "trainable_params": tr.get("trainable_params"),
    }


def train_row(config, build_model, train, evaluation, run_dir, validation=None):
    """Trains and evaluates one configuration with the engine; returns its flat row.

    Args:
        config: a `keras_effattn.training.fit.TrainConfig`.
        build_model: a no-argument model builder (e.g. from `classifier_builder`).
        train, evaluation, validation: `TextDataset`s (or ``(x, y)`` tuples).
        run_dir: the run folder (the engine's).

    Returns:
        `flatten_results` of the engine's results plus ``validation_loss`` (last epoch's
        ``val_loss`` when validation data were given).
    """
    from keras_effattn.training.fit import train_and_evaluate

    results = train_and_evaluate(config, build_model, train, evaluation, run_dir,
                                 validation=validation, verbose=0)
    row = flatten_results(results)
    epochs_csv = pathlib.Path(run_dir) / "epochs.csv"
    if validation is not None and epochs_csv.is_file():
        history = io.read_csv(epochs_csv)
        row["validation_loss"] = float(history[-1]["val_loss"]) if history else None
    return row


def predictions_of(run_dir):
    """The evaluation predictions (class ids) a finished engine run folder recorded."""
    return io.read_json(pathlib.Path(run_dir) / "metrics.json")["evaluation"]["predictions"]


def device_label(device):
    """A run's device, from its metadata's ``device`` dict: ``"CPU: AMD EPYC (family 25,
    model 17) (AVX2, AVX-512)"`` or ``"GPU: <names>"``."""
    names = ", ".join(device.get("gpus") or []) or device.get("cpu_model", "CPU")
    if device.get("cpu_isa"):
        names += f" ({device['cpu_isa']})"
    return f"{device.get('kind', '?')}: {names}"


def run_devices(out_dir, rows):
    """``{device label: number of rows}`` over finished sweep rows, so a sweep resumed on
    another machine says so: each run folder's ``config.json`` (engine runs), else the CPU
    the sweep runner recorded in the row."""
    counts = {}
    for row in rows:
        config = pathlib.Path(out_dir) / str(row.get("run_dir", "")) / "config.json"
        device = io.read_json(config).get("metadata", {}).get("device", {}) if (
            row.get("run_dir") and config.is_file()) else {}
        if not device and row.get("cpu_model"):
            device = {"kind": "CPU", "cpu_model": row["cpu_model"],
                      "cpu_isa": row.get("cpu_isa")}
        label = device_label(device) if device else "unknown device"
        counts[label] = counts.get(label, 0) + 1
    return counts


def fresh_processes(rows):
    """True when every row ran in a process of its own (``rows_before_in_process == 0``)."""
    return all(str(row.get("rows_before_in_process", "")) == "0" for row in rows)


SHARED_PROCESS_NOTE = (
    "Peak RSS is the process's peak during the run, and some rows ran after others in the "
    "same process (`rows_before_in_process` in results.csv; `--fresh_process_per_row` avoids "
    "it): they started from the memory earlier rows left behind, so that column depends on "
    "the order of the runs as well as on the row's setting.")


def conditions_note(out_dir, rows):
    """What a summary that shows times and peak memory must say about its rows: the machines
    (`devices_note`) and, unless each row had a process of its own, `SHARED_PROCESS_NOTE`."""
    note = devices_note(run_devices(out_dir, rows))
    return note if fresh_processes(rows) else f"{note} {SHARED_PROCESS_NOTE}"


def devices_note(counts):
    """One line for a summary: the machine the rows ran on, or a warning when they mix."""
    if len(counts) == 1:
        label, n = next(iter(counts.items()))
        return f"All {n} runs on {label}."
    listed = "; ".join(f"{n} on {label}" for label, n in counts.items())
    return (f"**Rows from {len(counts)} machines** ({listed}): time, latency, memory and "
            "energy columns mix them; compare those only within one machine.")


def write_sweep_config(out_dir, question, settings):
    """Writes ``<out_dir>/config.json``: the question, the sweep's settings and run metadata.

    The folders in `settings` (``output_dir``, ``work_dir``) are written relative to the
    repository when they lie inside it, so a published ``config.json`` names no path of the
    machine that made it.
    """
    settings = dict(settings)
    for key in ("output_dir", "work_dir"):
        if settings.get(key):
            settings[key] = repo_relative(settings[key])
    io.write_json(
        pathlib.Path(out_dir) / "config.json",
        {"question": question, "settings": settings, "metadata": run_metadata()},
    )


def repo_relative(path):
    """`path` relative to the repository root when it lies inside it, else as given."""
    try:
        return str(pathlib.Path(path).resolve().relative_to(common.REPO_ROOT))
    except ValueError:
        return str(path)


def markdown_table(rows, columns, headers=None):
    """A GitHub Markdown table of `rows` (dicts) over `columns` (cells formatted as given)."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value):
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return str(value)


# The scale a sweep runs at. `quick`: a tiny from-scratch model for seconds (a smoke test, never a
# research result); `cpu`: the pretrained model at a scale 2 CPU cores afford (the published
# research tables); `full`: the GPU-sized defaults of each script's flags.
TIERS = ("quick", "cpu", "full")
# The main job's recipe (experiments.train's defaults: pretrained MiniLM-L6, one epoch, lr 1e-4,
# length 256, frozen token embedding, no XLA), the base of every script's ``cpu`` preset.
# tests/test_experiments_train.py checks it against experiments.train's flags.
MAIN_JOB_RECIPE = {
    "backbone": "minilm-l6",
    "epochs": 1,
    "learning_rate": 1e-4,
    "max_length": 256,
    "jit_compile": False,
    "freeze_embeddings": True,
}

# The attention kinds of the published IMDB variants table (experiments.variants_imdb, and the
# latency of the same classifiers, experiments.variants_latency): stock Keras, fused exact,
# chunked exact, FAVOR+, Linformer, low-rank Q/K/V and the hybrid the zero-shot table favours.
IMDB_VARIANTS = ("keras;exact;exact(chunk_size=64);favor(num_features=256);lowrank(k=128);"
                 "lowrank(k=none,qkv_rank=16);favor(num_features=256)*2,exact*4")


def define_sweep_flags(imdb_training=False):
    """Defines the flags every sweep script shares (once per process): `common`'s
    ``--data_dir``, ``--output_dir``, ``--overwrite`` and ``--seed``, ``--publish``, ``--tier``,
    ``--quick`` and ``--fresh_process_per_row``, and with `imdb_training` the IMDB fine-tuning
    flags (`define_imdb_training_flags`). They count as the calling script's key flags."""
    common.define_common_flags()
    define_publish_flag()
    define_tier_flags()
    if imdb_training:
        define_imdb_training_flags()


def run_script(names, presets, name, run):
    """A sweep script's entry point: parses the flags under `common.run`'s exit-status contract,
    builds the settings (`settings_from_flags`) and calls
    ``run(settings, data_dir, overwrite=...)``."""

    def main(argv):
        del argv
        settings = settings_from_flags(flags.FLAGS, names, presets, name)
        run(settings, common.data_dir(flags.FLAGS.data_dir), overwrite=flags.FLAGS.overwrite)

    common.run(main)


def define_tier_flags():
    """Defines ``--tier`` and its shorthand ``--quick`` (once per process)."""
    if "tier" in flags.FLAGS:
        return
    flags.DEFINE_enum(
        "tier", "full", TIERS, "Scale: 'quick' (tiny from-scratch model, a smoke test), 'cpu' "
        "(pretrained model, sized for 2 CPU cores: the published tables) or 'full' (GPU-sized "
        "defaults). Flags given explicitly win over the tier's values.")
    flags.DEFINE_bool("quick", False, "Shorthand for --tier=quick.")
    flags.DEFINE_bool(
        "fresh_process_per_row", False, "Run each new row of the sweep in a fresh child "
        "process, so its peak memory and latency do not depend on the rows run before it "
        "(costs a few seconds of start-up per row).")


def define_imdb_training_flags():
    """Defines the fine-tuning flags the IMDB scripts share (once per process): ``--backbone``,
    ``--epochs``, ``--batch_size``, ``--learning_rate``, ``--max_length``, ``--train_per_class``,
    ``--test_per_class``, ``--jit_compile``, ``--freeze_embeddings``, with the full tier's
    defaults (each script's tiers override them through its presets)."""
    if "train_per_class" in flags.FLAGS:
        return
    flags.DEFINE_string("backbone", "minilm-l6", "'minilm-l6', 'tiny' (from scratch) or a folder.")
    flags.DEFINE_integer("epochs", 3, "Training epochs.")
    flags.DEFINE_integer("batch_size", 16, "Batch size.")
    flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate (AdamW, linear decay).")
    flags.DEFINE_integer("max_length", 256, "Token sequence length.")
    flags.DEFINE_integer("train_per_class", 2500, "Training reviews per class (0: all 12,500).")
    flags.DEFINE_integer("test_per_class", 2500, "Test reviews per class (0: all 12,500).")
    flags.DEFINE_bool("jit_compile", True, "XLA-compile the train and predict steps.")
    flags.DEFINE_bool("freeze_embeddings", False,
                      "Freeze the token embedding table (cheaper on CPU).")


def define_publish_flag():
    """Defines ``--publish`` (once per process): write into the repository's ``results/``."""
    if "publish" not in flags.FLAGS:
        flags.DEFINE_bool(
            "publish", False, "Write into the repository's git-tracked results/<tier>/<name>/ "
            "(the published tables) instead of runs/<tier>/<name>/.")


def default_output_dir(name, tier, publish=False):
    """``results/<tier>/<name>`` (publish) or ``runs/<tier>/<name>``, both in the repository (not
    the working directory). `tier` is one of `TIERS`."""
    if tier not in TIERS:
        raise ValueError(f"Unknown tier {tier!r}; pass one of {', '.join(TIERS)}.")
    return (common.REPO_ROOT / "results" if publish else common.RUNS_DIR) / tier / name


def tier_of(flag_values):
    """The tier the parsed flags ask for (``--quick`` means ``--tier=quick``).

    Raises:
        ValueError: for ``--quick`` together with another explicit ``--tier``.
    """
    quick = bool(flag_values["quick"].value)
    tier = flag_values["tier"].value
    if quick and flag_values["tier"].present and tier != "quick":
        raise ValueError(f"--quick means --tier=quick but --tier={tier} was also given; pass "
                         "one of them.")
    return "quick" if quick else tier


def settings_from_flags(flag_values, names, presets, name):
    """The run settings: each flag's value, with the tier's preset replacing flags not given
    explicitly.

    Reads nothing from disk and writes nothing: the sweep folder is claimed later
    (`prepare_sweep`), after every flag and spec was checked.

    Args:
        flag_values: `absl.flags.FLAGS` (parsed).
        names: the flag names that make the settings.
        presets: dict tier -> {flag name: value} (a tier's values win over flags not given on
            the command line). The ``full`` tier is the flags' own defaults.
        name: the script's results name (``results/<tier>/<name>``, ``runs/<tier>/<name>``).

    Returns:
        dict name -> value (plus ``tier``, ``quick`` (tier == "quick") and ``output_dir``:
        ``--output_dir`` when given, else `default_output_dir`, honouring ``--publish`` when the
        script defines it).

    Raises:
        ValueError: for ``--publish`` together with ``--output_dir``, or a tier this script
            has no preset for.
    """
    tier = tier_of(flag_values)
    if tier != "full" and tier not in presets:
        offered = ", ".join(t for t in TIERS if t == "full" or t in presets)
        raise ValueError(f"experiments.{name.split('/')[0]} has no --tier={tier}; pass one of "
                         f"{offered}.")
    preset = presets.get(tier, {})
    settings = {"tier": tier, "quick": tier == "quick"}
    for flag in names:
        value = flag_values[flag]
        use_preset = flag in preset and not value.present
        settings[flag] = preset[flag] if use_preset else value.value
    publish = "publish" in flag_values and bool(flag_values["publish"].value)
    given = flag_values["output_dir"].value
    if publish and given:
        raise ValueError(
            f"--publish writes to results/{tier}/{name}/ but --output_dir={given} was also "
            "given; pass one of them."
        )
    settings["output_dir"] = str(given or default_output_dir(name, tier, publish))
    return settings


def row_settings(settings, exclude=()):
    """The sweep-wide settings every row carries: `settings` without the output folder,
    ``quick`` and the names in `exclude` (the lists that enumerate the rows, e.g. variants or
    seeds, and settings that do not affect the rows).

    The tier is left out too: it only chooses the values, which the row carries.
    A row is ``{"run_id": ..., **row_settings(settings, ...), **its own settings}``, so a
    finished row is reused only when every setting that affects it is unchanged
    (`experiments.sweep.check_settings`).
    """
    skip = {"output_dir", "quick", "tier", *exclude}
    return {k: v for k, v in settings.items() if k not in skip}


def check_specs(specs, source=None, options=None, flag="--variants"):
    """Checks attention specs before anything runs (`experiments.common.check_attention_spec`:
    syntax, kinds, each layer's options), with the layer count when the backbone `source` is
    a config dict of known depth.

    Raises:
        ValueError (`experiments.common.UsageError`): naming `flag`, the spec and the fix.
    """
    depth = source.get("num_layers") if isinstance(source, dict) else None
    for spec in specs:
        common.check_attention_spec(spec, flag=flag, num_layers=depth, options=options)


def claim_sweep_dir(out_dir, script, overwrite=False):
    """Claims `out_dir` for `script`'s sweep (created and marked when new or empty).

    With `overwrite`, a folder this script claimed before (or an empty one) is deleted first;
    any other folder is refused, never deleted. Without it, a non-empty folder must be this
    script's sweep folder (it is then resumed).

    Raises:
        ValueError: for a file, a folder of other files, or another script's folder.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"Output folder {out_dir} is a file; pass a folder to --output_dir.")
    if overwrite:
        io.remove_owned_folder(out_dir, kinds=("sweep",))
    if io.folder_contents(out_dir):
        owner = io.folder_owner(out_dir)
        if owner is None:
            raise ValueError(
                f"Output folder {out_dir.resolve()} is not empty and was not made by an "
                f"experiment script (no valid {io.OWNER_FILE}); pass a new or empty "
                "--output_dir."
            )
        if (owner["kind"], owner["name"]) != ("sweep", script):
            raise ValueError(
                f"Output folder {out_dir.resolve()} belongs to {owner['kind']} "
                f"{owner['name']!r}, not to experiments.{script}; pass another --output_dir."
            )
        return
    io.claim_folder(out_dir, "sweep", script)


def prepare_sweep(settings, script, question, row_sets, overwrite=False, extra_config=None):
    """Claims the sweep folder, checks every row against the folder's stored rows, and only
    then writes ``config.json`` (so a refused resume leaves the folder as it was).

    Args:
        settings: the script's settings (``settings["output_dir"]`` is the sweep folder).
        script: the script's name (the folder's owner).
        question: the question the sweep answers (for ``config.json``).
        row_sets: list of ``(rows, subfolder)``: each `run_sweep` the script will call, with
            its folder relative to the sweep folder (``""`` for the folder itself); an empty
            `rows` (a part that is switched off) is skipped.
        overwrite: replace the folder (`claim_sweep_dir`).
        extra_config: optional dict merged into the settings written to ``config.json``.
    """
    out_dir = pathlib.Path(settings["output_dir"])
    row_sets = [(rows, subfolder) for rows, subfolder in row_sets if rows]
    for rows, _ in row_sets:
        sweep.check_rows(rows)
    claim_sweep_dir(out_dir, script, overwrite)
    for rows, subfolder in row_sets:
        sweep.check_settings(rows, out_dir / subfolder)
    write_sweep_config(out_dir, question, {**settings, **(extra_config or {})})


def split_list(text, cast=str, sep=";"):
    """``"a;b;c"`` -> ``["a", "b", "c"]`` (items cast; empty items dropped)."""
    items = [item.strip() for item in str(text).split(sep) if item.strip()]
    if not items:
        raise ValueError(f"Expected a {sep!r}-separated list, got {text!r}.")
    return [cast(item) for item in items]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def bar_chart(labels, means, path, ylabel, title, errors=None):
    """A bar chart (optionally with error bars) saved atomically as PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.6))
    positions = range(len(labels))
    yerr = None
    if errors is not None:
        yerr = [0.0 if e is None or math.isnan(float(e)) else float(e) for e in errors]
    axis.bar(positions, means, yerr=yerr, capsize=4, color="#4c72b0")
    axis.set_xticks(list(positions), labels, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    io.save_figure(figure, path)


def line_chart(series, path, xlabel, ylabel, title, logy=False):
    """Lines from ``{label: (xs, ys)}`` saved atomically as PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for label, (xs, ys) in series.items():
        axis.plot(xs, ys, "o-", label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if logy:
        axis.set_yscale("log")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    io.save_figure(figure, path)
