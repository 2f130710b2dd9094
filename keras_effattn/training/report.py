"""Run-folder artefacts drawn from saved results: training curves, confusion matrix, Markdown.

Every figure is drawn from the per-epoch CSV rows or the metrics JSON alone, so it can be
re-drawn without re-training (`redraw(folder)`).

Example:

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> plot_confusion_matrix([[5, 1], [2, 4]], ["neg", "pos"], folder / "cm.png")
>>> (folder / "cm.png").is_file()
True
"""

import pathlib
import textwrap

from keras_effattn.utils import io


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(rows, path):
    """Plots loss and accuracy-like columns per epoch (train and validation) to a PNG."""
    plt = _pyplot()
    epochs = [float(r["epoch"]) for r in rows]

    def column(name):
        values = [r.get(name) for r in rows]
        return None if all(v in (None, "") for v in values) else [
            float("nan") if v in (None, "") else float(v) for v in values
        ]

    metric = next(
        (m for m in ("accuracy", "categorical_accuracy", "sparse_categorical_accuracy")
         if column(m) is not None),
        None,
    )
    panels = [("loss", "loss")] + ([(metric, "accuracy")] if metric else [])
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for axis, (name, title) in zip(axes[0], panels):
        for prefix, style in (("", "o-"), ("val_", "s--")):
            values = column(prefix + name)
            if values is not None:
                axis.plot(epochs, values, style, label=(prefix or "train_") + title)
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    io.save_figure(figure, path)


def plot_confusion_matrix(matrix, class_names, path, title="Confusion matrix"):
    """Plots a confusion matrix (rows: true class, columns: predicted) with counts."""
    plt = _pyplot()
    import numpy as np

    matrix = np.asarray(matrix)
    size = max(3.0, 0.8 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            color = "white" if matrix[i, j] > threshold else "black"
            axis.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color)
    io.save_figure(figure, path)


def plot_predicted_scores(y_true, y_pred, path, title="Predicted vs true score"):
    """Scatter of predicted against true scores (regression runs), with the identity line."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.2, 4.0))
    axis.scatter(y_true, y_pred, s=8, alpha=0.6)
    low = float(min(min(y_true), min(y_pred)))
    high = float(max(max(y_true), max(y_pred)))
    axis.plot([low, high], [low, high], "k--", linewidth=1)
    axis.set_xlabel("true score")
    axis.set_ylabel("predicted score")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    io.save_figure(figure, path)


def _fmt(value, digits=4):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def energy_rows(energy, width=None):
    """``(label, text)`` rows describing a run's energy record (`EnergyMeter` result).

    A figure always comes with how it was obtained: "measured" only when CodeCarbon read
    hardware counters, otherwise "estimated", then the method line (the counters, or the model
    with the CPU model and watts it used). A failed or disabled meter gives its reason and no
    figure. Records written before the method was kept count as estimated.

    Args:
        energy: dict or None. ``results["energy"]`` of a run.
        width: int or None. Wrap the texts to this many characters (continuation rows have
            an empty label); None keeps one row per item.

    Returns:
        list of ``(label, text)`` tuples: ``energy`` and, for a figure, ``energy method``.
    """
    energy = energy or {}
    if not energy.get("available"):
        rows = [("energy", f"not measured ({energy.get('reason') or 'no energy record'})")]
    else:
        kind = "measured" if energy.get("measured") else "estimated"
        figure = (f"{energy['energy_kwh']:.3g} kWh, {energy['emissions_kg_co2']:.3g} kg CO2 "
                  f"({energy.get('country_iso_code')} grid), {kind}")
        rows = [
            ("energy", figure),
            ("energy method", energy.get("method") or "estimated: the method was not recorded"),
        ]
    if width is None:
        return rows
    wrapped = []
    for label, text in rows:
        for i, line in enumerate(textwrap.wrap(text, width) or [""]):
            wrapped.append((label if i == 0 else "", line))
    return wrapped


def markdown_report(results, config):
    """A short Markdown report of a finished run."""
    ev = results["evaluation"]
    tr = results["training"]
    lines = [
        f"# Run report: {config.get('name') or 'training run'}",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    if "confusion_matrix" in ev:
        lines += [f"| eval accuracy | {ev['accuracy']:.4f} |",
                  f"| eval macro F1 | {ev['macro_f1']:.4f} |"]
    else:
        lines += [f"| eval Pearson / Spearman | {ev['pearson']:.4f} / {ev['spearman']:.4f} |",
                  f"| eval RMSE / MAE | {ev['rmse']:.4f} / {ev['mae']:.4f} |"]
    lines += [
        f"| eval loss | {ev['loss']:.4f} |",
        f"| eval examples | {ev['num_examples']} |",
        f"| train examples × epochs | {tr['num_examples']} × {tr['epochs_run']} |",
        f"| train time (s) | {_fmt(tr['train_seconds'])} |",
        f"| train throughput (samples/s) | {_fmt(tr['train_samples_per_s'])} |",
        f"| inference latency (ms/sample) | {_fmt(ev['inference']['latency_ms_per_sample'])} |",
        f"| inference throughput (samples/s) | {_fmt(ev['inference']['samples_per_s'])} |",
        f"| peak host RSS (MB) | {_fmt(results['peak_host_rss_mb'])} |",
        f"| total wall time (s) | {_fmt(results['wall_seconds'])} |",
    ]
    lines += [f"| {label} | {text} |" for label, text in energy_rows(results.get("energy"))]
    if "per_class" in ev:
        lines += ["", "## Per class", "", "| class | precision | recall | F1 | support |",
                  "| --- | --- | --- | --- | --- |"]
    for name, m in ev.get("per_class", {}).items():
        lines.append(
            f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
            f"{m['support']} |"
        )
    lines += [
        "",
        "## Files",
        "",
        ("`config.json` (config, versions, device), `metrics.json`, `epochs.csv`, "
         "`training_curves.png`, `confusion_matrix.png` (classification) or `predictions.png` "
         "(regression), `model.keras` (when saved), "
         "`tensorboard/`, `DONE` (written last)."),
    ]
    if tr.get("resumed_from_step"):
        lines += ["", f"Resumed from global step {tr['resumed_from_step']} of a previous attempt."]
    return "\n".join(lines) + "\n"


def redraw(folder):
    """Re-draws the PNGs of a finished run folder from its CSV and JSON."""
    folder = pathlib.Path(folder)
    rows = io.read_csv(folder / "epochs.csv")
    if rows:
        plot_training_curves(rows, folder / "training_curves.png")
    metrics = io.read_json(folder / "metrics.json")
    ev = metrics["evaluation"]
    if "confusion_matrix" in ev:
        plot_confusion_matrix(ev["confusion_matrix"], list(ev["per_class"]),
                              folder / "confusion_matrix.png")
    else:
        plot_predicted_scores(ev["labels"], ev["predictions"], folder / "predictions.png")
