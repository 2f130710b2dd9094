"""Exact attention ops against the NumPy oracle: fused and chunked, masks, gradients, XLA."""

import numpy as np
import pytest
import tensorflow as tf

from keras_effattn.ops import exact, masks
from tests import oracle

B, N, H = 2, 3, 4


def _qkv(t, s, seed=0, hv=5):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, t, N, H)).astype("float32")
    k = rng.normal(size=(B, s, N, H)).astype("float32")
    v = rng.normal(size=(B, s, N, hv)).astype("float32")
    return q, k, v


def _mask_cases(t, s, rng):
    key = rng.random((B, s)) > 0.3
    key[:, 0] = True
    key[1] = False  # a fully padded batch row
    dense = rng.random((B, t, s)) > 0.4
    left = np.arange(s)[None].repeat(B, 0) >= np.array([[6], [s - 1]])
    return {
        "none": (None, np.ones((B, t, s), bool)),
        "key_padding": (masks.MaskParts(key=tf.constant(key)),
                        np.broadcast_to(key[:, None], (B, t, s))),
        "dense_random": (tf.constant(dense), dense),
        "causal_and_key": (
            masks.MaskParts(key=tf.constant(key), causal=True),
            key[:, None] & oracle.causal_keep(t, s),
        ),
        # Left padding: whole leading key blocks are masked before the first real key, so the
        # online softmax must discard what it gathered from them.
        "left_padding": (masks.MaskParts(key=tf.constant(left)),
                         np.broadcast_to(left[:, None], (B, t, s))),
        "window": (masks.MaskParts(window=2),
                   np.abs(np.arange(t)[:, None] - np.arange(s))[None] < 2),
    }


CASES = [(5, 11, c) for c in ("none", "key_padding", "dense_random")] + [
    (13, 13, c) for c in ("none", "key_padding", "dense_random", "causal_and_key", "left_padding",
                          "window")]


@pytest.mark.parametrize("t,s,case", CASES, ids=[f"{c}-{t}x{s}" for t, s, c in CASES])
def test_fused_and_chunked_match_oracle(t, s, case):
    q, k, v = _qkv(t, s)
    parts, keep = _mask_cases(t, s, np.random.default_rng(1))[case]
    want, want_probs = oracle.softmax_attention(q, k, v, keep)
    got, probs = exact.fused_attention(q, k, v, parts)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-6)
    for chunk in (1, 4, 64):
        got = exact.chunked_attention(q, k, v, parts, chunk_size=chunk)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, err_msg=f"chunk={chunk}")
    # Query tiles: one row each, uneven (5 -> 3+2, 13 -> 3*4+1 evened to 4 tiles of 4), all.
    for tile in (1, 3, None):
        got = exact.chunked_attention(q, k, v, parts, chunk_size=4, query_chunk_size=tile)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, err_msg=f"tile={tile}")


def test_fully_masked_rows_are_zero():
    q, k, v = _qkv(4, 6)
    parts = masks.MaskParts(key=tf.zeros((B, 6), tf.bool))
    for out in (exact.fused_attention(q, k, v, parts)[0],
                exact.chunked_attention(q, k, v, parts, chunk_size=4)):
        assert np.all(np.asarray(out) == 0.0)


def _tensor_grads(fn, q, k, v):
    q, k, v = (tf.convert_to_tensor(a) for a in (q, k, v))
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        y = fn(q, k, v)
        loss = tf.reduce_sum(y * tf.sin(y))
    return tape.gradient(loss, [q, k, v])


def _grads(fn, q, k, v):
    return [np.asarray(g) for g in _tensor_grads(fn, q, k, v)]


@pytest.mark.parametrize("tile", [None, 3], ids=["one-tile", "query-tiles"])
@pytest.mark.parametrize("jit", ["auto", False])
@pytest.mark.parametrize("case", ["none", "key_padding", "causal_and_key", "left_padding",
                                  "dense_random", "window"])
def test_chunked_gradients_match_plain(case, jit, tile):
    q, k, v = _qkv(11, 11, seed=2)
    parts, _ = _mask_cases(11, 11, np.random.default_rng(4))[case]
    plain = _grads(lambda a, b, c: exact.fused_attention(a, b, c, parts)[0], q, k, v)
    chunked = _grads(
        lambda a, b, c: exact.chunked_attention(a, b, c, parts, chunk_size=4, jit_compile=jit,
                                                query_chunk_size=tile),
        q, k, v)
    for g_plain, g_chunk in zip(plain, chunked):
        np.testing.assert_allclose(g_chunk, g_plain, atol=2e-5)


@pytest.mark.parametrize("tile", [1024, 4], ids=["one-tile", "query-tiles"])
def test_chunked_dropout_equals_plain_with_same_keep_mask_values_and_gradients(tile):
    q, k, v = _qkv(9, 10, seed=5)
    seed = tf.constant([7, 11], tf.int32)
    parts = masks.MaskParts(key=tf.constant(np.arange(10)[None].repeat(B, 0) < 8))
    scale = exact.chunked_dropout_scale(seed, (B, N, 9, 10), 4, 0.3, query_chunk_size=tile)
    assert 0.0 < float(tf.reduce_mean(tf.cast(scale == 0.0, tf.float32))) < 0.6

    def plain(a, b, c):
        probs = exact.attention_probs(a, b, parts) * scale
        return tf.einsum("bnts,bsnh->btnh", probs, c)

    def chunked(a, b, c):
        return exact.chunked_attention(a, b, c, parts, chunk_size=4, dropout_rate=0.3,
                                       seed=seed, training=True, query_chunk_size=tile)

    np.testing.assert_allclose(np.asarray(chunked(q, k, v)), np.asarray(plain(q, k, v)),
                               atol=1e-5)
    for g_plain, g_chunk in zip(_grads(plain, q, k, v), _grads(chunked, q, k, v)):
        np.testing.assert_allclose(g_chunk, g_plain, atol=2e-5)


@pytest.mark.parametrize("rate", [0.0, 0.2], ids=["xla-loops", "dropout-tf-loops"])
def test_chunked_gradients_in_a_graph_equal_eager(rate):
    # A tf.function (Keras' train step) traces the loops with static shapes: the loop values
    # must keep theirs (regression: the TensorFlow-kernel path once failed to trace there).
    q, k, v = _qkv(33, 33, seed=9)
    parts = masks.MaskParts(key=tf.constant(np.arange(33)[None].repeat(B, 0) < 30))

    def attend(a, b, c):
        return exact.chunked_attention(a, b, c, parts, chunk_size=16, query_chunk_size=16,
                                       dropout_rate=rate, seed=tf.constant([1, 2]),
                                       training=True)

    eager = _grads(attend, q, k, v)
    graph = tf.function(lambda a, b, c: _tensor_grads(attend, a, b, c))(q, k, v)
    for g_eager, g_graph in zip(eager, graph):
        np.testing.assert_allclose(np.asarray(g_graph), g_eager, atol=1e-5)


@pytest.mark.parametrize("tile", [None, 2], ids=["one-tile", "query-tiles"])
def test_chunked_under_xla_values_and_gradients(tile):
    q, k, v = _qkv(7, 7, seed=6)
    parts = masks.MaskParts(key=tf.constant(np.arange(7)[None].repeat(B, 0) < 5), causal=True)
    plain = _grads(lambda a, b, c: exact.fused_attention(a, b, c, parts)[0], q, k, v)
    jitted = tf.function(
        lambda a, b, c: _tensor_grads(
            lambda x, y, z: exact.chunked_attention(x, y, z, parts, chunk_size=3,
                                                    query_chunk_size=tile), a, b, c),
        jit_compile=True)
    for g_plain, g_xla in zip(plain, jitted(q, k, v)):
        np.testing.assert_allclose(np.asarray(g_xla), g_plain, atol=2e-5)


def _compiled_calls(fn):
    """How many XLA-compiled function calls the graph of `fn` (no arguments) holds."""
    graph = tf.function(fn).get_concrete_function().graph
    return sum(1 for op in graph.get_operations()
               if op.type in ("PartitionedCall", "StatefulPartitionedCall")
               and graph._get_function(op.get_attr("f").name).definition.attr[
                   "_XlaMustCompile"].b)


def test_auto_xla_compiles_the_block_loops_except_with_dropout_or_for_export():
    q, k, v = _qkv(9, 10, seed=3)

    def attend(**kwargs):
        return lambda: exact.chunked_attention(q, k, v, chunk_size=4, **kwargs)

    assert _compiled_calls(attend()) == 1  # the forward loop (the backward one: on demand)
    assert _compiled_calls(attend(jit_compile=False)) == 0
    assert _compiled_calls(attend(dropout_rate=0.1, training=True)) == 0
    assert _compiled_calls(attend(dropout_rate=0.1, training=True, jit_compile=True)) == 1
    with exact.without_xla():
        assert _compiled_calls(attend()) == 0
        assert _compiled_calls(attend(jit_compile=True)) == 1  # explicit wins
    assert _compiled_calls(attend()) == 1  # the scope ends with its block
    with pytest.raises(ValueError, match="jit_compile"):
        exact.chunked_attention(q, k, v, jit_compile="yes")


def _compiled_op_types(fn):
    """Op types inside the XLA-compiled calls of `fn`'s graph, nested loop bodies included."""
    graph = tf.function(fn).get_concrete_function().graph
    types = set()

    def walk(name):
        for node in graph._get_function(name).definition.node_def:
            types.add(node.op)
            for attr in node.attr.values():
                if attr.HasField("func"):
                    walk(attr.func.name)

    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            name = op.get_attr("f").name
            if graph._get_function(name).definition.attr["_XlaMustCompile"].b:
                walk(name)
    return types


def test_xla_loops_update_outputs_and_gradients_in_place():
    # Under XLA the rows of the output and of dQ/dK/dV go into loop-carried buffers in place:
    # no TensorArray (whose stack and re-layout would be whole extra [B, T, N, H] copies).
    q, k, v = _qkv(9, 10, seed=3)
    types = _compiled_op_types(lambda: _tensor_grads(
        lambda a, b, c: exact.chunked_attention(a, b, c, chunk_size=4, query_chunk_size=3),
        q, k, v))
    assert "XlaDynamicUpdateSlice" in types
    assert not {t for t in types if t.startswith(("TensorList", "TensorArray"))}, types


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "tensorflow"])
def test_row_slices_write_and_sum_over_passes(xla):
    rows = exact._RowSlices(xla, 3, 2)  # 3 slices of 2 rows
    values = np.random.default_rng(0).normal(size=(2, 3, B, 2, N, H)).astype("float32")

    def build():
        written = rows.empty([B, N, H], tf.float32)
        total = rows.empty([B, N, H], tf.float32, summed=True)
        for i in range(3):
            written = rows.write(written, tf.constant(i), values[0, i])
        for p in range(2):
            state = rows.begin_pass(total, tf.float32)
            for i in (2, 0, 1):
                state = rows.add(state, tf.constant(i), values[p, i])
            total = rows.end_pass(total, state)
        return rows.result(written), rows.result(total)

    written, total = tf.function(build, jit_compile=xla, autograph=False)()
    np.testing.assert_allclose(np.asarray(written), np.concatenate(values[0], axis=1))
    np.testing.assert_allclose(np.asarray(total), np.concatenate(values[0] + values[1], axis=1),
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_chunked_half_precision_is_finite_and_close(dtype):
    q, k, v = _qkv(9, 9, seed=8)
    want, _ = oracle.softmax_attention(q, k, v)
    got = exact.chunked_attention(*(tf.cast(a, dtype) for a in (q, k, v)), chunk_size=4)
    assert got.dtype == dtype
    np.testing.assert_allclose(np.asarray(tf.cast(got, tf.float32)), want, atol=0.05)


@pytest.mark.parametrize("jit", ["auto", False], ids=["xla", "tensorflow"])
@pytest.mark.parametrize("dtype,tol", [("float16", 0.01), ("bfloat16", 0.04)])
@pytest.mark.parametrize("case", ["key_padding", "causal_and_key", "left_padding"])
def test_chunked_half_precision_gradients_match_float32_plain(case, dtype, tol, jit):
    # The backward recomputes each block's probabilities in the compute dtype and accumulates
    # dQ, dK and dV over blocks and query tiles; compare with plain float32 attention's
    # gradients relative to their largest entry (bfloat16 keeps 8 bits, float16 11).
    q, k, v = _qkv(13, 11, seed=9)
    parts, _ = _mask_cases(13, 11, np.random.default_rng(6))[case]
    want = _grads(lambda a, b, c: exact.fused_attention(a, b, c, parts)[0], q, k, v)

    def half(a, b, c):
        out = exact.chunked_attention(*(tf.cast(x, dtype) for x in (a, b, c)), parts,
                                      chunk_size=4, query_chunk_size=5, jit_compile=jit)
        assert out.dtype == dtype
        return tf.cast(out, tf.float32)

    got = _grads(half, q, k, v)
    for name, g_half, g_ref in zip("qkv", got, want):
        assert np.all(np.isfinite(g_half)), name
        largest = np.abs(g_ref).max()
        assert largest > 0.1, name  # the masks leave gradient to compare
        np.testing.assert_allclose(g_half, g_ref, atol=tol * largest, err_msg=name)


def test_bad_arguments():
    q, k, v = _qkv(3, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        exact.chunked_attention(q, k, v, chunk_size=0)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="query_chunk_size must be a positive int or None"):
            exact.chunked_attention(q, k, v, query_chunk_size=bad)
    with pytest.raises(ValueError, match="dropout_rate"):
        exact.fused_attention(q, k, v, dropout_rate=1.5)
    with pytest.raises(ValueError, match="attention_mask"):
        exact.fused_attention(q, k, v, np.ones((B, 1, 1, 3), bool))


def test_dropout_scale_rate_scale_and_determinism():
    seed = tf.constant([3, 9], tf.int32)
    scale = np.asarray(exact.dropout_scale(seed, [64, 257], 0.1))
    assert scale.shape == (64, 257)
    assert abs((scale == 0.0).mean() - 0.1) < 0.01
    kept = scale[scale > 0]
    np.testing.assert_allclose(kept, 65536.0 / (65536.0 - 6554), rtol=1e-6)
    np.testing.assert_array_equal(scale, np.asarray(exact.dropout_scale(seed, [64, 257], 0.1)))
    other = np.asarray(exact.dropout_scale(tf.constant([3, 10], tf.int32), [64, 257], 0.1))
    assert not np.array_equal(scale, other)


def test_effective_chunk_evens_out_blocks():
    assert exact.effective_chunk(257, 256) == 129
    assert exact.effective_chunk(512, 256) == 256
    assert exact.effective_chunk(100, 256) == 100
    assert exact.effective_chunk(None, 64) == 64
