"""Attention variants on IMDB: does efficient attention keep the accuracy of exact attention, and
what does it save in time, memory and energy?

Trains the same classifier under identical settings with each attention spec (stock Keras
exact attention as the baseline, fused exact, FAVOR+, low-rank, a hybrid), over several seeds, on
the IMDB reviews; reports accuracy, macro F1, training time per epoch, inference latency per
review, peak memory and energy as mean ± std over seeds, with Welch's t-test of each variant
against the baseline across seeds and a paired bootstrap over test reviews (first seed).

Quick (a smoke test: tiny from-scratch model, 512 training reviews, 3 epochs, length 64, 2 seeds;
minutes on 2 CPU cores), writes runs/quick/variants_imdb/:

    python -m experiments.variants_imdb --quick

CPU tier (the published table: pretrained MiniLM-L6 with the main job's recipe, 2,000/2,000
balanced reviews, length 256, one epoch, 7 variants x 3 seeds; about 4-6 minutes per run on 2
cores, so spread it over sessions: it resumes), writes runs/cpu/variants_imdb/ (``--publish``:
the tracked results/cpu/variants_imdb/):

    python -m experiments.variants_imdb --tier=cpu

Full (GPU; pretrained MiniLM-L6, 3 epochs, batch 16, lr 5e-5, AdamW, length 256, the
5,000/5,000 subset, 3 seeds; ``--train_per_class=0 --test_per_class=0`` for the full 25k/25k),
writes runs/full/variants_imdb/:

    python -m experiments.variants_imdb

Output: ``results.csv`` (one row per variant and seed), ``summary.csv``/``summary.md`` (mean ±
std, p-values), ``accuracy.png``, ``epoch_time.png``, ``peak_memory.png``, ``config.json`` and
each run's folder under ``runs/``. A killed run resumes and skips finished rows; every row
carries every setting except the variant and seed lists, so re-running into the same folder
with another setting (epochs, learning rate, length, backbone, precision, data sizes, ...) is
refused before anything trains (``--overwrite`` or a new ``--output_dir`` starts afresh).
"""

import math

from absl import flags

from experiments import stats, suite, sweep

suite.define_sweep_flags(imdb_training=True)  # --data_dir, --tier, ...; --backbone, --epochs, ...
flags.DEFINE_string(
    "variants",
    "keras;exact;favor(num_features=128);lowrank(k=64);alternate:exact,favor(num_features=128)",
    "';'-separated attention specs; the first is the baseline.",
)
flags.DEFINE_string("seeds", "0;1;2", "';'-separated seeds.")
flags.DEFINE_string("precision", "float32", "float32, mixed_float16, mixed_bfloat16 or auto.")
flags.DEFINE_bool("energy", True, "Measure energy with CodeCarbon (offline).")

QUICK = {
    "backbone": "tiny",
    "variants": ("keras;exact;favor(num_features=16);lowrank(k=16);"
                 "alternate:exact,favor(num_features=16)"),
    "seeds": "0;1",
    "epochs": 3,
    "learning_rate": 1e-3,
    "max_length": 64,
    "train_per_class": 256,
    "test_per_class": 128,
    "energy": False,
    "jit_compile": False,
}
# The pretrained model at a scale 2 CPU cores afford, with the main job's recipe
# (experiments.train: lr 1e-4, one epoch, frozen token embedding, no XLA): 2,000 balanced
# training reviews, the same 2,000 balanced test reviews for every run, 3 seeds. The hybrid is
# the one the zero-shot swap table favours (FAVOR+ in the two bottom layers, exact above).
CPU = {
    **suite.MAIN_JOB_RECIPE,
    "variants": suite.IMDB_VARIANTS,
    "seeds": "0;1;2",
    "batch_size": 16,
    "train_per_class": 1000,
    "test_per_class": 1000,
    "energy": True,
}
PRESETS = {"quick": QUICK, "cpu": CPU}
NAMES = ("seed", "output_dir", "backbone", "variants", "seeds", "epochs", "batch_size",
         "learning_rate",
         "max_length", "train_per_class", "test_per_class", "precision", "energy", "jit_compile",
         "freeze_embeddings")
METRICS = ("accuracy", "macro_f1", "epoch_seconds", "latency_ms_per_sample", "peak_host_rss_mb",
           "energy_kwh")
QUESTION = "Do efficient attention variants keep exact attention's IMDB accuracy, at what cost?"
NAME = "variants_imdb"


def plan(settings):
    """Checks the variants and seeds and builds the rows (reads and writes nothing).

    Each row holds its variant and (training) seed plus every other setting; the data-subset
    seed (``--seed``) is stored as ``data_seed``.

    Returns:
        ``(variants, rows)``.
    """
    variants = suite.split_list(settings["variants"])
    seeds = suite.split_list(settings["seeds"], int)
    suite.check_specs(variants, suite.backbone_source(settings["backbone"]))
    shared = {**suite.row_settings(settings, ("variants", "seeds", "seed")),
              "data_seed": settings["seed"]}
    # Seed-major: a sweep stopped part way has every variant at the first seed(s).
    rows = [
        {"run_id": sweep.run_id_of(v=i, seed=seed), "variant": variant, "seed": seed, **shared}
        for seed in seeds
        for i, variant in enumerate(variants)
    ]
    return variants, rows


def run(settings, data_dir, overwrite=False):
    """Runs the sweep described by `settings`; returns (rows, summary)."""
    from keras_effattn.data import read_imdb
    from keras_effattn.training.fit import TrainConfig

    variants, rows = plan(settings)
    suite.prepare_sweep(settings, NAME, QUESTION, [(rows, "")], overwrite=overwrite)
    archive = data_dir / "aclImdb_v1.tar.gz"
    train = read_imdb(archive, "train", max_per_class=settings["train_per_class"] or None,
                      seed=settings["seed"])
    test = read_imdb(archive, "test", max_per_class=settings["test_per_class"] or None,
                     seed=settings["seed"])
    source = suite.backbone_source(settings["backbone"])

    def run_one(row, run_dir):
        config = TrainConfig(
            epochs=settings["epochs"], batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"], optimizer="adamw",
            precision=settings["precision"], jit_compile=settings["jit_compile"],
            seed=row["seed"], energy=settings["energy"], tensorboard=False, save_model=False,
            freeze_embeddings=settings["freeze_embeddings"],
            name=f"imdb {row['variant']} seed {row['seed']}",
            extra={"dataset": "imdb", "backbone": settings["backbone"],
                   "attention": row["variant"], "max_length": settings["max_length"]},
        )
        build = suite.classifier_builder(source, row["variant"], settings["max_length"])
        return suite.train_row(config, build, train, test, run_dir)

    results = sweep.run_sweep(rows, run_one, settings["output_dir"],
                              columns=["run_id", "variant", "seed", *suite.ROW_COLUMNS])
    return results, summarise(results, variants, test.labels, settings["output_dir"])


def summarise(results, variants, labels, out_dir):
    """Per-variant mean ± std, Welch p-values and the first seed's paired bootstrap; files."""
    import numpy as np

    baseline = variants[0]
    summary = stats.compare_groups(results, "variant", METRICS, baseline=baseline)
    first = {}
    for row in results:
        first.setdefault(row["variant"], row)
    base_correct = np.asarray(suite.predictions_of(f"{out_dir}/{first[baseline]['run_dir']}"))
    base_correct = (base_correct == labels).astype(float)
    for entry in summary:
        run_dir = f"{out_dir}/{first[entry['variant']]['run_dir']}"
        predictions = np.asarray(suite.predictions_of(run_dir))
        boot = stats.paired_bootstrap((predictions == labels).astype(float), base_correct)
        entry["accuracy_diff_bootstrap_ci"] = f"[{boot['ci_low']:+.3f}, {boot['ci_high']:+.3f}]"
        entry["accuracy_p_bootstrap"] = math.nan if entry["variant"] == baseline else boot["p"]
    from keras_effattn.utils import io

    io.write_csv(f"{out_dir}/summary.csv", summary)
    table = [
        {
            "variant": s["variant"],
            "n": s["n"],
            "accuracy": stats.format_mean_std(s["accuracy_mean"], s["accuracy_std"]),
            "macro F1": stats.format_mean_std(s["macro_f1_mean"], s["macro_f1_std"]),
            "Δacc": s["accuracy_diff"],
            "p (Welch)": s["accuracy_p_welch"],
            "p (bootstrap)": s["accuracy_p_bootstrap"],
            "s/epoch": stats.format_mean_std(s["epoch_seconds_mean"], s["epoch_seconds_std"], 1),
            "inference ms/review": stats.format_mean_std(
                s["latency_ms_per_sample_mean"], s["latency_ms_per_sample_std"], 2),
            "peak RSS MB": stats.format_mean_std(
                s["peak_host_rss_mb_mean"], s["peak_host_rss_mb_std"], 0),
            "kWh": s["energy_kwh_mean"],
        }
        for s in summary
    ]
    text = (f"# {QUESTION}\n\nBaseline: `{baseline}`. Mean ± std over seeds; p-values against "
            "the baseline (Welch over seeds; paired bootstrap over test reviews, first seed). "
            + suite.conditions_note(out_dir, results) + "\n\n"
            + suite.markdown_table(table, list(table[0])))
    io.write_text(f"{out_dir}/summary.md", text)
    labels_ = [s["variant"] for s in summary]
    for metric, name, ylabel in (("accuracy", "accuracy.png", "test accuracy"),
                                 ("epoch_seconds", "epoch_time.png", "seconds per epoch"),
                                 ("peak_host_rss_mb", "peak_memory.png", "peak host RSS (MB)")):
        suite.bar_chart(labels_, [s[f"{metric}_mean"] for s in summary], f"{out_dir}/{name}",
                        ylabel, f"IMDB: {ylabel} (mean ± std over seeds)",
                        errors=[s[f"{metric}_std"] for s in summary])
    return summary


if __name__ == "__main__":
    suite.run_script(NAMES, PRESETS, NAME, run)
