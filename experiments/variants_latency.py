"""Inference latency of the attention variants' IMDB classifiers, all measured in one run.

The variants table (`experiments.variants_imdb`) times each run's final evaluation, but its
runs spread over sessions and processes, so their latencies are not comparable with each
other. Latency does not depend on the fine-tuned weights (the same layers run on the same
shapes), so this script builds each variant's classifier from the pretrained backbone with a
fresh head and times the very evaluation the variants runs end with
(`keras_effattn.training.fit.evaluate_model`: the preprocessed test reviews, batches of 64, no
XLA) on the same test reviews. It runs in rounds: each round times every variant once, in
turn, so a drift of the machine's speed during the run reaches every variant alike. Reports
milliseconds per review as mean ± std over rounds and, within each round, the ratio to the
first variant (stock Keras attention).

Quick (a smoke test: tiny from-scratch model, 32 reviews, length 64, 2 rounds; seconds on 2
CPU cores), writes runs/quick/variants_latency/:

    python -m experiments.variants_latency --quick

CPU tier (the published column: pretrained MiniLM-L6, the variants table's 7 kinds, 1,000
balanced test reviews (the time per review does not depend on how many), length 256, 3
rounds; about 20 minutes on 2 cores), writes runs/cpu/variants_latency/ (``--publish``: the tracked
results/cpu/variants_latency/):

    python -m experiments.variants_latency --tier=cpu

Output: ``results.csv`` (one row per round and variant), ``summary.csv``/``summary.md``
(mean ± std per variant), ``latency.png``, ``config.json`` and each row's folder under
``runs/``. A stopped run resumes; a row re-run with other settings is refused.
"""

import math

from absl import flags

from experiments import common, stats, suite, sweep

suite.define_sweep_flags()  # --data_dir, --output_dir, --seed, --tier, --publish, ...
flags.DEFINE_string("variants", suite.IMDB_VARIANTS, "';'-separated attention specs; the first "
                    "is the baseline of the ratio column.")
flags.DEFINE_string("backbone", "minilm-l6", "'minilm-l6', 'tiny' (from scratch) or a folder.")
flags.DEFINE_integer("max_length", 256, "Token sequence length.")
flags.DEFINE_integer("test_per_class", 1000, "Test reviews per class (0: all 12,500).")
flags.DEFINE_integer("batch_size", 64, "Reviews per predict batch (the engine's evaluation "
                     "batch).")
flags.DEFINE_integer("rounds", 3, "Times every variant is measured, in turn.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the predict step.")

QUICK = {
    "backbone": "tiny",
    "variants": "keras;exact;favor(num_features=16)",
    "max_length": 64,
    "test_per_class": 16,
    "rounds": 2,
}
# The variants table's kinds, backbone, length and (no) XLA; 1,000 test reviews, not its 2,000:
# the time per review does not depend on how many.
CPU = {"backbone": "minilm-l6", "variants": suite.IMDB_VARIANTS, "max_length": 256,
       "test_per_class": 500, "rounds": 3, "jit_compile": False}
PRESETS = {"quick": QUICK, "cpu": CPU}
NAMES = ("seed", "output_dir", "backbone", "variants", "max_length", "test_per_class",
         "batch_size", "rounds", "jit_compile")
QUESTION = "How fast does each attention variant's IMDB classifier infer, measured together?"
NAME = "variants_latency"


def plan(settings):
    """Checks the variants and builds the rows, round-major (reads and writes nothing).

    Returns:
        ``(variants, rows)``.
    """
    variants = suite.split_list(settings["variants"])
    if settings["rounds"] < 1:
        raise common.UsageError(f"--rounds={settings['rounds']} must be at least 1.")
    suite.check_specs(variants, suite.backbone_source(settings["backbone"]))
    shared = suite.row_settings(settings, ("variants", "rounds"))
    rows = [{"run_id": sweep.run_id_of(round=r, v=i), "variant": variant, "round": r, **shared}
            for r in range(settings["rounds"])
            for i, variant in enumerate(variants)]
    return variants, rows


def run(settings, data_dir, overwrite=False):
    """Times every row; returns ``(rows, summary)``."""
    import keras

    from keras_effattn.data import read_imdb
    from keras_effattn.training.fit import evaluate_model

    variants, rows = plan(settings)
    suite.prepare_sweep(settings, NAME, QUESTION, [(rows, "")], overwrite=overwrite)
    test = read_imdb(data_dir / "aclImdb_v1.tar.gz", "test",
                     max_per_class=settings["test_per_class"] or None, seed=settings["seed"])
    source = suite.backbone_source(settings["backbone"])
    models = {}  # variant -> classifier, built once per process

    def run_one(row, run_dir):
        del run_dir
        if row["variant"] not in models:
            keras.utils.set_random_seed(settings["seed"])
            model = suite.classifier_builder(source, row["variant"], settings["max_length"])()
            model.compile(jit_compile=settings["jit_compile"])
            models[row["variant"]] = model
        inference = evaluate_model(models[row["variant"]], test,
                                   batch_size=settings["batch_size"])["inference"]
        return {key: inference.get(key) for key in
                ("latency_ms_per_sample", "samples_per_s", "seconds", "num_examples")}

    results = sweep.run_sweep(rows, run_one, settings["output_dir"],
                              columns=["run_id", "variant", "round", "latency_ms_per_sample"])
    return results, summarise(results, variants, settings["output_dir"])


def summarise(results, variants, out_dir):
    """Per variant: ms per review (mean ± std over rounds, Welch's p against the first
    variant) and the ratio to the first variant within each round (mean ± std); writes
    summary.csv, summary.md and latency.png."""
    from keras_effattn.utils import io

    baseline = {r["round"]: sweep.as_float(r["latency_ms_per_sample"]) for r in results
                if r["variant"] == variants[0]}
    rows = [{**r, "vs_baseline": sweep.as_float(r["latency_ms_per_sample"])
             / baseline.get(r["round"], math.nan)} for r in results]
    summary = stats.compare_groups(rows, "variant", ("latency_ms_per_sample",),
                                   baseline=variants[0])
    for entry in summary:
        ratio = stats.mean_std([r["vs_baseline"] for r in rows if r["variant"] == entry["variant"]])
        entry["vs_baseline_mean"], entry["vs_baseline_std"] = ratio["mean"], ratio["std"]
    io.write_csv(f"{out_dir}/summary.csv", summary)
    table = [{"variant": f"`{s['variant']}`", "rounds": s["n"],
              "ms/review": stats.format_mean_std(s["latency_ms_per_sample_mean"],
                                                 s["latency_ms_per_sample_std"], 2),
              f"× `{variants[0]}` (same round)": stats.format_mean_std(
                  s["vs_baseline_mean"], s["vs_baseline_std"], 3),
              "p (Welch)": s["latency_ms_per_sample_p_welch"]}
             for s in summary]
    counts = sorted({int(r["num_examples"]) for r in results})
    text = (f"# {QUESTION}\n\nEach variant's classifier (pretrained backbone, fresh head: "
            "latency does not depend on the fine-tuned weights) times the engine's evaluation "
            f"of the same {' / '.join(f'{c:,}' for c in counts)} test reviews, every variant "
            f"once per round; mean ± std over rounds, and the ratio to `{variants[0]}` within "
            "each round. " + suite.devices_note(suite.run_devices(out_dir, results)) + "\n\n"
            + suite.markdown_table(table, list(table[0])))
    io.write_text(f"{out_dir}/summary.md", text)
    suite.bar_chart([s["variant"] for s in summary],
                    [s["latency_ms_per_sample_mean"] for s in summary], f"{out_dir}/latency.png",
                    "ms per review", "IMDB inference latency (mean ± std over rounds)",
                    errors=[s["latency_ms_per_sample_std"] for s in summary])
    return summary


if __name__ == "__main__":
    suite.run_script(NAMES, PRESETS, NAME, run)
