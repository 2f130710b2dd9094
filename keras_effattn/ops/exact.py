"""Exact softmax attention: a fused dense path and a chunked, memory-linear path.

Shape letters: B batch, T query length, S key length, N heads, H key head size, Hv value head
size, C chunk (key block) size.

`fused_attention` computes softmax(Q Kᵀ) V in one pass that XLA fuses (scores, mask, softmax in
float32, dropout, weighted sum) and never builds anything larger than [B, N, T, S].

`chunked_attention` walks the keys in blocks of C with an online softmax (Rabe & Staats 2021;
Dao et al. 2022): a running max m, normaliser l and accumulator per query row. Only O(T·C)
values live at a time. Its gradient (`tf.custom_gradient`) keeps only the output and the
log-sum-exp per row and recomputes each block's probabilities in the backward pass, so training
memory is linear in the sequence length as well. Dropout draws each block's keep mask from a
stateless generator seeded with (seed, block index), so the backward pass regenerates the very
same mask. Keys are padded to a multiple of C internally and the padding is masked out, so any
length works.

References:
    Rabe & Staats, "Self-attention Does Not Need O(n²) Memory", 2021, arXiv:2112.05682.
    Dao et al., "FlashAttention", NeurIPS 2022, arXiv:2205.14135.
"""

import contextlib
import threading
from typing import NamedTuple

import tensorflow as tf
from keras import ops
# TensorFlow's wrappers of XLA ops (the XlaDynamicUpdateSlice op has no tf.raw_ops entry).
from tensorflow.compiler.tf2xla.python import xla as tf2xla

from keras_effattn.ops import masks as masks_lib


_SCOPE = threading.local()
# Query rows per tile of `chunked_attention`: [B, N, 1024, C] float32 score blocks (12 MB per
# head group at C=256) keep the working set small while each block matmul stays large.
DEFAULT_QUERY_CHUNK = 1024


@contextlib.contextmanager
def without_xla():
    """Within this block (this thread), `chunked_attention` with ``jit_compile="auto"`` builds
    plain TensorFlow ops, no XLA clusters: for graph converters such as tf2onnx, which cannot
    read a compiled function call.

    Example:
    >>> with without_xla():
    ...     pass
    """
    previous = getattr(_SCOPE, "without_xla", False)
    _SCOPE.without_xla = True
    try:
        yield
    finally:
        _SCOPE.without_xla = previous


def _check_dropout(dropout_rate):
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}.")


def attention_probs(query, key, mask_parts=None, scale=None):
    """Softmax attention probabilities ``[B, N, T, S]`` in float32 (fully masked rows zero).

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, N, H]``.
        mask_parts: a `MaskParts`, a keep-mask tensor or None.
        scale: float; defaults to ``1 / sqrt(H)``.
    """
    if scale is None:
        scale = 1.0 / float(query.shape[-1]) ** 0.5
    query = ops.multiply(query, ops.cast(scale, query.dtype))
    scores = ops.cast(ops.einsum("btnh,bsnh->bnts", query, key), "float32")
    parts = masks_lib.as_mask_parts(mask_parts, query.shape[1], key.shape[1])
    keep = masks_lib.dense_keep(parts, ops.shape(query)[1], ops.shape(key)[1])
    if keep is None:
        return ops.softmax(scores, axis=-1)
    keep = ops.expand_dims(keep, 1)
    probs = ops.softmax(ops.where(keep, scores, masks_lib.NEG_INF), axis=-1)
    return ops.where(keep, probs, 0.0)


def fused_attention(
    query,
    key,
    value,
    mask_parts=None,
    scale=None,
    dropout_rate=0.0,
    seed=None,
    training=False,
):
    """Exact softmax attention in one XLA-fusable pass.

    Args:
        query: ``[B, T, N, H]`` in the compute dtype.
        key: ``[B, S, N, H]``.
        value: ``[B, S, N, Hv]``.
        mask_parts: a `MaskParts`, a keep mask (``[B, S]``, ``[B, 1, S]``, ``[B, T, S]``) or None.
        scale: float; defaults to ``1 / sqrt(H)``.
        dropout_rate: float in [0, 1), applied to the probabilities when `training` (see
            `dropout_scale`).
        seed: a `keras.random.SeedGenerator` or int for the dropout.
        training: bool.

    Returns:
        ``(output [B, T, N, Hv] in value's dtype, probabilities [B, N, T, S] float32)``.

    Example:
    >>> import numpy as np
    >>> q = np.random.rand(2, 5, 3, 4).astype("float32")
    >>> out, _ = fused_attention(q, q, q)
    >>> tuple(out.shape)
    (2, 5, 3, 4)
    """
    _check_dropout(dropout_rate)
    probs = attention_probs(query, key, mask_parts, scale)
    used = probs
    if training and dropout_rate > 0.0:
        used = probs * dropout_scale(_seed_tensor(seed), tf.shape(probs), dropout_rate)
    out = ops.einsum("bnts,bsnh->btnh", ops.cast(used, value.dtype), value)
    return out, probs


def _seed_tensor(seed):
    if seed is None:
        seed = 0
    if isinstance(seed, int):
        return tf.constant([seed, 0], dtype=tf.int32)
    if hasattr(seed, "next"):  # keras.random.SeedGenerator
        seed = seed.next()
    return tf.cast(tf.convert_to_tensor(seed), tf.int32)


def dropout_scale(seed, shape, rate):
    """Dropout multipliers (0 or 1 / (1 - rate')) of `shape` from a stateless generator.

    Each decision uses 16 random bits (two per 32-bit draw, half the generator work of a float
    uniform per element): an element is dropped when its bits fall below round(rate · 65536),
    so the effective rate rate' is `rate` rounded to a multiple of 1/65536 (0.1 -> 0.100006).

    Args:
        seed: int32 ``[2]`` tensor.
        shape: the output shape (a list or 1-D int tensor; any last dimension).
        rate: float in [0, 1).
    """
    threshold = int(round(rate * 65536.0))
    shape = tf.cast(shape, tf.int32)
    last = shape[-1]
    draw_shape = tf.concat([shape[:-1], [(last + 1) // 2]], axis=0)
    bits = tf.random.stateless_uniform(draw_shape, seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32)
    halves = tf.bitcast(bits, tf.uint16)  # [..., ceil(last / 2), 2]
    halves = tf.reshape(halves, tf.concat([shape[:-1], [2 * ((last + 1) // 2)]], axis=0))
    halves = halves[..., :last]
    keep = tf.cast(halves, tf.int32) >= threshold
    return tf.where(keep, 65536.0 / (65536.0 - threshold), 0.0)


def _block_dropout_scale(seed, block, shape, rate, tile=0):
    """Dropout multipliers for key block `block` of query tile `tile`, regenerated identically
    in backward."""
    block_seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(block, tf.int32))
    block_seed = tf.random.experimental.stateless_fold_in(block_seed, tf.cast(tile, tf.int32))
    return dropout_scale(block_seed, shape, rate)


def effective_chunk(key_len, chunk_size):
    """The block size used: `chunk_size`, evened out over the blocks when the length is static.

    S = 257 with chunk_size 256 gives two blocks of 129 (one padded key) instead of 256 + 256.
    """
    if key_len is None:
        return chunk_size
    blocks = -(-key_len // chunk_size)
    return -(-key_len // blocks)


def chunked_dropout_scale(seed, shape, chunk_size, rate, query_chunk_size=DEFAULT_QUERY_CHUNK):
    """The full ``[B, N, T, S]`` dropout scale `chunked_attention` uses (for tests).

    Args:
        seed: int32 ``[2]`` seed tensor, as `chunked_attention` receives it.
        shape: ``(B, N, T, S)``.
        chunk_size: int, the key block size C.
        rate: float dropout rate.
        query_chunk_size: int or None, the query tile size (as `chunked_attention`'s).
    """
    b, n, t, s = shape
    chunk_size = effective_chunk(s, chunk_size)
    tile = effective_chunk(t, query_chunk_size or t)
    seed = _seed_tensor(seed)
    rows = [
        tf.concat([_block_dropout_scale(seed, j, (b, n, tile, chunk_size), rate, i)
                   for j in range(-(-s // chunk_size))], axis=-1)
        for i in range(-(-t // tile))
    ]
    return tf.concat(rows, axis=-2)[:, :, :t, :s]


def chunked_attention(
    query,
    key,
    value,
    mask_parts=None,
    chunk_size=256,
    scale=None,
    dropout_rate=0.0,
    seed=None,
    training=False,
    jit_compile="auto",
    query_chunk_size=DEFAULT_QUERY_CHUNK,
):
    """Exact softmax attention over key blocks with an online softmax and a recomputing backward.

    Queries are processed in tiles of at most `query_chunk_size` rows, and each tile walks the
    keys in blocks of `chunk_size`, so peak memory (forward and backward) is
    O(B·N·(T·H + Tq·C)) instead of O(B·N·T·S): beyond the inputs, outputs and gradients
    themselves, only one [B, N, Tq, C] block of scores lives at a time. Tiles and blocks are
    sliced from the inputs step by step (no blocked copies), and under XLA the output and the
    gradients are written in place in their final layout (BUILD_NOTES: growth within 1.8× of
    PyTorch SDPA's at n = 4096-16384 on a CPU).

    Args:
        query: ``[B, T, N, H]`` in the compute dtype.
        key: ``[B, S, N, H]``.
        value: ``[B, S, N, Hv]``.
        mask_parts: a `MaskParts`, a keep mask or None (causal and sliding-window parts are
            built per block from positions, never as a T×S tensor).
        chunk_size: int > 0, the largest key block C (evened out, see `effective_chunk`).
        scale: float; defaults to ``1 / sqrt(H)``.
        dropout_rate: float in [0, 1), applied to the probabilities when `training` (see
            `dropout_scale`).
        seed: a `keras.random.SeedGenerator`, an int or an int ``[2]`` tensor.
        training: bool.
        jit_compile: ``"auto"`` (default), True or False: compile the block loops (forward and
            backward) with XLA. XLA fuses each block's mask, exponent and sums into the
            matmuls' neighbours instead of streaming [B, N, T, C] tensors through memory
            between TensorFlow kernels (1.5× faster forward+backward at n=8192 on a CPU,
            BUILD_NOTES). ``"auto"`` compiles unless dropout is active (XLA's random numbers
            differ from TensorFlow's kernels, which `chunked_dropout_scale` reproduces, and
            XLA made MultiHeadAttention with dropout ~28× slower on a CPU, BUILD_NOTES) or
            inside `without_xla` (ONNX export).
        query_chunk_size: int > 0 or None, default 1024: the largest query tile Tq (evened
            out like the key blocks); None keeps all T queries in one tile.

    Returns:
        ``[B, T, N, Hv]`` in value's dtype. Equal (to float32 rounding) to `fused_attention`
        with the dropout keep mask `chunked_dropout_scale` gives.

    Example:
    >>> import numpy as np
    >>> q = np.random.rand(1, 7, 2, 4).astype("float32")
    >>> tuple(chunked_attention(q, q, q, chunk_size=3).shape)
    (1, 7, 2, 4)
    """
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
    if query_chunk_size is not None and (
            isinstance(query_chunk_size, bool) or not isinstance(query_chunk_size, int)
            or query_chunk_size <= 0):
        raise ValueError(
            f"query_chunk_size must be a positive int or None, got {query_chunk_size!r}.")
    if jit_compile not in ("auto", True, False):
        raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}.")
    _check_dropout(dropout_rate)
    if scale is None:
        scale = 1.0 / float(query.shape[-1]) ** 0.5
    query = tf.convert_to_tensor(query)
    key = tf.convert_to_tensor(key)
    value = tf.convert_to_tensor(value)
    parts = masks_lib.as_mask_parts(mask_parts, query.shape[1], key.shape[1])
    chunk_size = effective_chunk(key.shape[1], chunk_size)
    tile = query_chunk_size
    if tile is None:
        if query.shape[1] is None:
            raise ValueError("query_chunk_size=None needs a static query length; pass an int.")
        tile = query.shape[1]
    tile = effective_chunk(query.shape[1], tile)
    rate = float(dropout_rate) if training else 0.0
    seed_t = _seed_tensor(seed) if rate > 0.0 else None
    use_xla = jit_compile
    if jit_compile == "auto":
        use_xla = rate == 0.0 and not getattr(_SCOPE, "without_xla", False)
    dtype = value.dtype
    heads = query.shape[2]
    key_mask = tf.cast(parts.key, tf.bool) if parts.key is not None else None
    query_mask = tf.cast(parts.query, tf.bool) if parts.query is not None else None
    dense_mask = tf.cast(parts.dense, tf.bool) if parts.dense is not None else None
    # Key padding alone (KerasHub's mask) rides in the score matmul: a ones column on the
    # queries meets a 0 / NEG_INF column on the keys, so no [B, N, Tq, C] pass applies the
    # mask. float16 cannot hold NEG_INF, so there (and for other masks) a where() applies it.
    key_bias = parts.is_padding_only and parts.query is None and dtype != tf.float16

    def prepare(query, k, v):
        """Tile and block slicing, masks and scores, from shapes known inside (XLA needs them
        static). Tiles and blocks are sliced from the [B, T|S, N, H] inputs as they are needed:
        no blocked or transposed copy of Q, K or V is made."""
        batch, t_len, s_len = tf.shape(query)[0], tf.shape(query)[1], tf.shape(k)[1]
        num_blocks = (s_len + chunk_size - 1) // chunk_size
        num_tiles = (t_len + tile - 1) // tile
        pad, t_extra = num_blocks * chunk_size - s_len, num_tiles * tile - t_len

        # Per-block masks: [nk, B, C] key padding, [nq, B, 1, Tq, 1] query padding and
        # [nq, nk, B, Tq|1, C] dense part.
        key_keep = key_mask if key_mask is not None else tf.ones([batch, s_len], tf.bool)
        key_keep = tf.broadcast_to(key_keep, [batch, s_len])
        key_keep = tf.pad(key_keep, [[0, 0], [0, pad]], constant_values=False)
        key_keep = tf.transpose(tf.reshape(key_keep, [batch, num_blocks, chunk_size]), [1, 0, 2])
        query_keep = None
        if query_mask is not None:
            query_keep = tf.pad(tf.broadcast_to(query_mask, [batch, t_len]),
                                [[0, 0], [0, t_extra]], constant_values=False)
            query_keep = tf.transpose(tf.reshape(query_keep, [batch, num_tiles, tile]), [1, 0, 2])
            query_keep = query_keep[:, :, None, :, None]
        dense = None
        if dense_mask is not None:
            dense = dense_mask
            rows = 1
            if dense_mask.shape[1] != 1:
                dense = tf.pad(tf.broadcast_to(dense, [tf.shape(dense)[0], t_len, s_len]),
                               [[0, 0], [0, t_extra], [0, 0]], constant_values=False)
                rows = tile
            dense = tf.pad(dense, [[0, 0], [0, 0], [0, pad]], constant_values=False)
            dense = tf.reshape(dense, [tf.shape(dense)[0], -1, rows, num_blocks, chunk_size])
            dense = tf.transpose(dense, [1, 3, 0, 2, 4])  # [nq|1, nk, B, Tq|1, C]
        offsets = tf.range(tile)

        def block_keep(i, j):
            keep = key_keep[j][:, None, None, :]  # [B, 1, 1, C]
            if query_keep is not None:
                keep = tf.logical_and(keep, query_keep[i])
            if dense is not None:
                rows_i = dense[tf.minimum(i, tf.shape(dense)[0] - 1)]
                keep = tf.logical_and(keep, rows_i[j][:, None, :, :])
            if parts.causal or parts.window is not None:
                positions = offsets + i * tile
                cols = tf.range(chunk_size) + j * chunk_size
                if parts.causal:
                    keep = tf.logical_and(keep, (positions[:, None] >= cols[None, :])[None, None])
                if parts.window is not None:
                    near = tf.abs(positions[:, None] - cols[None, :]) < parts.window
                    keep = tf.logical_and(keep, near[None, None])
            return keep

        # Padding to whole tiles and blocks (a copy only when the length does not divide).
        q_pad, k_pad, v_pad = _pad_rows(query, t_extra), _pad_rows(k, pad), _pad_rows(v, pad)

        def q_tile(i):  # [B, N, Tq, H], scaled
            q_i = tf.transpose(_row_slice(q_pad, i * tile, tile), [0, 2, 1, 3])
            return q_i * tf.cast(scale, q_i.dtype)

        def kv_block(j):  # [B, N, C, H], [B, N, C, Hv]
            return (tf.transpose(_row_slice(k_pad, j * chunk_size, chunk_size), [0, 2, 1, 3]),
                    tf.transpose(_row_slice(v_pad, j * chunk_size, chunk_size), [0, 2, 1, 3]))

        def scores(i, j, q_i, k_j):  # [B, N, Tq, C] float32, masked keys NEG_INF
            if key_bias:
                # The key padding rides in the matmul: a ones column on the queries meets a
                # 0 / NEG_INF column on the keys (per tile and block, never a whole copy).
                bias = tf.cast(tf.where(key_keep[j], 0.0, masks_lib.NEG_INF), dtype)  # [B, C]
                bias = tf.broadcast_to(bias[:, None, :, None],
                                       tf.concat([tf.shape(k_j)[:-1], [1]], axis=0))
                q_i = tf.concat([q_i, tf.ones_like(q_i[..., :1])], axis=-1)
                k_j = tf.concat([k_j, bias], axis=-1)
            s = tf.cast(tf.matmul(q_i, k_j, transpose_b=True), tf.float32)
            return s if key_bias else tf.where(block_keep(i, j), s, masks_lib.NEG_INF)

        return _Blocks(batch, t_len, s_len, num_tiles, num_blocks, q_tile, kv_block, scores)

    def forward(query, k, v):
        blocks = prepare(query, k, v)
        shape = [blocks.batch, heads, tile]
        rows = _RowSlices(use_xla, blocks.num_tiles, tile)

        def tile_step(i, outs, lses):
            q_i = blocks.q_tile(i)
            init = (
                tf.fill(shape, tf.constant(masks_lib.NEG_INF, tf.float32)),
                tf.zeros(shape, tf.float32),
                tf.zeros(shape + [v.shape[-1]], tf.float32),
            )

            def step(j, m, norm, acc):
                k_j, v_j = blocks.kv_block(j)
                s = blocks.scores(i, j, q_i, k_j)
                m_new = tf.maximum(m, tf.reduce_max(s, axis=-1))
                # Masked scores are NEG_INF, so exp() zeroes them once the row has seen a real
                # key; a row whose keys so far were all masked collects junk that the next real
                # key's alpha = exp(NEG_INF - m) wipes, or that has_keys discards at the end.
                p = tf.exp(s - m_new[..., None])
                alpha = tf.exp(m - m_new)
                norm = norm * alpha + tf.reduce_sum(p, axis=-1)
                if rate > 0.0:
                    p = p * _block_dropout_scale(seed_t, j, tf.shape(p), rate, i)
                acc = acc * alpha[..., None] + tf.cast(
                    tf.matmul(tf.cast(p, dtype), v_j), tf.float32
                )
                return j + 1, m_new, norm, acc

            # parallel_iterations=1: otherwise TensorFlow runs up to 10 blocks ahead and holds
            # their [B, N, Tq, C] intermediates at once, losing the memory bound.
            _, m, norm, acc = tf.while_loop(lambda j, *_: j < blocks.num_blocks, step,
                                            (tf.constant(0),) + init, parallel_iterations=1)
            has_keys = m > 0.5 * masks_lib.NEG_INF
            safe_norm = tf.where(has_keys, norm, 1.0)
            out = tf.where(has_keys[..., None], acc / safe_norm[..., None], 0.0)  # [B,N,Tq,Hv]
            lse = tf.where(has_keys, m + tf.math.log(safe_norm), 0.0)  # [B, N, Tq]
            return (i + 1, rows.write(outs, i, tf.transpose(out, [0, 2, 1, 3])),
                    rows.write(lses, i, tf.transpose(lse, [0, 2, 1])[..., None]))

        init = (tf.constant(0),
                rows.empty([blocks.batch, heads, v.shape[-1]], tf.float32),
                rows.empty([blocks.batch, heads, 1], tf.float32))
        _, outs, lses = tf.while_loop(lambda i, *_: i < blocks.num_tiles, tile_step, init,
                                      parallel_iterations=1)
        # [B, T, N, Hv] and [B, T, N] float32.
        return (rows.result(outs)[:, :blocks.t_len],
                rows.result(lses)[:, :blocks.t_len, :, 0])

    def backward(d_out, query, k, v, out, lse):
        blocks = prepare(query, k, v)
        # Per query row: delta = rowsum(dO ∘ O), the softmax's Jacobian term. [B, T|T+, N].
        extra = blocks.num_tiles * tile - blocks.t_len
        delta = _pad_rows(tf.reduce_sum(tf.cast(d_out, tf.float32) * out, axis=-1), extra)
        lse = _pad_rows(lse, extra)
        d_out = _pad_rows(tf.cast(d_out, dtype), extra)
        q_rows = _RowSlices(use_xla, blocks.num_tiles, tile)
        kv_rows = _RowSlices(use_xla, blocks.num_blocks, chunk_size)

        def per_row(x, i):  # [B, T+, N] -> [B, N, Tq, 1]
            return tf.transpose(_row_slice(x, i * tile, tile), [0, 2, 1])[..., None]

        def tile_step(i, d_q_rows, d_k_sum, d_v_sum):
            q_i = blocks.q_tile(i)
            d_out_i = tf.transpose(_row_slice(d_out, i * tile, tile), [0, 2, 1, 3])
            lse_i, delta_i = per_row(lse, i), per_row(delta, i)

            def back_step(j, d_q, d_k, d_v):
                k_j, v_j = blocks.kv_block(j)
                p = tf.exp(blocks.scores(i, j, q_i, k_j) - lse_i)  # masked: exp(-inf) = 0
                d_p = tf.cast(tf.matmul(d_out_i, v_j, transpose_b=True), tf.float32)
                p_used = p
                if rate > 0.0:
                    z = _block_dropout_scale(seed_t, j, tf.shape(p), rate, i)
                    p_used = p * z
                    d_p = d_p * z
                d_s = tf.cast(p * (d_p - delta_i), dtype)
                d_q = d_q + tf.cast(tf.matmul(d_s, k_j), tf.float32)
                d_q.set_shape(q_i.shape)  # the loop value keeps its static shape (graphs)
                # dK and dV of the block come out transposed, [B, N, H, C]: the operand the
                # matmul contracts on its first axis is then the [Tq, H] one (dO, Q), not the
                # [Tq, C] one (P, dS), which made the step 10-20 % slower on a CPU (BUILD_NOTES,
                # issue 14).
                d_v_t = tf.matmul(d_out_i, tf.cast(p_used, dtype), transpose_a=True)
                d_k_t = tf.matmul(q_i, d_s, transpose_a=True)
                return (j + 1, d_q,
                        kv_rows.add(d_k, j, tf.transpose(d_k_t, [0, 3, 1, 2])),
                        kv_rows.add(d_v, j, tf.transpose(d_v_t, [0, 3, 1, 2])))

            init = (tf.constant(0), tf.zeros(tf.shape(q_i), tf.float32),
                    kv_rows.begin_pass(d_k_sum, dtype), kv_rows.begin_pass(d_v_sum, dtype))
            _, d_q, d_k, d_v = tf.while_loop(lambda j, *_: j < blocks.num_blocks, back_step,
                                             init, parallel_iterations=1)
            # d/d(query) of q_i = query · scale.
            d_q = tf.transpose(d_q * tf.cast(scale, tf.float32), [0, 2, 1, 3])
            return (i + 1, q_rows.write(d_q_rows, i, d_q),
                    kv_rows.end_pass(d_k_sum, d_k), kv_rows.end_pass(d_v_sum, d_v))

        init = (
            tf.constant(0),
            q_rows.empty([blocks.batch, heads, k.shape[-1]], tf.float32),
            kv_rows.empty([blocks.batch, heads, k.shape[-1]], tf.float32, summed=True),
            kv_rows.empty([blocks.batch, heads, v.shape[-1]], tf.float32, summed=True),
        )
        _, d_q, d_k, d_v = tf.while_loop(lambda i, *_: i < blocks.num_tiles, tile_step, init,
                                         parallel_iterations=1)
        d_q = q_rows.result(d_q)[:, :blocks.t_len]
        d_k = kv_rows.result(d_k)[:, :blocks.s_len]
        d_v = kv_rows.result(d_v)[:, :blocks.s_len]
        return tf.cast(d_q, query.dtype), tf.cast(d_k, k.dtype), tf.cast(d_v, v.dtype)

    if use_xla:
        forward = tf.function(forward, jit_compile=True, autograph=False)
        backward = tf.function(backward, jit_compile=True, autograph=False)

    @tf.custom_gradient
    def attend(q, k, v):
        # stop_gradient: the loops are differentiated by `backward`, never by a tape (which
        # would make the forward loop keep every block's values for its own gradient).
        inputs = [tf.stop_gradient(x) for x in (q, k, v)]
        out, lse = forward(*inputs)

        def grad(d_out):
            return backward(tf.stop_gradient(d_out), *inputs, out, lse)

        return tf.cast(out, dtype), grad

    return attend(query, key, value)


def _pad_rows(x, extra):
    """`x` with `extra` zero rows appended on axis 1, keeping the other axes' static sizes
    (a graph's while_loop needs loop values to keep their shapes)."""
    padded = tf.pad(x, [[0, 0], [0, extra]] + [[0, 0]] * (x.shape.rank - 2))
    padded.set_shape(x.shape[:1].concatenate([None]).concatenate(x.shape[2:]))
    return padded


def _row_slice(x, start, size):
    """``x[:, start:start + size]`` for a dynamic `start` (XLA needs the size static)."""
    shape = tf.shape(x)
    begin = tf.concat([[0, start], tf.zeros_like(shape[2:])], axis=0)
    rows = tf.slice(x, begin, tf.concat([shape[:1], [size], shape[2:]], axis=0))
    # The static shape (a graph's while_loop needs loop values to keep theirs).
    rows.set_shape(x.shape[:1].concatenate([size]).concatenate(x.shape[2:]))
    return rows


class _RowSlices:
    """A ``[B, count·size, ...]`` result written as `count` row slices ``[B, size, ...]`` in a
    `tf.while_loop`, optionally summed over several passes.

    Under XLA the slices go in place into one buffer in the final layout (a dynamic update
    slice of the loop-carried buffer, which XLA does not copy): no stacked or transposed copy.
    TensorFlow's own kernels cannot update a tensor in place, so there the slices go through
    a `tf.TensorArray` per pass, summed over passes in the stacked layout and laid out once at
    the end.
    """

    def __init__(self, xla, count, size):
        self.xla, self.count, self.size = xla, count, size

    def empty(self, tail, dtype, summed=False):
        """The initial loop value; `tail` is ``[B, ...]`` without the row axis."""
        if self.xla or summed:
            if self.xla:
                shape = [tail[0], self.count * self.size] + list(tail[1:])
            else:
                shape = [self.count, tail[0], self.size] + list(tail[1:])
            return tf.zeros(tf.stack(shape), dtype)
        return self._array(tail, dtype)

    def _array(self, tail, dtype):
        return tf.TensorArray(dtype, size=self.count,
                              element_shape=[None, self.size] + list(tail[1:]))

    def write(self, state, i, value):
        if self.xla:
            return _update_rows(state, i * self.size, tf.cast(value, state.dtype))
        return state.write(i, value)

    def begin_pass(self, total, dtype):
        """The state one pass of `add` calls starts from (`total`: from ``empty(summed=True)``)."""
        if self.xla:
            return total
        return tf.TensorArray(dtype, size=self.count,
                              element_shape=[None, self.size] + total.shape[3:].as_list())

    def add(self, state, i, value):
        if self.xla:
            start = i * self.size
            old = _row_slice(state, start, self.size)
            return _update_rows(state, start, old + tf.cast(value, state.dtype))
        return state.write(i, value)

    def end_pass(self, total, state):
        if self.xla:
            return state
        summed = total + tf.cast(state.stack(), total.dtype)
        summed.set_shape(total.shape)  # the loop value keeps its static shape (graphs)
        return summed

    def result(self, state):
        """``[B, count·size, ...]``."""
        if self.xla:
            return state
        if not isinstance(state, tf.Tensor):
            state = state.stack()  # [count, B, size, ...]
        perm = [1, 0] + list(range(2, state.shape.rank))
        state = tf.transpose(state, perm)
        shape = tf.shape(state)
        return tf.reshape(state, tf.concat([shape[:1], [-1], shape[3:]], axis=0))


def _update_rows(buffer, start, rows):
    """`buffer` with ``buffer[:, start:start + rows.shape[1]] = rows`` (XLA only)."""
    begin = tf.concat([[0, start], tf.zeros([buffer.shape.rank - 2], tf.int32)], axis=0)
    return tf2xla.dynamic_update_slice(buffer, rows, begin)


class _Blocks(NamedTuple):
    """What `chunked_attention`'s forward and backward loops share (see its `prepare`)."""

    batch: object
    t_len: object
    s_len: object
    num_tiles: object
    num_blocks: object
    q_tile: object
    kv_block: object
    scores: object
