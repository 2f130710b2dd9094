"""FusedAttention: the Keras contract, parity with MultiHeadAttention and the NumPy oracle."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_effattn import FusedAttention
from tests import oracle
from tests.layer_contract import check_dropout_readout, readout_inputs, run_layer_contract


@pytest.mark.parametrize("chunk_size", [None, 3], ids=["fused", "chunked"])
def test_layer_contract(chunk_size, tmp_path):
    run_layer_contract(FusedAttention, {"chunk_size": chunk_size, "dropout": 0.1}, tmp_path)


def _pair(chunk_size, **kwargs):
    x = np.random.default_rng(0).normal(size=(2, 11, 8)).astype("float32")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, **kwargs)
    mha(x, x)
    layer = FusedAttention(num_heads=2, key_dim=4, chunk_size=chunk_size, **kwargs)
    layer(x, x)
    layer.set_weights(mha.get_weights())
    return x, mha, layer


MASKS = {
    "none": lambda rng: None,
    "padding_b1s": lambda rng: (rng.random((2, 1, 11)) > 0.3).astype("int32"),
    "random_bts": lambda rng: rng.random((2, 11, 11)) > 0.4,
}


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("chunk_size", [None, 4], ids=["fused", "chunked"])
def test_matches_multi_head_attention_and_oracle(mask, chunk_size):
    x, mha, layer = _pair(chunk_size)
    m = MASKS[mask](np.random.default_rng(1))
    want, want_scores = mha(x, x, attention_mask=m, return_attention_scores=True)
    got, scores = layer(x, x, attention_mask=m, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(want_scores), atol=1e-6)
    keep = None if m is None else np.broadcast_to(np.asarray(m, bool), (2, 11, 11))
    ref, _ = oracle.mha_forward(mha.get_weights(), x, x, keep)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 4], ids=["fused", "chunked"])
def test_causal_and_implicit_keras_masks_match(chunk_size):
    x, mha, layer = _pair(chunk_size)
    np.testing.assert_allclose(np.asarray(layer(x, x, use_causal_mask=True)),
                               np.asarray(mha(x, x, use_causal_mask=True)), atol=1e-5)
    ids = keras.Input(shape=(6,), dtype="int32")
    emb = keras.layers.Embedding(20, 8, mask_zero=True)
    h = emb(ids)
    models = [keras.Model(ids, attn(h, h)) for attn in (mha, layer)]
    tokens = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    want, got = (np.asarray(m.predict(tokens, verbose=0)) for m in models)
    real = tokens != 0  # outputs at padded query positions are masked downstream
    np.testing.assert_allclose(got[real], want[real], atol=1e-5)
    assert np.all(np.isfinite(got))


def test_chunked_gradients_match_fused():
    x, _, fused = _pair(None)
    _, _, chunked = _pair(4)
    chunked.set_weights(fused.get_weights())
    mask = np.ones((2, 1, 11), "int32")
    mask[0, 0, 7:] = 0

    def grads(layer):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, xt, attention_mask=mask)
            loss = tf.reduce_sum(y**2)
        return tape.gradient(loss, [xt] + layer.trainable_variables)

    for g_fused, g_chunked in zip(grads(fused), grads(chunked)):
        np.testing.assert_allclose(np.asarray(g_chunked), np.asarray(g_fused), atol=1e-4)


@pytest.mark.parametrize("chunk_size", [None, 8], ids=["fused", "chunked"])
def test_dropout_in_training_only_at_the_rate_with_expectation_kept(chunk_size):
    layer = FusedAttention(num_heads=1, key_dim=8, value_dim=32, dropout=0.25,
                           chunk_size=chunk_size, seed=3)
    query, value = readout_inputs(layer)
    mask = np.ones((4, 1, 32), "int32")
    mask[1, 0, 20:] = 0
    probs, _ = check_dropout_readout(layer, 0.25, query, value, mask)
    want, _ = oracle.softmax_attention(
        np.einsum("btd,dnh->btnh", query, np.asarray(layer._query_dense.kernel))
        + np.asarray(layer._query_dense.bias),
        np.einsum("bsd,dnh->bsnh", value, np.asarray(layer._key_dense.kernel))
        + np.asarray(layer._key_dense.bias),
        value[:, :, None], np.broadcast_to(mask.astype(bool), (4, 32, 32)))
    np.testing.assert_allclose(probs, want[:, :, 0], atol=1e-5)
    # Without dropout, the same weights give the inference output in training too.
    plain = FusedAttention(num_heads=1, key_dim=8, value_dim=32, chunk_size=chunk_size)
    plain(query, value)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(plain(query, value, attention_mask=mask,
                                                training=True)), probs, atol=1e-6)


WINDOW_CASES = {
    "window": {"window": 3, "causal": False, "padded": False},
    "window_padding": {"window": 3, "causal": False, "padded": True},
    "window_causal_padding": {"window": 4, "causal": True, "padded": True},
}


@pytest.mark.parametrize("case", list(WINDOW_CASES))
@pytest.mark.parametrize("chunk_size", [None, 4], ids=["fused", "chunked"])
def test_sliding_window_matches_masked_exact_reference(case, chunk_size):
    window, causal, padded = (WINDOW_CASES[case][k] for k in ("window", "causal", "padded"))
    x, mha, layer = _pair(chunk_size, sliding_window=window)
    mask = None
    keep = np.broadcast_to(oracle.window_keep(11, 11, window), (2, 11, 11))
    if padded:
        mask = np.ones((2, 1, 11), "int32")
        mask[1, 0, 7:] = 0
        keep = keep & mask.astype(bool)
    if causal:
        keep = keep & oracle.causal_keep(11, 11)
    got, scores = layer(x, x, attention_mask=mask, use_causal_mask=causal,
                        return_attention_scores=True)
    want, want_probs = oracle.mha_forward(mha.get_weights(), x, x, keep)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), want_probs, atol=1e-6)
    assert np.all(np.asarray(scores)[:, :, keep.shape[1] - 1, :7] == 0.0)  # outside the band
    # MultiHeadAttention spreads a row without keys uniformly; compare the other rows.
    rows = keep.any(-1)
    assert not rows.all() if padded else rows.all()
    stock = np.asarray(mha(x, x, attention_mask=mask, use_causal_mask=causal))
    np.testing.assert_allclose(np.asarray(got)[rows], stock[rows], atol=1e-5)


def test_drops_into_keras_hub_transformer_encoder():
    """Same config, same weights and the mask TransformerEncoder builds -> same output."""
    from keras_hub.src.layers.modeling.transformer_layer_utils import (
        merge_padding_and_attention_mask,
    )

    x = np.random.default_rng(2).normal(size=(2, 9, 8)).astype("float32")
    padding = np.array([[1] * 9, [1] * 5 + [0] * 4], bool)
    encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=16, num_heads=2, dropout=0.1)
    encoder(x, padding_mask=padding)
    old = encoder._self_attention_layer
    mask = merge_padding_and_attention_mask(x, padding, None)
    assert tuple(mask.shape) == (2, 1, 9)
    config = {k: v for k, v in old.get_config().items() if k != "name"}
    new = FusedAttention(**config, chunk_size=4)
    new.build((None, 9, 8), (None, 9, 8))
    new.set_weights(old.get_weights())
    np.testing.assert_allclose(np.asarray(new(x, x, attention_mask=mask)),
                               np.asarray(old(x, x, attention_mask=mask)), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"num_heads": 0}, "num_heads"), ({"chunk_size": 0}, "chunk_size"),
     ({"chunk_size": "big"}, "chunk_size"), ({"dropout": 1.0}, "dropout"),
     ({"attention_axes": (1, 2)}, "attention_axes")],
    ids=["heads0", "chunk0", "chunk_str", "dropout1", "axes"])
def test_bad_constructor_arguments(kwargs, match):
    args = {"num_heads": 2, "key_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        FusedAttention(**args)


def test_bad_mask_shape():
    x, _, layer = _pair(None)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((2, 11, 10), bool))
