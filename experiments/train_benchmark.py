"""Training throughput: stock KerasHub `DistilBertTextClassifier.fit` versus our engine.

Question answered: how many training samples per second (forward, backward, AdamW update) and how
much peak memory do a DistilBERT-base-size classifier (6 layers, hidden 768, 12 heads, random
weights; sequence 256, batch 16) and a MiniLM-size one (6 layers, hidden 384, 12 heads; sequence
128) need, stock versus keras_effattn (FusedAttention "exact", with and without XLA), and what
fraction of this machine's float32 matmul peak (measured in the same run) does each reach?
Rows that change the numerics (mixed_bfloat16) are reported separately. Inputs are random token
ids (no tokenizer in the timed loop); times are medians over timed `fit` calls after a warm-up
call that also compiles.

Examples:
    python -m experiments.train_benchmark --steps=2 --repeats=1 --sizes=minilm   # quick
    python -m experiments.train_benchmark                                        # full table
"""


from absl import flags

from experiments import common

flags.DEFINE_list("sizes", ["distilbert-base", "minilm"], "Model sizes to measure.")
flags.DEFINE_list("variants", ["stock", "engine_xla", "engine_graph", "engine_bf16"],
                  "Variants: stock (KerasHub, compile defaults), engine_xla, engine_graph "
                  "(no XLA: TensorFlow graph + oneDNN), engine_bf16 (mixed_bfloat16 without XLA, "
                  "changes the numerics).")
flags.DEFINE_integer("steps", 4, "Timed training steps per repeat.")
flags.DEFINE_integer("repeats", 2, "Timed repeats (the median is reported).")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
common.define_common_flags()
FLAGS = flags.FLAGS

SIZES = {
    "distilbert-base": {"num_layers": 6, "num_heads": 12, "hidden_dim": 768,
                        "intermediate_dim": 3072, "sequence_length": 256},
    "minilm": {"num_layers": 6, "num_heads": 12, "hidden_dim": 384,
               "intermediate_dim": 1536, "sequence_length": 128},
    "tiny": {"num_layers": 1, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64,
             "sequence_length": 16},  # smoke tests only
}
VOCABULARY = 30522


def main(argv):
    del argv
    settings = {k: FLAGS[k].value for k in ("sizes", "variants", "steps", "repeats",
                                             "batch_size", "seed", "output_dir")}
    unknown = sorted(set(settings["sizes"]) - set(SIZES))
    if unknown:
        raise common.UsageError(f"Unknown --sizes {unknown}; choose from {sorted(SIZES)}.")
    if settings["steps"] < 1 or settings["repeats"] < 1 or settings["batch_size"] < 1:
        raise common.UsageError("--steps, --repeats and --batch_size must be >= 1.")
    from keras_effattn.training import benchmark

    unknown = sorted(set(settings["variants"]) - set(benchmark.VARIANTS))
    if unknown:
        raise common.UsageError(
            f"Unknown --variants {unknown}; choose from {list(benchmark.VARIANTS)}.")
    from keras_effattn.utils import io
    from keras_effattn.utils.metadata import run_metadata

    folder = common.output_dir(settings["output_dir"], "train_benchmark", "latest")
    io.write_json(folder / "config.json", {"settings": settings, "metadata": run_metadata()})
    rows, peaks = [], []
    for size in settings["sizes"]:
        for variant in settings["variants"]:
            # The peak is measured beside each row: on a shared machine the load drifts.
            peak = benchmark.matmul_peak_flops()
            peaks.append(peak)
            row = benchmark.measure_training(
                SIZES[size], variant, settings["batch_size"], settings["steps"],
                settings["repeats"], VOCABULARY, settings["seed"])
            row.update(size=size, matmul_peak_gflops=peak / 1e9,
                       fraction_of_peak=row["achieved_gflops"] * 1e9 / peak)
            rows.append(row)
            io.write_csv(folder / "results.csv", benchmark.with_ratios(rows),
                         columns=benchmark.COLUMNS)
    rows = benchmark.with_ratios(rows)
    peak = max(peaks)
    io.write_json(folder / "results.json", {"matmul_peak_gflops": peak / 1e9, "rows": rows})
    table = benchmark.markdown_table(rows, peak)
    io.write_text(folder / "results.md", table)
    print(table)
    print(f"Results: {common.display_path(folder)}")
    return 0


if __name__ == "__main__":
    common.run(main)
