"""Training throughput: stock KerasHub `DistilBertTextClassifier.fit` versus our engine.

Question answered: how many training samples per second (forward, backward, AdamW update) and how
much peak memory do a DistilBERT-base-size classifier (6 layers, hidden 768, 12 heads, random
weights; sequence 256, batch 16) and a MiniLM-size one (6 layers, hidden 384, 12 heads; sequence
128) need, stock versus keras_effattn (FusedAttention "exact", with and without XLA), and what
fraction of this machine's float32 matmul peak (measured in the same run) does each reach?
Rows that change the numerics (mixed_bfloat16) are reported separately. Inputs are random token
ids (no tokenizer in the timed loop); times are medians over timed `fit` calls after a warm-up
call that also compiles.

Peers: ``torch`` (and ``torch_bf16``, under ``torch.autocast("cpu", torch.bfloat16)``) is what a
PyTorch user runs instead: Hugging Face transformers' `DistilBertForSequenceClassification` of
the same size (random weights), eager PyTorch, AdamW, timed the same way in its own process
(the same random batch, a warm-up step, then the median of the repeats). Every row gets
``ratio_to_torch`` (its samples/s over the same size's ``torch`` row). The peers are left out
with a note when torch or transformers is not installed.

Examples:
    python -m experiments.train_benchmark --steps=2 --repeats=1 --sizes=minilm   # quick
    python -m experiments.train_benchmark                                        # full table
"""


from absl import flags

from experiments import common

flags.DEFINE_list("sizes", ["distilbert-base", "minilm"], "Model sizes to measure.")
flags.DEFINE_list("variants", ["stock", "engine_xla", "engine_graph", "engine_bf16", "torch",
                                "torch_bf16"],
                  "Variants: stock (KerasHub, compile defaults), engine_xla, engine_graph "
                  "(no XLA: TensorFlow graph + oneDNN), engine_bf16 (mixed_bfloat16 without XLA, "
                  "changes the numerics), and the peers torch / torch_bf16 (transformers "
                  "DistilBERT in eager PyTorch, float32 / bf16 autocast).")
flags.DEFINE_integer("steps", 4, "Timed training steps per repeat.")
flags.DEFINE_integer("repeats", 2, "Timed repeats (the median is reported).")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_string("worker", None, "Internal: measure one peer row (JSON) in this process.")
common.define_common_flags()
FLAGS = flags.FLAGS
TORCH_VARIANTS = ("torch", "torch_bf16")

SIZES = {
    "distilbert-base": {"num_layers": 6, "num_heads": 12, "hidden_dim": 768,
                        "intermediate_dim": 3072, "sequence_length": 256},
    "minilm": {"num_layers": 6, "num_heads": 12, "hidden_dim": 384,
               "intermediate_dim": 1536, "sequence_length": 128},
    "tiny": {"num_layers": 1, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64,
             "sequence_length": 16},  # smoke tests only
}
VOCABULARY = 30522


def measure_torch_training(size, variant, batch_size, steps, repeats, vocabulary, seed=0):
    """The PyTorch peer of `benchmark.measure_training`, in this process: transformers'
    `DistilBertForSequenceClassification` of `size` (random weights), AdamW, eager PyTorch
    (``torch_bf16``: bf16 autocast); returns the same row keys."""
    import os
    import statistics
    import time

    import numpy as np
    import torch
    import transformers

    from keras_effattn.training.benchmark import training_flops_per_step
    from keras_effattn.utils.memory import MemoryMeter

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    length = size["sequence_length"]
    config = transformers.DistilBertConfig(
        vocab_size=vocabulary, max_position_embeddings=length, n_layers=size["num_layers"],
        n_heads=size["num_heads"], dim=size["hidden_dim"], hidden_dim=size["intermediate_dim"],
        num_labels=2)
    model = transformers.DistilBertForSequenceClassification(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = np.random.default_rng(seed)
    ids = torch.tensor(rng.integers(1000, vocabulary, (batch_size, length)), dtype=torch.long)
    mask = torch.ones((batch_size, length), dtype=torch.long)
    labels = torch.tensor(rng.integers(0, 2, (batch_size,)), dtype=torch.long)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "torch_bf16")

    def step():
        with autocast:
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    meter = MemoryMeter().start()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    memory = meter.stop()
    seconds = statistics.median(times)
    return {
        "variant": variant, "same_maths": variant == "torch",
        "samples_per_s": batch_size / seconds,
        "achieved_gflops": training_flops_per_step(size, batch_size) / seconds / 1e9,
        "step_seconds": seconds, "host_peak_rss_mb": memory["host_peak_rss_mb"],
        "device_peak_mb": memory["device_peak_mb"], "batch_size": batch_size,
        "sequence_length": length, "jit_compile": False, "torch_version": torch.__version__,
    }


def measure_in_subprocess(size, variant, batch_size, steps, repeats, seed):
    """Runs `measure_torch_training` in a fresh process (TensorFlow's and PyTorch's thread
    pools never share one) and returns its row."""
    import json
    import subprocess
    import sys

    job = {"size": size, "variant": variant, "batch_size": batch_size, "steps": steps,
           "repeats": repeats, "seed": seed}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train_benchmark", f"--worker={json.dumps(job)}"],
        cwd=common.REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"the {variant} peer failed (exit status {result.returncode}):\n"
                           + result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def with_torch_ratios(rows):
    """Adds ``ratio_to_torch`` (samples/s over the same size's ``torch`` row) to each row."""
    torch_rows = {r["size"]: r["samples_per_s"] for r in rows if r["variant"] == "torch"}
    return [{**row, "ratio_to_torch": (row["samples_per_s"] / torch_rows[row["size"]]
                                       if row["size"] in torch_rows else None)} for row in rows]


def worker(job):
    import json

    job = json.loads(job)
    row = measure_torch_training(job["size"], job["variant"], job["batch_size"], job["steps"],
                                 job["repeats"], VOCABULARY, job["seed"])
    print(json.dumps(row))
    return 0


def main(argv):
    del argv
    if FLAGS.worker:
        return worker(FLAGS.worker)
    settings = {k: FLAGS[k].value for k in ("sizes", "variants", "steps", "repeats",
                                             "batch_size", "seed", "output_dir")}
    unknown = sorted(set(settings["sizes"]) - set(SIZES))
    if unknown:
        raise common.UsageError(f"Unknown --sizes {unknown}; choose from {sorted(SIZES)}.")
    if settings["steps"] < 1 or settings["repeats"] < 1 or settings["batch_size"] < 1:
        raise common.UsageError("--steps, --repeats and --batch_size must be >= 1.")
    from keras_effattn.training import benchmark

    known = (*benchmark.VARIANTS, *TORCH_VARIANTS)
    unknown = sorted(set(settings["variants"]) - set(known))
    if unknown:
        raise common.UsageError(f"Unknown --variants {unknown}; choose from {list(known)}.")
    from experiments import peers

    if set(TORCH_VARIANTS) & set(settings["variants"]) and not peers.torch_available():
        print("note: the PyTorch peers are left out: torch and transformers are not installed "
              "(pip install torch transformers).")
        settings["variants"] = [v for v in settings["variants"] if v not in TORCH_VARIANTS]
    from keras_effattn.utils import io
    from keras_effattn.utils.metadata import run_metadata

    columns = (*benchmark.COLUMNS[:5], "ratio_to_torch", *benchmark.COLUMNS[5:])
    folder = common.output_dir(settings["output_dir"], "train_benchmark", "latest")
    io.write_json(folder / "config.json", {"settings": settings, "metadata": run_metadata()})
    rows, peaks = [], []
    for size in settings["sizes"]:
        for variant in settings["variants"]:
            # The peak is measured beside each row: on a shared machine the load drifts.
            peak = benchmark.matmul_peak_flops()
            peaks.append(peak)
            if variant in TORCH_VARIANTS:
                row = measure_in_subprocess(SIZES[size], variant, settings["batch_size"],
                                            settings["steps"], settings["repeats"],
                                            settings["seed"])
            else:
                row = benchmark.measure_training(
                    SIZES[size], variant, settings["batch_size"], settings["steps"],
                    settings["repeats"], VOCABULARY, settings["seed"])
            row.update(size=size, matmul_peak_gflops=peak / 1e9,
                       fraction_of_peak=row["achieved_gflops"] * 1e9 / peak)
            rows.append(row)
            io.write_csv(folder / "results.csv", with_torch_ratios(benchmark.with_ratios(rows)),
                         columns=columns)
    rows = with_torch_ratios(benchmark.with_ratios(rows))
    peak = max(peaks)
    io.write_json(folder / "results.json", {"matmul_peak_gflops": peak / 1e9, "rows": rows})
    table = benchmark.markdown_table(rows, peak)
    io.write_text(folder / "results.md", table)
    print(table)
    print(f"Results: {common.display_path(folder)}")
    return 0


if __name__ == "__main__":
    common.run(main)
