"""FavorAttention: Keras contract, MultiHeadAttention weights, causal form, redraw, errors."""

import keras
import numpy as np
import pytest

from keras_effattn import FavorAttention
from keras_effattn.ops import favor
from tests import oracle
from tests.layer_contract import run_layer_contract


@pytest.mark.parametrize(
    "kwargs", [pytest.param({"num_features": 16, "seed": 1, "dropout": 0.1}, id="fixed"),
               pytest.param({"num_features": 16, "causal": True, "causal_block_size": 4},
                            id="causal"),
               pytest.param({"num_features": 8, "redraw_every": 2, "seed": 3}, id="redraw",
                            marks=pytest.mark.slow)])
def test_layer_contract(kwargs, tmp_path):
    run_layer_contract(FavorAttention, kwargs, tmp_path)


def _mha_and_favor(**kwargs):
    x = np.random.default_rng(0).normal(size=(2, 11, 8)).astype("float32")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(x, x)
    layer = FavorAttention(num_heads=2, key_dim=4, **kwargs)
    layer(x, x)
    layer.set_weights(mha.get_weights())  # MultiHeadAttention's list: features are kept
    return x, mha, layer


def test_takes_multi_head_attention_weights_and_matches_naive_form():
    x, mha, layer = _mha_and_favor(num_features=32, seed=0, causal=True, causal_block_size=4)
    for mine, theirs in zip(layer.weights[2:], mha.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    w = np.asarray(layer.random_features)

    def core(q, k, v, keep):
        return oracle.favor_naive(q, k, v, w, None, causal=True)

    want, _ = oracle.mha_forward(mha.get_weights(), x, x, core=core)
    np.testing.assert_allclose(np.asarray(layer(x, x)), want, atol=1e-5)
    # use_causal_mask at call time on a bidirectional layer gives the same thing.
    bidirectional = FavorAttention.from_multi_head_attention(
        mha, (None, 11, 8), num_features=32, seed=0)
    bidirectional.random_features.assign(w)
    np.testing.assert_allclose(np.asarray(bidirectional(x, x, use_causal_mask=True)), want,
                               atol=1e-5)


def test_error_to_exact_attention_falls_with_num_features():
    x = np.random.default_rng(1).normal(size=(2, 24, 8)).astype("float32")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    want = np.asarray(mha(x, x))
    errors = []
    for m in (4, 32, 256):
        errs = [np.abs(np.asarray(FavorAttention.from_multi_head_attention(
            mha, (None, 24, 8), num_features=m, seed=s)(x, x)) - want).mean() for s in range(3)]
        errors.append(np.mean(errs))
    assert errors[0] > errors[1] > errors[2]


def test_implied_attention_matrix():
    x, _, layer = _mha_and_favor(num_features=16, seed=2)
    mask = np.ones((2, 1, 11), "int32")
    mask[1, 0, 8:] = 0
    _, scores = layer(x, x, attention_mask=mask, return_attention_scores=True)
    scores = np.asarray(scores)
    assert scores.shape == (2, 2, 11, 11)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    assert np.all(scores[1, :, :, 8:] == 0.0) and np.all(scores >= 0.0)


def test_redraw_policy_is_seeded_and_only_in_training():
    x = np.random.default_rng(3).normal(size=(1, 5, 8)).astype("float32")
    layers = [FavorAttention(num_heads=2, key_dim=4, num_features=8, redraw_every=2, seed=7)
              for _ in range(2)]
    for layer in layers:
        layer(x, x)
    start = np.asarray(layers[0].random_features).copy()
    np.testing.assert_array_equal(start, np.asarray(layers[1].random_features))
    layers[0](x, x, training=False)
    layers[0](x, x, training=True)
    np.testing.assert_array_equal(np.asarray(layers[0].random_features), start)
    layers[0](x, x, training=True)  # step 2: redraw
    redrawn = np.asarray(layers[0].random_features)
    assert int(layers[0].feature_step.numpy()) == 2 and not np.allclose(redrawn, start)
    layers[1](x, x, training=True)
    layers[1](x, x, training=True)
    np.testing.assert_array_equal(np.asarray(layers[1].random_features), redrawn)
    fixed = FavorAttention(num_heads=2, key_dim=4, num_features=8, redraw_every=0, seed=7)
    fixed(x, x, training=True)
    np.testing.assert_array_equal(np.asarray(fixed.random_features), start)
    np.testing.assert_allclose(start, np.asarray(favor.orthogonal_random_features(8, 4, 7)))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"num_features": 0}, "num_features"), ({"num_features": -3}, "num_features"),
     ({"num_heads": 0}, "num_heads"), ({"redraw_every": -1}, "redraw_every"),
     ({"sliding_window": 3}, "sliding_window"), ({"attention_axes": (2,)}, "attention_axes")],
    ids=["features0", "features_neg", "heads0", "redraw_neg", "window", "axes"])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FavorAttention(**{"num_heads": 2, "key_dim": 4, **kwargs})


def test_bad_call_arguments():
    x, _, layer = _mha_and_favor(num_features=8)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((2, 3, 11), bool))
    causal = FavorAttention(num_heads=2, key_dim=4, num_features=8, causal=True)
    with pytest.raises(ValueError, match="same length"):
        causal(x[:, :5], x)
