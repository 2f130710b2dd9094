"""Sequence-length scaling of the whole model: how do training step time, throughput and peak
memory grow with the sequence length for each attention variant?

For every (variant, length) the script builds the whole classifier (embeddings, encoder, head),
compiles it with the library's optimiser (AdamW, `keras_effattn.training.optimizers`) inside the
library's precision scope, runs warm-up steps (tracing, XLA), then times `train_on_batch` and
`predict_on_batch` on a fixed batch of random token ids with a full padding mask (every position
real: the worst case); reports the median step time of the repeats, samples (and tokens) per
second, the peak memory over the timed steps, and each variant's step time relative to the
baseline (the first variant) at the same length, measured in the same run.

Position-embedding policy: cost does not depend on weight values, so each length runs the
backbone's architecture (sizes read from the source) with a randomly initialised position table
of ``max(lengths)`` rows. Lengths past a pretrained table (512 for MiniLM) are therefore measured
without extrapolating learned positions; fine-tuning at those lengths needs a position extension
(e.g. copying the learned table, as Longformer does), which this benchmark does not claim.
Low-rank (Linformer) layers get ``max_length = max(lengths)`` rows of E/F.

Quick (tiny from-scratch model, lengths 128-1024, batch 4; a few minutes on 2 CPU cores), writes
runs/quick/seq_scaling/ (``--publish``: the tracked results/seq_scaling/):

    python -m experiments.seq_scaling --quick

Full (GPU; MiniLM-L6 architecture, lengths 128-4096, batch 8, 10 timed steps), writes
runs/full/seq_scaling/:

    python -m experiments.seq_scaling

CPU tier (the pretrained MiniLM-L6: exact, FAVOR+ 256 and Linformer k=128 at lengths 128, 256
and 512, batch 8 timing; with ``--accuracy``: every (variant, length) also fine-tuned with the
main job's recipe on 2,000 balanced training reviews truncated to that length and evaluated on
the same 2,000 test reviews, with a bootstrap 95 % interval over the reviews and the paired
difference to exact attention at that length), writes runs/cpu/seq_scaling/:

    python -m experiments.seq_scaling --tier=cpu

Output: ``results.csv`` (one row per variant and length, with ``skipped`` set where a run ran out
of memory), ``step_time.png``, ``throughput.png``, ``peak_memory.png``, ``summary.md``.
Memory: on GPU the allocator peak (``device_peak_mb``); on CPU the growth of the process's
resident set over its level before the model was built (``host_rss_growth_mb``), an upper-bound
estimate since freed memory may be reused across rows. Each row carries every setting except the
variant and length lists, plus ``position_table`` (the longest length, which sizes the position
table and the Linformer projections); a changed setting is refused before anything runs.
"""

import math
import statistics
import time

from absl import flags

from experiments import stats, suite, sweep

suite.define_sweep_flags()  # --data_dir, --output_dir, --seed, --tier, --publish, ...
flags.DEFINE_string("backbone", "minilm-l6", "Architecture source: 'minilm-l6' or 'tiny'.")
flags.DEFINE_string(
    "variants", "keras;exact;exact(chunk_size=256);favor(num_features=128);lowrank(k=128)",
    "';'-separated attention specs; the first is the baseline.")
flags.DEFINE_string("lengths", "128;256;512;1024;2048;4096", "';'-separated sequence lengths.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps before timing.")
flags.DEFINE_integer("steps", 10, "Timed steps (the median is reported).")
flags.DEFINE_string("precision", "float32", "float32, mixed_float16, mixed_bfloat16 or auto.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the steps.")
flags.DEFINE_bool("accuracy", False, "Also fine-tune each (variant, length) from the pretrained "
                  "weights and report its IMDB test accuracy.")
flags.DEFINE_integer("train_per_class", 1000, "Accuracy mode: training reviews per class.")
flags.DEFINE_integer("test_per_class", 1000, "Accuracy mode: test reviews per class.")
flags.DEFINE_integer("epochs", 1, "Accuracy mode: epochs.")
flags.DEFINE_integer("train_batch_size", 16, "Accuracy mode: training batch size.")
flags.DEFINE_float("learning_rate", 1e-4, "Accuracy mode: peak learning rate (AdamW, linear).")
flags.DEFINE_bool("freeze_embeddings", True, "Accuracy mode: freeze the token embedding table.")

QUICK = {
    "backbone": "tiny",
    "variants": "keras;exact(chunk_size=128);favor(num_features=32);lowrank(k=32)",
    "lengths": "128;256;512;1024",
    "batch_size": 4,
    "warmup_steps": 1,
    "steps": 3,
    "jit_compile": False,
}
# The pretrained model at the lengths where its position table holds (<= 512), with accuracy:
# 9 fine-tuning runs of the main job's recipe on 2,000 reviews (about 3, 6 and 14 minutes at
# lengths 128, 256 and 512 on a 2-core CPU with a ~380 GFLOP/s matmul peak).
CPU = {
    "backbone": "minilm-l6",
    "variants": "exact;favor(num_features=256);lowrank(k=128)",
    "lengths": "128;256;512",
    "batch_size": 8,
    "warmup_steps": 1,
    "steps": 5,
    "jit_compile": suite.MAIN_JOB_RECIPE["jit_compile"],
    "accuracy": True,
    "train_per_class": 1000,
    "test_per_class": 1000,
    "epochs": suite.MAIN_JOB_RECIPE["epochs"],
    "train_batch_size": 16,
    "learning_rate": suite.MAIN_JOB_RECIPE["learning_rate"],
    "freeze_embeddings": suite.MAIN_JOB_RECIPE["freeze_embeddings"],
}
TRAINING = ("train_per_class", "test_per_class", "epochs", "train_batch_size", "learning_rate",
            "freeze_embeddings")
NAMES = ("output_dir", "backbone", "variants", "lengths", "batch_size", "warmup_steps", "steps",
         "precision", "jit_compile", "seed", "accuracy", *TRAINING)
QUESTION = "How do step time, throughput and peak memory scale with sequence length per variant?"
NAME = "seq_scaling"
ARCH_KEYS = ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "vocabulary_size")


def architecture(source, max_length):
    """The backbone sizes of `source` with a `max_length`-row position table (random init)."""
    if source == "tiny":
        return suite.backbone_source("tiny", {"max_sequence_length": max_length})
    from keras_effattn.models import load_backbone

    config = load_backbone(source).get_config()
    return {**{k: config[k] for k in ARCH_KEYS}, "max_sequence_length": max_length,
            "dropout": config.get("dropout", 0.1)}


def measure(settings, arch, variant, length):
    """Times training and inference steps of one (variant, length); returns a flat row."""
    import keras
    import numpy as np

    from keras_effattn.models import EffAttnTextClassifier, load_backbone
    from keras_effattn.training.optimizers import build_optimizer
    from keras_effattn.training.precision import precision_scope
    from keras_effattn.utils.memory import MemoryMeter, current_rss_bytes

    keras.utils.set_random_seed(settings["seed"])
    before = current_rss_bytes()
    with precision_scope(settings["precision"]):
        backbone = load_backbone(arch, attention=variant,
                                 options={"lowrank": {"max_length": arch["max_sequence_length"]}})
        # No preprocessor: the steps take token ids, so tokenisation is not timed.
        model = EffAttnTextClassifier(backbone=backbone, num_classes=2)
        model.compile(optimizer=build_optimizer("adamw", 5e-5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=settings["jit_compile"])
    rng = np.random.default_rng(settings["seed"])
    batch = settings["batch_size"]
    x = {"token_ids": rng.integers(1000, arch.get("vocabulary_size", 30522),
                                   size=(batch, length)).astype("int32"),
         "padding_mask": np.ones((batch, length), dtype=bool)}
    y = rng.integers(0, 2, size=(batch,)).astype("int32")
    for _ in range(settings["warmup_steps"]):
        model.train_on_batch(x, y)
        model.predict_on_batch(x)
    meter = MemoryMeter().start()
    train_times, infer_times = [], []
    for _ in range(settings["steps"]):
        start = time.perf_counter()
        float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0])  # waits for the step
        train_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(x))
        infer_times.append(time.perf_counter() - start)
    memory = meter.stop()
    step = statistics.median(train_times)
    infer = statistics.median(infer_times)
    return {
        "train_step_ms": 1000 * step,
        "train_samples_per_s": batch / step,
        "train_tokens_per_s": batch * length / step,
        "infer_step_ms": 1000 * infer,
        "infer_samples_per_s": batch / infer,
        "host_rss_growth_mb": (memory["host_peak_rss_mb"] * 2**20 - before) / 2**20,
        "host_peak_rss_mb": memory["host_peak_rss_mb"],
        "device_peak_mb": memory["device_peak_mb"],
        "skipped": "",
    }


def plan(settings):
    """Checks the variants and lengths and builds the rows (reads and writes nothing).

    Returns:
        ``(variants, lengths, rows)``.
    """
    variants = suite.split_list(settings["variants"])
    lengths = suite.split_list(settings["lengths"], int)
    if min(lengths) < 2:
        raise ValueError(f"--lengths must all be >= 2, got {settings['lengths']!r}.")
    source = settings["backbone"]
    suite.check_specs(variants, suite.backbone_source(source) if source == "tiny" else source)
    # Without --accuracy the training settings do not affect a row.
    ignored = ("variants", "lengths") + (() if settings.get("accuracy") else TRAINING)
    shared = {**suite.row_settings(settings, ignored), "position_table": max(lengths)}
    rows = [{"run_id": sweep.run_id_of(len=length, v=i), "variant": variant, "length": length,
             **shared} for length in lengths for i, variant in enumerate(variants)]
    return variants, lengths, rows


def fine_tune(settings, data, variant, length, run_dir):
    """Accuracy mode: fine-tunes the pretrained backbone with `variant` at `length`; returns
    the accuracy columns (with a bootstrap 95 % interval over the test reviews)."""
    import numpy as np

    from keras_effattn.training.fit import TrainConfig

    train, test = data["train"], data["test"]
    config = TrainConfig(
        epochs=settings["epochs"], batch_size=settings["train_batch_size"],
        learning_rate=settings["learning_rate"], optimizer="adamw",
        precision=settings["precision"], jit_compile=settings["jit_compile"],
        seed=settings["seed"], energy=False, tensorboard=False, save_model=False,
        freeze_embeddings=settings["freeze_embeddings"],
        name=f"imdb {variant} length {length}",
        extra={"dataset": "imdb", "backbone": settings["backbone"], "attention": variant,
               "max_length": length})
    source = suite.backbone_source(settings["backbone"])
    build = suite.classifier_builder(source, variant, length,
                                     options={"lowrank": {"max_length": length}})
    row = suite.train_row(config, build, train, test, run_dir)
    correct = np.asarray(suite.predictions_of(run_dir)) == np.asarray(test.labels)
    low, high = stats.bootstrap_interval(correct.astype(float))
    return {"accuracy": row["accuracy"], "accuracy_ci_low": low, "accuracy_ci_high": high,
            "macro_f1": row["macro_f1"], "fine_tune_epoch_seconds": row["epoch_seconds"],
            "truncated_share": float(np.mean([n > length - 2 for n in data["token_counts"]]))}


def load_data(settings, data_dir):
    """Accuracy mode's data: ``{"train", "test", "token_counts"}`` (the IMDB subsets and each
    test review's WordPiece count, for the share a length truncates)."""
    from keras_effattn.data import read_imdb
    from keras_effattn.models import tokenizer_for

    archive = data_dir / "aclImdb_v1.tar.gz"
    train = read_imdb(archive, "train", max_per_class=settings["train_per_class"] or None,
                      seed=settings["seed"])
    test = read_imdb(archive, "test", max_per_class=settings["test_per_class"] or None,
                     seed=settings["seed"])
    tokenizer = tokenizer_for(suite.backbone_source(settings["backbone"]))
    counts = [len(ids) for ids in tokenizer(list(test.texts))]
    return {"train": train, "test": test, "token_counts": counts}


def run(settings, data_dir=None, overwrite=False):
    """Runs the benchmark sweep; returns the result rows (with step-time ratios)."""
    import keras

    variants, lengths, rows = plan(settings)
    arch = architecture(settings["backbone"], max(lengths))
    if settings.get("accuracy") and max(lengths) > arch_limit(settings["backbone"]):
        raise ValueError(
            f"--accuracy fine-tunes pretrained weights, whose position table holds "
            f"{arch_limit(settings['backbone'])} tokens; --lengths={settings['lengths']} goes "
            "beyond it. Drop the longer lengths or run without --accuracy.")
    data = load_data(settings, data_dir) if settings.get("accuracy") else None

    def run_one(row, run_dir):
        try:
            result = measure(settings, arch, row["variant"], row["length"])
        except Exception as error:
            if "RESOURCE_EXHAUSTED" not in str(error) and "OOM" not in str(error):
                raise
            return {"skipped": f"out of memory: {type(error).__name__}"}
        finally:
            keras.backend.clear_session()
        if data is not None:
            result.update(fine_tune(settings, data, row["variant"], row["length"], run_dir))
            keras.backend.clear_session()
        return result

    suite.prepare_sweep(settings, NAME, QUESTION, [(rows, "")], overwrite=overwrite,
                        extra_config={"architecture": arch})
    results = sweep.run_sweep(rows, run_one, settings["output_dir"],
                              columns=["run_id", "variant", "length"])
    if data is not None:
        paired_to_baseline(results, variants, data["test"].labels, settings["output_dir"])
    return report(results, variants, lengths, settings["output_dir"])


def arch_limit(source):
    """The position-table length of the pretrained `source` (no limit for 'tiny')."""
    if source == "tiny":
        return math.inf
    from keras_effattn.models import load_backbone

    return load_backbone(source).get_config()["max_sequence_length"]


def paired_to_baseline(results, variants, labels, out_dir):
    """Adds each row's accuracy difference to the baseline variant at the same length (paired
    bootstrap over the same test reviews)."""
    import numpy as np

    labels = np.asarray(labels)
    correct = {}
    for row in results:
        if row.get("run_dir") and row.get("accuracy") is not None:
            predictions = np.asarray(suite.predictions_of(f"{out_dir}/{row['run_dir']}"))
            correct[(row["variant"], row["length"])] = (predictions == labels).astype(float)
    for row in results:
        mine = correct.get((row["variant"], row["length"]))
        base = correct.get((variants[0], row["length"]))
        if mine is None or base is None or row["variant"] == variants[0]:
            continue
        boot = stats.paired_bootstrap(mine, base)
        row["accuracy_vs_baseline"] = boot["diff"]
        row["accuracy_vs_baseline_ci"] = f"[{boot['ci_low']:+.3f}, {boot['ci_high']:+.3f}]"


def report(results, variants, lengths, out_dir):
    """Adds ratios to the baseline, rewrites the table, draws the plots and summary.md."""
    from keras_effattn.utils import io

    baseline = {r["length"]: sweep.as_float(r.get("train_step_ms")) for r in results
                if r["variant"] == variants[0]}
    for row in results:
        base = baseline.get(row["length"])
        step = sweep.as_float(row.get("train_step_ms"))
        row["train_step_vs_baseline"] = step / base if base and math.isfinite(step) else None
    io.write_csv(f"{out_dir}/results.csv", results)
    with_accuracy = any(r.get("accuracy") is not None for r in results)
    plots = [
        ("train_step_ms", "step_time.png", "training step (ms, median)", True),
        ("train_tokens_per_s", "throughput.png", "training tokens / s", False),
        ("host_rss_growth_mb", "peak_memory.png", "host RSS growth (MB)", False),
    ] + ([("accuracy", "accuracy.png", "IMDB test accuracy", False)] if with_accuracy else [])
    for metric, name, ylabel, logy in plots:
        series = {}
        for variant in variants:
            points = [(r["length"], sweep.as_float(r.get(metric))) for r in results
                      if r["variant"] == variant and math.isfinite(sweep.as_float(r.get(metric)))]
            if points:
                series[variant] = tuple(zip(*points))
        suite.line_chart(series, f"{out_dir}/{name}", "sequence length", ylabel,
                         f"Whole-model {ylabel} vs length", logy=logy)
    columns = ["variant", "length", "train_step_ms", "train_step_vs_baseline",
               "train_tokens_per_s", "infer_step_ms", "host_rss_growth_mb", "device_peak_mb",
               "skipped"]
    if with_accuracy:
        columns[2:2] = ["accuracy", "accuracy_ci_low", "accuracy_ci_high",
                        "accuracy_vs_baseline", "accuracy_vs_baseline_ci", "truncated_share"]
    io.write_text(f"{out_dir}/summary.md", f"# {QUESTION}\n\nBaseline: `{variants[0]}`; ratios "
                  "are step times relative to it at the same length, measured in the same run.\n\n"
                  + suite.markdown_table(results, columns))
    return results


if __name__ == "__main__":
    suite.run_script(NAMES, {"quick": QUICK, "cpu": CPU}, NAME, run)
