"""Training-throughput measurement: samples/s, achieved FLOP/s and peak memory of `model.fit`.

`measure_training` times `fit` on random token ids for one model size and variant; `matmul_peak_flops`
measures the machine's float32 matmul peak in the same process, so the fraction of peak compares
like with like. FLOPs are counted analytically: a training step costs three forward passes
(forward, and a backward of twice the forward), and a forward pass costs ``2 * dense_params``
per token plus ``4 * T * hidden`` per token per layer for the two attention matmuls.

Example:

>>> flops = training_flops_per_step({"num_layers": 1, "num_heads": 2, "hidden_dim": 8,
...                                  "intermediate_dim": 16, "sequence_length": 4}, batch_size=2)
>>> flops  # 3 * (2 * (4*8*8 + 2*8*16) + 4*4*8 * 1 layer) * (2*4 tokens)
27648
"""

import statistics
import time

import numpy as np

from keras_effattn.utils.memory import MemoryMeter

VARIANTS = ("stock", "engine_xla", "engine_graph", "engine_bf16")
COLUMNS = ("size", "variant", "same_maths", "samples_per_s", "ratio_to_stock",
           "achieved_gflops", "fraction_of_peak", "matmul_peak_gflops", "step_seconds",
           "host_peak_rss_mb", "device_peak_mb", "batch_size", "sequence_length")


def training_flops_per_step(size, batch_size):
    """Analytic FLOPs of one training step of an encoder classifier (embeddings excluded)."""
    d, ff, layers = size["hidden_dim"], size["intermediate_dim"], size["num_layers"]
    tokens = batch_size * size["sequence_length"]
    dense = layers * (4 * d * d + 2 * d * ff)
    attention = 4 * size["sequence_length"] * d * layers
    return 3 * (2 * dense + attention) * tokens


ATTENTION_FLOP_VARIANTS = ("mha", "exact", "fused", "chunked", "favor", "linformer")
ATTENTION_FLOP_MODES = ("fwd", "fwd_bwd")


def attention_flops(variant, length, batch=1, num_heads=12, head_dim=64, num_features=256,
                    linformer_k=256, mode="fwd_bwd", model_dim=None):
    """Analytic matmul FLOPs of one self-attention layer call on a ``[B, n, D]`` input.

    Each ``[m, k] x [k, p]`` product counts ``2·m·k·p`` FLOPs. Counted (N heads of size H,
    ``N·H`` the projected width):

    - every variant: the Q, K, V projections (D -> N·H) and the output projection (N·H -> D),
      ``4 · 2·B·n·D·N·H``;
    - exact attention ("mha", "exact", "fused", "chunked"; key chunking changes memory, not
      arithmetic): Q Kᵀ and P V, ``2 · 2·B·N·n²·H``;
    - "favor" (M random features): the feature maps W Q and W K, ``2 · 2·B·N·n·M·H``, and the two
      linear-attention products φ(K)ᵀ V and φ(Q) (φ(K)ᵀ V), ``2 · 2·B·N·n·M·H``;
    - "linformer" (projected length k): the sequence projections Eᵀ K and Fᵀ V,
      ``2 · 2·B·k·n·N·H``, and the reduced Q K'ᵀ and P V', ``2 · 2·B·N·n·k·H``.

    Not counted: biases, scaling, softmax, exp, masks, dropout and FAVOR+'s normaliser
    φ(Q) (φ(K)ᵀ 1) (a matrix-vector product, 1/H of the products above).

    Convention: the backward pass costs 2× the forward matmul FLOPs (one product each for the
    gradients of both operands, inputs and weights alike), so ``"fwd_bwd"`` = 3 × ``"fwd"``, as
    in `training_flops_per_step`. This over-counts FAVOR+ slightly: its random features are
    fixed, so their gradient (``2·B·N·n·M·H`` per feature map) is never needed.

    Args:
        variant: one of `ATTENTION_FLOP_VARIANTS`.
        length: int n > 0, sequence length (queries = keys).
        batch: int B > 0.
        num_heads: int N > 0.
        head_dim: int H > 0.
        num_features: int M > 0, FAVOR+ random features (used by "favor" only).
        linformer_k: int k > 0, Linformer projected length (used by "linformer" only).
        mode: "fwd" (forward) or "fwd_bwd" (forward + backward).
        model_dim: int D > 0, the input and output width; defaults to ``N·H``.

    Returns:
        int, the FLOPs.

    Example (the exact forward at n = 512, D = 768: ``4·2·512·768² + 2·2·12·512²·64``):

    >>> attention_flops("fused", 512, num_heads=12, head_dim=64, mode="fwd")
    3221225472
    """
    if variant not in ATTENTION_FLOP_VARIANTS:
        raise ValueError(f"variant must be one of {ATTENTION_FLOP_VARIANTS}, got {variant!r}.")
    if mode not in ATTENTION_FLOP_MODES:
        raise ValueError(f"mode must be one of {ATTENTION_FLOP_MODES}, got {mode!r}.")
    model_dim = num_heads * head_dim if model_dim is None else model_dim
    sizes = {"length": length, "batch": batch, "num_heads": num_heads, "head_dim": head_dim,
             "num_features": num_features, "linformer_k": linformer_k, "model_dim": model_dim}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    b, n, h, dh, width = batch, length, num_heads, head_dim, num_heads * head_dim
    projections = 4 * 2 * b * n * model_dim * width
    if variant == "favor":
        m = num_features
        core = 2 * (2 * b * h * n * m * dh) + 2 * (2 * b * h * n * m * dh)
    elif variant == "linformer":
        k = linformer_k
        core = 2 * (2 * b * k * n * width) + 2 * (2 * b * h * n * k * dh)
    else:
        core = 2 * (2 * b * h * n * n * dh)
    forward = projections + core
    return forward if mode == "fwd" else 3 * forward


def matmul_peak_flops(n=2048, repeats=5):
    """The best float32 matmul FLOP/s of an n x n product (graph/oneDNN and XLA; median of
    repeats each)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    best = 0.0
    for jit in (False, True):
        matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y), jit_compile=jit)
        matmul(a, b).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def build_model(size, variant, vocabulary, seed):
    """An uncompiled classifier on token ids for `variant` (see `VARIANTS`)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    config = {k: size[k] for k in ("num_layers", "num_heads", "hidden_dim", "intermediate_dim")}
    config.update(max_sequence_length=size["sequence_length"], vocabulary_size=vocabulary)
    if variant == "stock":
        backbone = keras_hub.models.DistilBertBackbone(**config)
        return keras_hub.models.DistilBertTextClassifier(backbone, 2, preprocessor=None)
    from keras_effattn.models import EffAttnTextClassifier, load_backbone

    backbone = load_backbone(config, attention="exact")
    return EffAttnTextClassifier(backbone, 2, preprocessor=None, pooling="cls")


def measure_training(size, variant, batch_size, steps, repeats, vocabulary, seed=0):
    """Times `fit` for one size and variant; returns a row of `COLUMNS` (without ratios)."""
    import keras
    import tensorflow as tf

    from keras_effattn.training.precision import precision_scope

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    length = size["sequence_length"]
    rng = np.random.default_rng(seed)
    features = {
        "token_ids": rng.integers(1000, vocabulary, (batch_size, length), dtype=np.int32),
        "padding_mask": np.ones((batch_size, length), dtype=bool),
    }
    labels = rng.integers(0, 2, (batch_size,), dtype=np.int32)
    data = tf.data.Dataset.from_tensors((features, labels)).repeat()
    policy = "mixed_bfloat16" if variant == "engine_bf16" else "float32"
    with precision_scope(policy):
        model = build_model(size, variant, vocabulary, seed)
        compile_args = {}
        if variant != "stock":
            compile_args["jit_compile"] = variant == "engine_xla"
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **compile_args,
        )
        model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)  # trace + compile
        meter = MemoryMeter().start()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            times.append((time.perf_counter() - start) / steps)
        memory = meter.stop()
    step = statistics.median(times)
    flops = training_flops_per_step(size, batch_size)
    return {
        "variant": variant,
        "same_maths": variant != "engine_bf16",
        "samples_per_s": batch_size / step,
        "achieved_gflops": flops / step / 1e9,
        "step_seconds": step,
        "host_peak_rss_mb": memory["host_peak_rss_mb"],
        "device_peak_mb": memory["device_peak_mb"],
        "batch_size": batch_size,
        "sequence_length": length,
        "jit_compile": bool(model.jit_compile),
    }


def with_ratios(rows):
    """Adds ``ratio_to_stock`` (samples/s over the same size's stock row) to each row."""
    stock = {r["size"]: r["samples_per_s"] for r in rows if r["variant"] == "stock"}
    out = []
    for row in rows:
        base = stock.get(row["size"])
        out.append({**row, "ratio_to_stock": row["samples_per_s"] / base if base else None})
    return out


def markdown_table(rows, peak):
    """The results as a Markdown table (with a "× torch" column when rows carry
    ``ratio_to_torch``, the PyTorch peer's ratio)."""
    peer = any(r.get("ratio_to_torch") is not None for r in rows)
    lines = [
        f"float32 matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s (best of the "
        "measurements taken beside each row; each row's fraction uses its own)",
        "",
        ("| size | variant | XLA | same maths | samples/s | × stock | "
         + ("× torch | " if peer else "") + "GFLOP/s | % of peak | peak RSS (MB) |"),
        "| --- " * (10 if peer else 9) + "|",
    ]
    for r in rows:
        ratio = "n/a" if r["ratio_to_stock"] is None else f"{r['ratio_to_stock']:.2f}"
        lines.append(
            f"| {r['size']} (T={r['sequence_length']}, B={r['batch_size']}) | {r['variant']} | "
            f"{'yes' if r.get('jit_compile') else 'no'} | "
            f"{'yes' if r['same_maths'] else 'no (bf16)'} | {r['samples_per_s']:.2f} | "
            f"{ratio} | "
            + (f"{r['ratio_to_torch']:.2f} | " if peer and r.get("ratio_to_torch") is not None
               else "n/a | " if peer else "")
            + f"{r['achieved_gflops']:.1f} | {100 * r['fraction_of_peak']:.0f}% | "
            f"{r['host_peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"
