"""What the experiment scripts share: tiny model configs, the classifier builder, one flat row per
training run (through the one training engine), and the sweep folder's ``config.json``.

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
import shutil

from keras_effattn.utils import io
from keras_effattn.utils.metadata import run_metadata

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
    return {
        "accuracy": ev.get("accuracy"),
        "macro_f1": ev.get("macro_f1"),
        "eval_loss": ev.get("loss"),
        "final_train_loss": tr.get("final_train_loss"),
        "train_seconds": seconds,
        "epoch_seconds": seconds / epochs if seconds is not None and epochs else None,
        "train_samples_per_s": tr.get("train_samples_per_s"),
        "latency_ms_per_sample": inference.get("latency_ms_per_sample"),
        "inference_samples_per_s": inference.get("samples_per_s"),
        "peak_host_rss_mb": results.get("peak_host_rss_mb"),
        "device_peak_mb": inference.get("device_peak_mb"),
        "energy_kwh": energy.get("energy_kwh"),
        "emissions_kg_co2": energy.get("emissions_kg_co2"),
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


def write_sweep_config(out_dir, question, settings):
    """Writes ``<out_dir>/config.json``: the question, the sweep's settings and run metadata."""
    io.write_json(
        pathlib.Path(out_dir) / "config.json",
        {"question": question, "settings": settings, "metadata": run_metadata()},
    )


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


def settings_from_flags(flag_values, names, quick_values, output_dir):
    """The run settings: each flag's value, with `--quick` replacing flags not given explicitly.

    Also applies the shared flags of `experiments.common`: ``--output_dir`` defaults to
    `output_dir`, and ``--overwrite`` deletes that folder first (otherwise a sweep resumes).

    Args:
        flag_values: `absl.flags.FLAGS` (parsed).
        names: the flag names that make the settings.
        quick_values: dict name -> value used under ``--quick`` unless the flag was set on the
            command line.
        output_dir: the script's default sweep folder (relative to the working directory).

    Returns:
        dict name -> value (plus ``quick`` and ``output_dir``).
    """
    quick = bool(flag_values["quick"].value)
    settings = {"quick": quick}
    for name in names:
        flag = flag_values[name]
        use_quick = quick and name in quick_values and not flag.present
        settings[name] = quick_values[name] if use_quick else flag.value
    settings["output_dir"] = str(flag_values["output_dir"].value or output_dir)
    if flag_values["overwrite"].value and pathlib.Path(settings["output_dir"]).exists():
        shutil.rmtree(settings["output_dir"])
    return settings


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
