"""Aggregate: one Markdown table (and overview PNGs) of every experiment's results.

Reads the finished rows of each experiment folder under ``--results_dir`` (each run's
``runs/<run_id>/row.json``, so a table is rebuilt from the run folders themselves, not from a
possibly stale CSV), and writes ``summary.md``: one table with a row per configuration (the
experiment, the configuration, its main score and what it cost: seconds per epoch or per step,
peak memory, energy), mean ± std where several seeds ran, and the notes each experiment needs
(e.g. that WikiText perplexities were trained on valid and evaluated on test offline). It also
draws ``summary_accuracy_vs_time.png`` (IMDB accuracy against seconds per epoch, all IMDB
experiments) and ``summary_step_time.png`` (sequence scaling). Missing experiments are listed,
not an error.

The published ``results/`` holds one folder per tier (``cpu/``: the research tables from the
pretrained model; ``full/``: GPU-sized runs; ``quick/``: smoke tests); the summary has one table
per tier, research tiers first and quick mode last, labelled as smoke tests. A folder of
experiment folders without tiers (``runs/quick``) gives one table.

By default it reads the published ``results/`` of the repository and writes the table to the
git-ignored ``runs/aggregate/summary.md``; ``--publish`` writes ``<results_dir>/summary.md``
(the published ``results/summary.md``) instead.

    python -m experiments.aggregate                             # results/ -> runs/aggregate/
    python -m experiments.aggregate --publish                   # results/ -> results/summary.md
    python -m experiments.aggregate --results_dir=runs/quick    # your own --quick runs
"""

import math
import pathlib

from absl import flags

from experiments import common, stats, suite, sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("results_dir", None,
                    "Folder holding the experiment folders (default: the repository's results/).")
flags.DEFINE_string("output", None, "Markdown file (default: runs/aggregate/summary.md in the "
                    "repository; with --publish, <results_dir>/summary.md).")
suite.define_publish_flag()  # --publish

EXPERIMENTS = ("variants_imdb", "variants_latency", "seq_scaling", "glue_lowrank/glue",
               "glue_lowrank/wikitext", "energy", "ablations")
COLUMNS = ("experiment", "configuration", "metric", "score", "time", "peak memory (MB)",
           "energy (kWh)", "n")


def _f(value, digits=4):
    value = sweep.as_float(value)
    return "n/a" if math.isnan(value) else f"{value:.{digits}g}"


def _device(folder):
    from keras_effattn.utils import io

    config = folder / "config.json"
    if not config.is_file():
        parent = folder.parent / "config.json"
        config = parent if parent.is_file() else None
    if config is None:
        return "unknown device"
    device = io.read_json(config).get("metadata", {}).get("device", {})
    quick = io.read_json(config).get("settings", {}).get("quick")
    return suite.device_label(device) + (" (quick mode)" if quick else "")


def variants_rows(rows):
    out = []
    for s in stats.compare_groups(rows, "variant", ["accuracy", "epoch_seconds",
                                                    "peak_host_rss_mb", "energy_kwh"],
                                  baseline=rows[0]["variant"]):
        p = s["accuracy_p_welch"]
        out.append({
            "configuration": s["variant"], "metric": "test accuracy",
            "score": stats.format_mean_std(s["accuracy_mean"], s["accuracy_std"])
            + ("" if math.isnan(p) else f" (p={p:.2g})"),
            "time": stats.format_mean_std(s["epoch_seconds_mean"], s["epoch_seconds_std"], 1)
            + " s/epoch",
            "peak memory (MB)": _f(s["peak_host_rss_mb_mean"]),
            "energy (kWh)": _f(s["energy_kwh_mean"]), "n": s["n"]})
    return out


def latency_rows(rows):
    out = []
    for s in stats.compare_groups(rows, "variant", ["latency_ms_per_sample"]):
        out.append({
            "configuration": s["variant"], "metric": "inference latency (all kinds in one run)",
            "score": stats.format_mean_std(s["latency_ms_per_sample_mean"],
                                           s["latency_ms_per_sample_std"], 2) + " ms/review",
            "time": "n/a", "peak memory (MB)": "n/a", "energy (kWh)": "n/a", "n": s["n"]})
    return out


def seq_rows(rows):
    out = []
    for r in rows:
        skipped = r.get("skipped")
        out.append({
            "configuration": f"{r['variant']} @ {r['length']}", "metric": "train step",
            "score": skipped or f"{_f(r.get('train_tokens_per_s'))} tokens/s",
            "time": f"{_f(r.get('train_step_ms'))} ms/step",
            "peak memory (MB)": _f(r.get("device_peak_mb") if r.get("device_peak_mb")
                                   not in (None, "") else r.get("host_rss_growth_mb")),
            "energy (kWh)": "n/a", "n": 1})
    return out


def glue_rows(rows):
    return [{"configuration": f"{r['task']}: {r['variant']}", "metric": f"dev {r['glue_metric']}",
             "score": _f(r["glue_score"]), "time": f"{_f(r.get('epoch_seconds'))} s/epoch, "
             f"{_f(r.get('latency_ms_per_sample'))} ms/sample inference",
             "peak memory (MB)": _f(r.get("inference_peak_rss_mb")), "energy (kWh)": "n/a",
             "n": 1} for r in rows]


def wikitext_rows(rows):
    return [{"configuration": " ".join(p for p in (r.get("stage"), r["variant"]) if p),
             "metric": "MLM perplexity, whole-word masks (trained on valid, evaluated on test: "
                       "offline)" if r.get("masking") == "whole-word" else
                       "MLM perplexity (trained on valid, evaluated on test: offline)",
             "score": _f(r["perplexity"]),
             "time": f"{_f(r.get('train_seconds'))} s training" if r.get("train_seconds")
                     else "n/a",
             "peak memory (MB)": _f(r.get("train_peak_rss_mb")), "energy (kWh)": "n/a", "n": 1}
            for r in rows]


def energy_rows(rows):
    return [{"configuration": r["setting"], "metric": "test accuracy",
             "score": f"{_f(r['accuracy'])} (val loss {_f(r.get('validation_loss'))})",
             "time": f"{_f(r.get('minutes'))} min",
             "peak memory (MB)": _f(r.get("peak_host_rss_mb")),
             "energy (kWh)": f"{_f(r.get('energy_kwh'))} ({_f(r.get('emissions_kg_co2'))} kg CO2)",
             "n": 1} for r in rows]


def ablation_rows(rows):
    return [{"configuration": f"{r['group']} = {r['value']}", "metric": "test accuracy",
             "score": _f(r["accuracy"]), "time": f"{_f(r.get('epoch_seconds'))} s/epoch",
             "peak memory (MB)": _f(r.get("peak_host_rss_mb")), "energy (kWh)": "n/a", "n": 1}
            for r in rows]


EXTRACTORS = {
    "variants_imdb": variants_rows,
    "variants_latency": latency_rows,
    "seq_scaling": seq_rows,
    "glue_lowrank/glue": glue_rows,
    "glue_lowrank/wikitext": wikitext_rows,
    "energy": energy_rows,
    "ablations": ablation_rows,
}


def output_path(results_dir=None, output=None, publish=False):
    """Where the summary goes: `output`; else ``<results_dir>/summary.md`` with `publish`;
    else the repository's git-ignored ``runs/aggregate/summary.md``."""
    if output and publish:
        raise ValueError(f"--publish writes <results_dir>/summary.md but --output={output} was "
                         "also given; pass one of them.")
    if output:
        return pathlib.Path(output)
    if publish:
        return pathlib.Path(results_dir or common.REPO_ROOT / "results") / "summary.md"
    return common.RUNS_DIR / "aggregate" / "summary.md"


# Sections of the summary, in this order: the published research tiers first, the smoke tests
# last and labelled so.
TIER_TITLES = {
    "cpu": "CPU tier: pretrained MiniLM-L6 at a scale 2 CPU cores afford",
    "full": "Full tier: the GPU-sized defaults",
    "quick": ("Quick mode: smoke tests only (a tiny randomly initialised model trained for "
              "seconds); these scores answer no research question"),
}


def tier_folders(results_dir):
    """``[(tier, folder)]``: ``<results_dir>/<tier>/`` for each tier present (cpu, full, quick),
    or ``[(None, results_dir)]`` when `results_dir` holds experiment folders itself (e.g.
    ``runs/quick``)."""
    results_dir = pathlib.Path(results_dir)
    tiers = [(t, results_dir / t) for t in TIER_TITLES if (results_dir / t).is_dir()]
    return tiers or [(None, results_dir)]


def _section(folder):
    """One tier's table rows, devices, missing experiments and finished rows."""
    from keras_effattn.utils import io

    table, missing, devices, finished = [], [], {}, {}
    for name in EXPERIMENTS:
        rows = sweep.load_finished(folder / name)
        if not rows:
            missing.append(name)
            continue
        finished[name] = rows
        devices[name] = _device(folder / name)
        table += [{"experiment": name, **row} for row in EXTRACTORS[name](rows)]
    analysis = folder / "analysis" / "failure_stats.json"
    if analysis.is_file():
        failures = io.read_json(analysis)
        table.append({"experiment": "analysis", "configuration": "analysed classifier",
                      "metric": "test accuracy", "score": _f(failures["accuracy"]),
                      "time": "n/a", "peak memory (MB)": "n/a", "energy (kWh)": "n/a",
                      "n": failures["errors"]["count"] + failures["correct"]["count"]})
        devices["analysis"] = _device(folder / "analysis")
    else:
        missing.append("analysis")
    return table, missing, devices, finished


def aggregate(results_dir, output=None):
    """Builds the summary (one table per tier, research tiers first) and the PNGs of the first
    tier that has results; returns ``(table_rows, missing_experiments)`` of all tiers (each
    table row names its ``tier``; missing names are ``<tier>/<experiment>`` under tiers).

    `output` defaults to ``<results_dir>/summary.md``; the PNGs go beside it.
    """
    from keras_effattn.utils import io

    results_dir = pathlib.Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(
            f"results_dir {results_dir} does not exist; run an experiment first or pass the "
            "folder holding the experiment folders."
        )
    lines = ["# Results summary", "",
             ("Built by `python -m experiments.aggregate` from each run folder's `row.json`. "
             "Scores are single runs unless n > 1 (then mean ± std over seeds, with Welch's "
             "p-value against the first variant). Times and memory are from the machine named "
             "with each experiment, measured in the same run as their baseline; on a shared CPU "
             "only ratios within one experiment are meaningful.")]
    all_rows, all_missing, plotted = [], [], None
    for tier, folder in tier_folders(results_dir):
        table, missing, devices, finished = _section(folder)
        prefix = f"{tier}/" if tier else ""
        all_missing += [prefix + m for m in missing]
        all_rows += [{"tier": tier, **row} for row in table]
        if tier:
            lines += ["", f"## {TIER_TITLES[tier]}", "", f"Folder: `{tier}/`."]
        if not table:
            lines += ["", "Nothing finished yet."]
            continue
        lines += [""] + [f"- `{name}`: {device}" for name, device in devices.items()]
        if missing:
            lines += ["", "Not run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
        lines += ["", suite.markdown_table(table, list(COLUMNS))]
        if plotted is None:
            plotted = finished
    output = pathlib.Path(output) if output else results_dir / "summary.md"
    io.write_text(output, "\n".join(lines) + "\n")
    _plots(plotted or {}, output.parent)
    return all_rows, all_missing


def _plots(finished, out_dir):
    plt = suite._pyplot()
    from keras_effattn.utils import io

    sets = [(name, finished[name], key) for name, key in
            (("variants_imdb", "variant"), ("energy", "setting"), ("ablations", "value"))
            if name in finished]
    if sets:
        figure, axis = plt.subplots(figsize=(6, 4))
        for name, rows, key in sets:
            xs = [sweep.as_float(r.get("epoch_seconds")) for r in rows]
            ys = [sweep.as_float(r.get("accuracy")) for r in rows]
            axis.scatter(xs, ys, label=name, alpha=0.8)
        axis.set_xlabel("seconds per epoch")
        axis.set_ylabel("IMDB test accuracy")
        axis.set_title("IMDB experiments: accuracy vs training time", fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        io.save_figure(figure, out_dir / "summary_accuracy_vs_time.png")
    if "seq_scaling" in finished:
        rows = finished["seq_scaling"]
        series = {}
        for r in rows:
            step = sweep.as_float(r.get("train_step_ms"))
            if math.isfinite(step):  # skipped (out-of-memory) rows have no time
                xs, ys = series.setdefault(r["variant"], ([], []))
                xs.append(int(r["length"]))
                ys.append(step)
        suite.line_chart(series, out_dir / "summary_step_time.png", "sequence length",
                         "train step (ms)", "Sequence scaling: training step time", logy=True)


def main(argv):
    del argv
    results_dir = FLAGS.results_dir or common.REPO_ROOT / "results"
    aggregate(results_dir, output_path(results_dir, FLAGS.output, FLAGS.publish))


if __name__ == "__main__":
    common.run(main)
