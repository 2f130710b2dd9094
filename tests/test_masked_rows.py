"""Fully masked rows in every attention kind: finite forward and backward, neighbours untouched.

A batch holds one example with a few padded keys, one whose keys are ALL masked and one with
masked query rows (and, with causal or windowed kinds, rows that see only masked keys). For
every layer kind, in float32, mixed_float16 and mixed_bfloat16, the output and the gradients
with respect to the inputs and to every trainable weight must be finite, a fully masked row must
give zero attention output (the layer then returns the output projection's bias), and the other
examples must equal the same example run alone. The op-level paths get the same check.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_effattn import FavorAttention, FusedAttention, LowRankAttention
from keras_effattn.ops import exact, favor, lowrank, masks, reference

B, T, DIM = 3, 6, 8
LAYERS = {
    "fused": (FusedAttention, {}),
    "chunked": (FusedAttention, {"chunk_size": 4}),
    "fused_window": (FusedAttention, {"sliding_window": 2}),
    "chunked_window": (FusedAttention, {"chunk_size": 4, "sliding_window": 2}),
    "favor": (FavorAttention, {"num_features": 8, "seed": 0}),
    "favor_causal": (FavorAttention, {"num_features": 8, "seed": 0, "causal": True,
                                      "causal_block_size": 4}),
    "linformer": (LowRankAttention, {"k": 3, "max_length": 8}),
    "linformer_per_head": (LowRankAttention, {"k": 3, "max_length": 8, "share_heads": False}),
    "linformer_qkv_rank": (LowRankAttention, {"k": 3, "max_length": 8, "qkv_rank": 2}),
    "lowrank_exact": (LowRankAttention, {"k": None, "qkv_rank": 2}),
}
POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]
# Examples 0 and 2 must equal themselves run alone; example 1 has no key at all.
PARTIAL, EMPTY, ROWS = 0, 1, 2


def _inputs():
    x = np.random.default_rng(0).normal(size=(B, T, DIM)).astype("float32")
    query_keep = np.ones((B, T), bool)
    key_keep = np.ones((B, T), bool)
    key_keep[PARTIAL, T - 2:] = False
    key_keep[EMPTY] = False
    query_keep[EMPTY] = False
    query_keep[ROWS, 2] = False  # a masked query row
    key_keep[ROWS, 0] = False  # causal row 0 then sees no key at all
    key_keep[ROWS, T - 1] = False
    return x, query_keep[:, :, None] & key_keep[:, None, :]


def _run(layer, x, mask):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, x, attention_mask=mask)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
    grads = tape.gradient(loss, [x] + layer.trainable_variables)
    return np.asarray(tf.cast(y, tf.float32)), [np.asarray(g) for g in grads]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", list(LAYERS))
def test_layer_fully_masked_rows_finite_and_isolated(kind, policy):
    cls, kwargs = LAYERS[kind]
    layer = cls(num_heads=2, key_dim=4, dtype=policy, **kwargs)
    x, mask = _inputs()
    y, grads = _run(layer, x, mask)
    assert np.all(np.isfinite(y)), f"{kind}/{policy}: non-finite output"
    assert len(grads) == 1 + len(layer.trainable_variables) >= 9
    for grad, name in zip(grads, ["inputs"] + [v.path for v in layer.trainable_variables]):
        assert np.all(np.isfinite(grad)), f"{kind}/{policy}: non-finite gradient of {name}"
    # A row with no key attends to nothing: the output is the output projection's bias.
    bias = np.asarray(tf.cast(layer._output_dense.bias, tf.float32))
    tol = 1e-6 if policy == "float32" else 1e-2
    np.testing.assert_allclose(y[EMPTY], np.broadcast_to(bias, y[EMPTY].shape), atol=tol)
    np.testing.assert_allclose(y[ROWS, 2], bias, atol=tol)
    # The other examples are what they are alone (a masked neighbour changes nothing).
    # Half precision: another batch size may reduce in another order, so allow a few roundings
    # relative to the largest value.
    tol = 1e-5 if policy == "float32" else 2e-2
    for i in (PARTIAL, ROWS):
        alone, alone_grads = _run(layer, x[i:i + 1], mask[i:i + 1])
        for got, want, what in ((y[i], alone[0], "output"),
                                (grads[0][i], alone_grads[0][0], "input gradient")):
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, atol=tol * scale, rtol=tol,
                                       err_msg=f"{what} of example {i}")


def _op_inputs(dtype):
    rng = np.random.default_rng(1)
    q, k, v = (tf.constant(rng.normal(size=(B, T, 2, 4)), dtype) for _ in range(3))
    _, mask = _inputs()
    return q, k, v, tf.constant(mask.any(axis=2)), tf.constant(mask.any(axis=1)), mask


def _features():
    return favor.orthogonal_random_features(8, 4, seed=0)


def _e():
    return tf.constant(np.random.default_rng(2).normal(size=(8, 3)), tf.float32)


OPS = {
    "fused": lambda q, k, v, qk, kk, m: exact.fused_attention(q, k, v, tf.constant(m))[0],
    "fused_causal_window": lambda q, k, v, qk, kk, m: exact.fused_attention(
        q, k, v, masks.MaskParts(query=qk, key=kk, causal=True, window=2))[0],
    "chunked": lambda q, k, v, qk, kk, m: exact.chunked_attention(
        q, k, v, tf.constant(m), chunk_size=4),
    "chunked_causal_window": lambda q, k, v, qk, kk, m: exact.chunked_attention(
        q, k, v, masks.MaskParts(query=qk, key=kk, causal=True, window=2), chunk_size=4),
    "chunked_query_tiles": lambda q, k, v, qk, kk, m: exact.chunked_attention(
        q, k, v, masks.MaskParts(query=qk, key=kk, causal=True, window=2), chunk_size=4,
        query_chunk_size=3),
    "attention_probs": lambda q, k, v, qk, kk, m: exact.attention_probs(q, k, tf.constant(m)),
    "reference": lambda q, k, v, qk, kk, m: reference.reference_attention(
        q, k, v, tf.constant(m))[0],
    "favor": lambda q, k, v, qk, kk, m: favor.favor_attention(
        q, k, v, _features(), key_keep=kk, query_keep=qk),
    "favor_causal": lambda q, k, v, qk, kk, m: favor.favor_attention(
        q, k, v, _features(), key_keep=kk, query_keep=qk, causal=True, block_size=4),
    "favor_matrix": lambda q, k, v, qk, kk, m: favor.favor_attention_matrix(
        q, k, _features(), kk, qk, causal=True),
    "linformer": lambda q, k, v, qk, kk, m: lowrank.linformer_attention(
        q, k, v, _e(), _e() * 0.5, key_keep=kk, query_keep=qk)[0],
    "linformer_per_head": lambda q, k, v, qk, kk, m: lowrank.linformer_attention(
        q, k, v, tf.stack([_e(), -_e()]), tf.stack([_e(), _e()]), key_keep=kk,
        query_keep=qk)[0],
}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("op", list(OPS))
def test_op_fully_masked_rows_finite(op, dtype):
    q, k, v, query_keep, key_keep, mask = _op_inputs(dtype)
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = OPS[op](q, k, v, query_keep, key_keep, mask)
        loss = tf.reduce_sum(tf.cast(out, tf.float32) ** 2)
    grads = tape.gradient(loss, [q, k, v], unconnected_gradients="zero")
    out = np.asarray(tf.cast(out, tf.float32))
    assert np.all(np.isfinite(out))
    assert np.all(out[EMPTY] == 0.0)
    for grad, name in zip(grads, "qkv"):
        assert np.all(np.isfinite(np.asarray(tf.cast(grad, tf.float32)))), f"d{name}"
    if op.startswith("favor"):  # no gradient reaches keys that are masked
        assert np.all(np.asarray(tf.cast(grads[1], tf.float32))[EMPTY] == 0.0)


def test_favor_key_stabiliser_ignores_masked_keys_and_stays_finite():
    """The old code left c = -1e30 for a sequence without keys: exp overflowed to inf."""
    rng = np.random.default_rng(3)
    k = tf.constant(rng.normal(size=(2, 5, 1, 4)) * 0.5, tf.float32)
    keep = tf.constant([[True] * 3 + [False] * 2, [False] * 5])
    w = _features()
    with tf.GradientTape() as tape:
        tape.watch(k)
        phi = favor.positive_features(k, w, is_query=False, key_keep=keep)
    grad = tape.gradient(phi, k)
    assert np.all(np.isfinite(np.asarray(grad)))
    phi = np.asarray(phi)
    assert np.all(phi[1] == 0.0) and np.all(phi[0, :, 3:] == 0.0)
    # Huge masked keys neither move the stabiliser nor overflow.
    k_big = k.numpy()
    k_big[0, 3:] = 1e4
    again = np.asarray(favor.positive_features(tf.constant(k_big), w, False, keep))
    np.testing.assert_allclose(again, phi, atol=1e-7)
    assert keras.backend.standardize_dtype(phi.dtype) == "float32"
