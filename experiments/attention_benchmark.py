"""Attention benchmark: how do time and peak memory of one attention layer grow with length?

For `keras.layers.MultiHeadAttention` (the baseline, called as KerasHub's TransformerEncoder
calls it: a [B, 1, S] padding mask, attention dropout) and each keras_effattn variant (exact
fused, exact chunked, FAVOR+, Linformer), the script measures the forward (inference) and
forward+backward (training, dropout active) time of one layer, and the peak memory of each, at
sequence lengths 128 -> 16384. Every configuration runs in a fresh subprocess so its host peak
RSS (CPU; `ru_maxrss`, minus the level after building the layer) or TensorFlow's allocator peak
(GPU) is its own. A configuration whose estimated memory exceeds `--memory_budget_gb` is skipped
and recorded; a running one that grows past the budget is killed and recorded. Times are the
median of `--repeats` timed calls after warm-up (fewer when a call exceeds `--time_cap_s`).
Ratios to the baseline are computed from rows measured in the same run. The sweep resumes:
finished rows in results.json are kept and skipped.

Roofline columns. Each row also carries `gflop_fwd_bwd`, the analytic matmul FLOPs of one
forward+backward call (`keras_effattn.training.benchmark.attention_flops`: the four projections
plus each variant's attention products, backward counted as 2x forward), and `achieved_gflops`,
those FLOPs over the measured forward+backward time. With `--measure_peak` (default) the
float32 matmul peak of this machine is measured once per run in the parent process, before the
first configuration runs (`matmul_peak_flops`, the best of graph and XLA on a
`--peak_matmul_size` square product), and each row measured in that run gets
`matmul_peak_gflops`, `fraction_of_peak` (achieved over peak) and `roofline_ms` = FLOPs / peak:
the fastest any implementation doing that arithmetic could run here. `max_speedup_vs_mha` is
the MultiHeadAttention row's measured forward+backward time (same length, batch and dropout)
over this row's `roofline_ms`: the largest speed-up over MHA possible without skipping
arithmetic. Without the peak these columns are empty; rows resumed from an earlier run keep the
peak of the run that measured them (measure into a fresh `--output_dir` for a uniform table).

Peer. ``torch_sdpa`` is what a PyTorch user runs instead: the same four projections around
`torch.nn.functional.scaled_dot_product_attention` (its fused CPU kernel when there is no dropout),
measured in its own subprocess the same way; every row gets ``fwdbwd_vs_torch_sdpa`` (its
forward+backward time over the peer's) and ``growth_vs_torch_sdpa`` (memory growth over the
peer's) at the same length, batch and dropout, so the comparison comes from one command in one
run. Without PyTorch installed the peer is left out with a note.

Quick (a minute or two on 2 CPU cores):

    python -m experiments.attention_benchmark --lengths=128,512 --repeats=3 \
        --output_dir=runs/attention_quick

Full (the committed results; ~30 minutes on 2 shared CPU cores):

    python -m experiments.attention_benchmark --output_dir=results/attention_benchmark

Output: config.json, results.json, results.csv, attention_benchmark.png, and a printed table.
"""

import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from absl import flags

from experiments import common

# What to run.
flags.DEFINE_list("variants", ["mha", "fused", "chunked", "favor", "linformer", "torch_sdpa"],
                  "Layers: mha (keras.layers.MultiHeadAttention), fused, chunked, favor, "
                  "linformer, and the peer torch_sdpa (PyTorch's scaled_dot_product_attention "
                  "with the same four projections; skipped with a note without torch).")
flags.DEFINE_list("lengths", ["128", "512", "1024", "2048", "4096", "8192", "16384"],
                  "Sequence lengths.")
flags.DEFINE_list("batch_sizes", ["1"], "Batch sizes.")
flags.DEFINE_list("dropouts", ["0.1"], "Attention dropout rates (the baseline is KerasHub's 0.1).")
flags.DEFINE_list("no_dropout_lengths", ["512", "2048"],
                  "Lengths also measured with dropout 0 (the dropout-free numbers).")
# Layer sizes.
flags.DEFINE_integer("num_heads", 12, "Heads.")
flags.DEFINE_integer("head_dim", 64, "Size of each head.")
flags.DEFINE_integer("chunk_size", 256, "Key block of the chunked exact mode.")
flags.DEFINE_integer("num_features", 256, "FAVOR+ random features.")
flags.DEFINE_integer("linformer_k", 256, "Linformer projected length.")
# Measurement.
flags.DEFINE_integer("repeats", 5, "Timed calls per mode (median reported).")
flags.DEFINE_integer("warmup", 1, "Untimed calls after tracing.")
flags.DEFINE_float("time_cap_s", 40.0, "Stop repeating a mode once this much time was spent.")
flags.DEFINE_float("memory_budget_gb", 6.0, "Skip or kill configurations above this memory.")
flags.DEFINE_integer("config_timeout_s", 600, "Kill a configuration running longer than this.")
flags.DEFINE_boolean("jit_compile", False, "Run the layer under XLA (Keras' CPU default: off).")
flags.DEFINE_boolean("measure_peak", True,
                     "Measure the float32 matmul peak once per run (the roofline columns).")
flags.DEFINE_integer("peak_matmul_size", 2048, "Side of the square matmul timed for the peak.")
flags.DEFINE_string("output_dir", "runs/attention_benchmark",
                    "Where results go (relative paths: to the repository; the published table "
                    "is results/attention_benchmark).")
flags.DEFINE_string("worker", None, "Internal: run one configuration (JSON) and print JSON.")

FLAGS = flags.FLAGS
REPO = pathlib.Path(__file__).resolve().parents[1]
COLUMNS = ["variant", "length", "batch", "dropout", "status", "fwd_ms", "fwdbwd_ms",
           "fwd_peak_mb", "fwdbwd_peak_mb", "baseline_rss_mb", "fwd_growth_mb",
           "fwdbwd_growth_mb", "fwd_repeats", "fwdbwd_repeats", "estimate_mb", "note",
           "gflop_fwd_bwd", "achieved_gflops", "matmul_peak_gflops", "fraction_of_peak",
           "roofline_ms"]
RATIO_COLUMNS = ["speedup_fwd_ms", "speedup_fwdbwd_ms", "memory_ratio_vs_mha",
                 "max_speedup_vs_mha", "fwdbwd_vs_torch_sdpa", "growth_vs_torch_sdpa"]
VARIANTS = ("mha", "fused", "chunked", "favor", "linformer", "torch_sdpa")
QUADRATIC = {"mha", "fused"}
PEER = "torch_sdpa"  # what a PyTorch user runs instead: F.scaled_dot_product_attention


def row_key(cfg):
    return (cfg["variant"], int(cfg["length"]), int(cfg["batch"]), float(cfg["dropout"]))


def estimate_mb(cfg):
    """A rough upper estimate of a configuration's forward+backward memory, in MB."""
    b, n, h, d = cfg["batch"], cfg["length"], cfg["num_heads"], cfg["head_dim"]
    linear = 40 * b * n * h * d * 4  # activations, projections, gradients
    if cfg["variant"] in QUADRATIC or (cfg["variant"] == PEER and cfg["dropout"] > 0):
        per_matrix = b * h * n * n * 4
        quadratic = (6 if cfg["dropout"] > 0 else 4) * per_matrix
    elif cfg["variant"] == PEER:  # fused (flash) CPU kernel without dropout: O(n) memory
        quadratic = 0
    elif cfg["variant"] == "chunked":
        quadratic = 6 * b * h * n * cfg["chunk_size"] * 4
    elif cfg["variant"] == "favor":
        quadratic = 8 * b * h * n * cfg["num_features"] * 4
    else:
        quadratic = 6 * b * h * n * cfg["linformer_k"] * 4
    return (linear + quadratic) / 2**20 + 600  # + TensorFlow's own footprint


def _significant(value, digits=4):
    """`value` rounded to `digits` significant digits (tiny test configs stay non-zero)."""
    return float(f"{value:.{digits}g}")


def roofline_columns(cfg, row, peak_flops):
    """The analytic-FLOP and roofline columns of one row.

    Args:
        cfg: the configuration dict (variant, length, batch, num_heads, head_dim, num_features,
            linformer_k).
        row: its result row (`status`, `fwdbwd_ms` when measured).
        peak_flops: the matmul peak (FLOP/s) measured in this run, or None (not measured).

    Returns:
        dict: `gflop_fwd_bwd` always; `achieved_gflops` for measured rows; `matmul_peak_gflops`,
        `fraction_of_peak` and `roofline_ms` for measured rows when `peak_flops` is given.
    """
    from keras_effattn.training.benchmark import attention_flops

    variant = "mha" if cfg["variant"] == PEER else cfg["variant"]
    flops = attention_flops(variant, cfg["length"], batch=cfg["batch"],
                            num_heads=cfg["num_heads"], head_dim=cfg["head_dim"],
                            num_features=cfg["num_features"], linformer_k=cfg["linformer_k"],
                            mode="fwd_bwd")
    out = {"gflop_fwd_bwd": _significant(flops / 1e9)}
    if row.get("status") != "ok" or not row.get("fwdbwd_ms"):
        return out
    achieved = flops / (row["fwdbwd_ms"] / 1000.0)
    out["achieved_gflops"] = _significant(achieved / 1e9)
    if peak_flops:
        out["matmul_peak_gflops"] = _significant(peak_flops / 1e9)
        out["fraction_of_peak"] = _significant(achieved / peak_flops)
        out["roofline_ms"] = _significant(1000.0 * flops / peak_flops)
    return out


def make_layer(cfg):
    """The attention layer of a configuration."""
    import keras

    import keras_effattn

    mha_kwargs = {"num_heads": cfg["num_heads"], "key_dim": cfg["head_dim"], "dropout": cfg["dropout"]}
    variant = cfg["variant"]
    if variant == "mha":
        return keras.layers.MultiHeadAttention(**mha_kwargs)
    if variant == "fused":
        return keras_effattn.FusedAttention(**mha_kwargs)
    if variant == "chunked":
        return keras_effattn.FusedAttention(**mha_kwargs, chunk_size=cfg["chunk_size"])
    if variant == "favor":
        return keras_effattn.FavorAttention(**mha_kwargs, num_features=cfg["num_features"], seed=0)
    if variant == "linformer":
        return keras_effattn.LowRankAttention(**mha_kwargs, k=cfg["linformer_k"],
                                              max_length=cfg["length"], seed=0)
    raise ValueError(f"Unknown variant {variant!r}; use mha, fused, chunked, favor, linformer.")


def _median_ms(fn, repeats, warmup, cap_s):
    import numpy as np

    for _ in range(warmup):
        fn()
    times, spent = [], 0.0
    while len(times) < repeats and (spent < cap_s or len(times) < 1):
        start = time.perf_counter()
        result = fn()
        for value in result:  # synchronise: materialise every output
            np.asarray(value)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return 1000.0 * statistics.median(times), len(times)


def run_torch_config(cfg):
    """Measures the PyTorch peer in this process: the four projections of MultiHeadAttention
    around `torch.nn.functional.scaled_dot_product_attention` (all positions real, so no mask;
    dropout as configured), timed and measured as `run_config` measures the Keras layers."""
    import numpy as np
    import torch

    from keras_effattn.utils import memory

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    b, n, h, d = cfg["batch"], cfg["length"], cfg["num_heads"], cfg["head_dim"]
    width = h * d
    projections = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(4))
    x = torch.tensor(np.random.default_rng(0).normal(size=(b, n, width)).astype("float32"),
                     requires_grad=True)
    baseline = memory.current_rss_bytes()

    def attend(dropout):
        q, k, v = (p(x).view(b, n, h, d).transpose(1, 2) for p in projections[:3])
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return projections[3](y.transpose(1, 2).reshape(b, n, width))

    def forward():
        with torch.no_grad():
            return (attend(0.0),)

    def forward_backward():
        x.grad = None
        projections.zero_grad(set_to_none=True)
        loss = attend(cfg["dropout"]).square().mean()
        loss.backward()
        return (loss.detach(),)

    return {**_measure_modes(cfg, forward, forward_backward, baseline),
            "torch_version": torch.__version__}


def run_config(cfg):
    """Measures one configuration in this process; returns a result dict."""
    if cfg["variant"] == PEER:
        return run_torch_config(cfg)
    import numpy as np
    import tensorflow as tf

    from keras_effattn.utils import memory

    width = cfg["num_heads"] * cfg["head_dim"]
    x = tf.constant(np.random.default_rng(0).normal(
        size=(cfg["batch"], cfg["length"], width)).astype("float32"))
    mask = tf.ones((cfg["batch"], 1, cfg["length"]), tf.int32)  # KerasHub's padding-mask form
    layer = make_layer(cfg)
    layer.build(x.shape, x.shape)
    baseline = memory.current_rss_bytes()

    @tf.function(jit_compile=cfg["jit_compile"])
    def forward():
        return (layer(x, x, attention_mask=mask, training=False),)

    @tf.function(jit_compile=cfg["jit_compile"])
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, x, attention_mask=mask, training=True)
            loss = tf.reduce_mean(tf.square(y))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return _measure_modes(cfg, forward, forward_backward, baseline,
                          device_peak=memory.device_peak_bytes)


def _measure_modes(cfg, forward, forward_backward, baseline, device_peak=None):
    """Times both modes and reads their peak memory: `device_peak()` (bytes, or None on a CPU
    host) when given, else the host peak RSS and its growth over `baseline` bytes."""
    from keras_effattn.utils import memory

    result = {}
    for name, fn in (("fwd", forward), ("fwdbwd", forward_backward)):
        ms, count = _median_ms(fn, cfg["repeats"], cfg["warmup"], cfg["time_cap_s"])
        device_peak_bytes = device_peak() if device_peak is not None else None
        peak = device_peak_bytes if device_peak_bytes is not None else memory.peak_rss_bytes()
        result[f"{name}_ms"] = round(ms, 3)
        result[f"{name}_repeats"] = count
        result[f"{name}_peak_mb"] = round(peak / 2**20, 1)
        if device_peak_bytes is None:
            result[f"{name}_growth_mb"] = round((peak - baseline) / 2**20, 1)
    result["baseline_rss_mb"] = round(baseline / 2**20, 1)
    return result


def run_in_subprocess(cfg, budget_mb, timeout_s):
    """Runs `run_config` in a fresh process, killing it past the memory budget or timeout."""
    import psutil

    cmd = [sys.executable, "-m", "experiments.attention_benchmark", f"--worker={json.dumps(cfg)}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    watched = psutil.Process(proc.pid)
    start, killed = time.time(), None
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss
        except psutil.NoSuchProcess:
            break
        if rss > budget_mb * 2**20:
            killed = f"killed: RSS {rss / 2**20:.0f} MB passed the {budget_mb:.0f} MB budget"
        elif time.time() - start > timeout_s:
            killed = f"killed: ran past {timeout_s} s"
        if killed:
            proc.kill()
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if killed:
        return {"status": "skipped", "note": killed}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (err or out).strip().splitlines()[-1:] or ["no output"]
        return {"status": "error", "note": tail[0][:200]}
    return {"status": "ok", **json.loads(lines[-1])}


def build_configs(flag_values):
    """The list of configurations the flags describe (dropout-free rows for the exact kinds)."""
    shared = {k: flag_values[k] for k in ("num_heads", "head_dim", "chunk_size", "num_features",
                                          "linformer_k", "repeats", "warmup", "time_cap_s",
                                          "jit_compile")}
    dropouts = [float(d) for d in flag_values["dropouts"]]
    no_dropout = {int(n) for n in flag_values["no_dropout_lengths"]}
    configs = []
    for batch in (int(b) for b in flag_values["batch_sizes"]):
        for n in (int(n) for n in flag_values["lengths"]):
            pairs = [(v, d) for d in dropouts for v in flag_values["variants"]]
            if n in no_dropout and 0.0 not in dropouts:
                pairs += [(v, 0.0) for v in flag_values["variants"]
                          if v in ("mha", "fused", "chunked", PEER)]
            configs += [{"variant": v, "length": n, "batch": batch, "dropout": d, **shared}
                        for v, d in pairs]
    return configs


def add_ratios(rows):
    """Per row: the baseline's (mha, same length, batch, dropout) time and memory over its own,
    and the baseline's forward+backward time over this row's `roofline_ms`."""
    base = {(r["length"], r["batch"], r["dropout"]): r for r in rows
            if r["variant"] == "mha" and r["status"] == "ok"}
    for r in rows:
        b = base.get((r["length"], r["batch"], r["dropout"]))
        for key in ("fwd_ms", "fwdbwd_ms", "fwdbwd_growth_mb"):
            ratio = None
            if b is not None and r["status"] == "ok" and r.get(key) and b.get(key):
                ratio = round(b[key] / r[key], 3)
            r[f"speedup_{key}" if key.endswith("ms") else "memory_ratio_vs_mha"] = ratio
        bound = None
        if b is not None and r["status"] == "ok" and r.get("roofline_ms") and b.get("fwdbwd_ms"):
            bound = _significant(b["fwdbwd_ms"] / r["roofline_ms"])
        r["max_speedup_vs_mha"] = bound
    peers = {(r["length"], r["batch"], r["dropout"]): r for r in rows
             if r["variant"] == PEER and r["status"] == "ok"}
    for r in rows:
        peer = peers.get((r["length"], r["batch"], r["dropout"]))
        for key, column in (("fwdbwd_ms", "fwdbwd_vs_torch_sdpa"),
                            ("fwdbwd_growth_mb", "growth_vs_torch_sdpa")):
            ratio = None
            if peer is not None and r["status"] == "ok" and r.get(key) and peer.get(key):
                ratio = round(r[key] / peer[key], 3)
            r[column] = ratio
    return rows


def plot(rows, path):
    """Log-log forward+backward time and memory growth against length, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_effattn.utils import io

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant in sorted({r["variant"] for r in rows}):
        for dropout in sorted({r["dropout"] for r in rows}):
            pts = sorted((r["length"], r["fwdbwd_ms"], r["fwdbwd_growth_mb"]) for r in rows
                         if r["variant"] == variant and r["dropout"] == dropout
                         and r["batch"] == min(x["batch"] for x in rows) and r["status"] == "ok")
            if not pts or (dropout == 0.0 and len(pts) < 2):
                continue
            label = f"{variant} (dropout {dropout:g})"
            style = "-o" if dropout > 0 else ":x"
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            axes[1].plot([p[0] for p in pts], [max(p[2], 1.0) for p in pts], style, label=label)
    for ax, title, unit in ((axes[0], "forward+backward time", "ms (median)"),
                            (axes[1], "forward+backward peak memory growth", "MB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    io.save_figure(fig, path)


def format_table(rows):
    """The rows as a Markdown table (roofline cells empty where no peak was measured)."""
    header = ("variant", "n", "B", "drop", "status", "fwd ms", "f+b ms", "f+b MB",
              "speedup f+b", "mem ratio", "GFLOP f+b", "GFLOP/s", "% of peak", "roofline ms",
              "max speedup vs mha", "f+b vs torch", "mem vs torch")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in sorted(rows, key=lambda r: (r["batch"], r["dropout"] == 0, r["length"],
                                         r["variant"])):
        cells = (r["variant"], r["length"], r["batch"], r["dropout"], r["status"],
                 r.get("fwd_ms"), r.get("fwdbwd_ms"), r.get("fwdbwd_growth_mb"),
                 r.get("speedup_fwdbwd_ms"), r.get("memory_ratio_vs_mha"),
                 r.get("gflop_fwd_bwd"), r.get("achieved_gflops"),
                 None if r.get("fraction_of_peak") is None
                 else round(100 * r["fraction_of_peak"], 1),
                 r.get("roofline_ms"), r.get("max_speedup_vs_mha"),
                 r.get("fwdbwd_vs_torch_sdpa"), r.get("growth_vs_torch_sdpa"))
        lines.append(" | ".join("" if c is None else str(c) for c in cells))
    return "\n".join(lines)


def sweep(configs, output_dir, budget_mb, timeout_s, log=print, peak_fn=None):
    """Runs (or resumes) the sweep; writes results.json/csv and the PNG; returns the rows.

    Args:
        configs: list of configuration dicts (`build_configs`).
        output_dir: folder of results.json/csv and the PNG.
        budget_mb: memory budget; configurations estimated or growing above it are skipped.
        timeout_s: per-configuration time limit.
        log: callable receiving one line per finished row.
        peak_fn: callable returning the matmul peak in FLOP/s, called once before the first
            configuration that runs; None leaves the roofline columns empty.

    Returns:
        list of row dicts (resumed and new).
    """
    from keras_effattn.utils import io

    output_dir = pathlib.Path(output_dir)
    results_path = output_dir / "results.json"
    rows = io.read_json(results_path)["rows"] if results_path.is_file() else []
    done = {row_key(r) for r in rows if r["status"] in ("ok", "skipped")}
    rows = [r for r in rows if row_key(r) in done]
    peak, peak_measured = None, False
    for cfg in configs:
        if row_key(cfg) in done:
            continue
        est = estimate_mb(cfg)
        base = {k: cfg[k] for k in ("variant", "length", "batch", "dropout")}
        if est > budget_mb:
            row = {**base, "status": "skipped", "estimate_mb": round(est),
                   "note": f"estimated {est / 1024:.1f} GB > budget {budget_mb / 1024:.1f} GB"}
        else:
            if peak_fn is not None and not peak_measured:
                peak, peak_measured = peak_fn(), True
                log(f"float32 matmul peak (this run): {peak / 1e9:.1f} GFLOP/s")
            row = {**base, "estimate_mb": round(est),
                   **run_in_subprocess(cfg, budget_mb, timeout_s)}
        row.update(roofline_columns(cfg, row, peak))
        log(json.dumps(row))
        rows.append(row)
        rows = add_ratios(rows)
        io.write_json(results_path, {"rows": rows})
        io.write_csv(output_dir / "results.csv", rows, COLUMNS + RATIO_COLUMNS)
    plot(rows, output_dir / "attention_benchmark.png")
    return rows


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps(run_config(json.loads(FLAGS.worker))))
        return
    values = {name: FLAGS[name].value for name in FLAGS if name in _OWN_FLAGS}
    unknown = sorted(set(values["variants"]) - set(VARIANTS))
    if unknown:
        raise ValueError(f"Unknown --variants {unknown}; choose from {list(VARIANTS)}.")
    if PEER in values["variants"] and importlib.util.find_spec("torch") is None:
        values["variants"] = [v for v in values["variants"] if v != PEER]
        print(f"note: {PEER} left out: PyTorch is not installed (pip install torch).")
    if values["peak_matmul_size"] < 1:
        raise ValueError(f"--peak_matmul_size must be >= 1, got {values['peak_matmul_size']}.")
    try:  # every number list is read before anything is written
        configs = build_configs(values)
    except ValueError as error:
        raise common.UsageError(
            f"{error}: --lengths, --batch_sizes and --no_dropout_lengths take integers, "
            "--dropouts numbers, e.g. --lengths=128,512."
        ) from None
    if any(c["length"] < 1 or c["batch"] < 1 or not 0 <= c["dropout"] < 1 for c in configs):
        raise common.UsageError("--lengths and --batch_sizes must be >= 1 and --dropouts in "
                                "[0, 1).")
    from keras_effattn.utils import io, metadata

    output_dir = pathlib.Path(FLAGS.output_dir)
    if not output_dir.is_absolute():
        output_dir = REPO / output_dir
    config_path = output_dir / "config.json"
    runs = io.read_json(config_path).get("runs", []) if config_path.is_file() else []
    runs.append({"flags": values, **metadata.run_metadata()})  # one entry per (resumed) run
    io.write_json(config_path, {"runs": runs})
    peaks = []

    def measure_peak():
        from keras_effattn.training.benchmark import matmul_peak_flops

        peaks.append(matmul_peak_flops(n=values["peak_matmul_size"]))
        return peaks[-1]

    rows = sweep(configs, output_dir, FLAGS.memory_budget_gb * 1024,
                 FLAGS.config_timeout_s, peak_fn=measure_peak if values["measure_peak"] else None)
    if peaks:
        runs[-1]["matmul_peak_gflops"] = _significant(peaks[0] / 1e9)
        io.write_json(config_path, {"runs": runs})
        print(f"float32 matmul peak measured in this run: {peaks[0] / 1e9:.1f} GFLOP/s "
              "(roofline_ms = GFLOP f+b / peak)")
    print(format_table(rows))


_OWN_FLAGS = ("variants", "lengths", "batch_sizes", "dropouts", "no_dropout_lengths",
              "num_heads", "head_dim", "chunk_size", "num_features", "linformer_k", "repeats",
              "warmup", "time_cap_s", "memory_budget_gb", "config_timeout_s", "jit_compile",
              "output_dir", "measure_peak", "peak_matmul_size")

if __name__ == "__main__":
    common.run(main)
