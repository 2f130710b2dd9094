"""LowRankAttention: Keras contract, k >= n identity = exact, qkv_rank SVD conversion, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_effattn import FusedAttention, LowRankAttention
from tests import oracle
from tests.layer_contract import check_dropout_readout, readout_inputs, run_layer_contract


@pytest.mark.parametrize(
    "kwargs", [{"k": 5, "max_length": 16, "dropout": 0.1},
               {"k": 4, "max_length": 13, "share_heads": False, "share_kv": True},
               {"k": 3, "max_length": 13, "qkv_rank": 2}],
    ids=["shared", "per_head_share_kv", "qkv_rank"])
def test_layer_contract(kwargs, tmp_path):
    run_layer_contract(LowRankAttention, kwargs, tmp_path)


def _mha(length=9):
    x = np.random.default_rng(0).normal(size=(2, length, 8)).astype("float32")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(x, x)
    return x, mha


@pytest.mark.parametrize("share_heads,share_kv", [(True, False), (False, True)])
def test_identity_projections_with_k_at_least_n_equal_exact(share_heads, share_kv):
    x, mha = _mha()
    layer = LowRankAttention(num_heads=2, key_dim=4, k=12, max_length=12,
                             share_heads=share_heads, share_kv=share_kv)
    layer(x, x)
    layer.set_weights(mha.get_weights())
    eye = np.eye(12, dtype="float32")
    if not share_heads:
        eye = np.stack([eye, eye])
    layer.key_projection.assign(eye)
    if not share_kv:
        layer.value_projection.assign(eye)
    mask = np.ones((2, 1, 9), "int32")
    mask[1, 0, 6:] = 0
    want, want_scores = mha(x, x, attention_mask=mask, return_attention_scores=True)
    got, scores = layer(x, x, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(want_scores), atol=1e-6)


def test_matches_oracle_with_random_projection():
    x, mha = _mha()
    layer = LowRankAttention.from_multi_head_attention(mha, (None, 9, 8), k=4, max_length=10)
    e = np.asarray(layer.key_projection)
    f = np.asarray(layer.value_projection)
    keep = np.ones((2, 9), bool)
    keep[0, 7:] = False

    def core(q, k, v, _):
        return oracle.linformer_naive(q, k, v, e, f, keep)

    want, _ = oracle.mha_forward(mha.get_weights(), x, x, core=core)
    got = layer(x, x, attention_mask=keep.astype("int32"))  # [B, S] key padding form
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@pytest.mark.parametrize("share_kv", [False, True], ids=["own_f", "share_kv"])
def test_per_head_projections_match_oracle(share_kv):
    x, mha = _mha()
    layer = LowRankAttention.from_multi_head_attention(
        mha, (None, 9, 8), k=4, max_length=10, share_heads=False, share_kv=share_kv)
    e = np.asarray(layer.key_projection)
    f = np.asarray(layer.value_projection)
    assert e.shape == (2, 10, 4) and not np.allclose(e[0], e[1])
    assert np.array_equal(e, f) == share_kv
    keep = np.ones((2, 9), bool)
    keep[1, 5:] = False

    def core(q, k, v, _):
        return oracle.linformer_naive(q, k, v, e, f, keep)

    want, _ = oracle.mha_forward(mha.get_weights(), x, x, core=core)
    got = layer(x, x, attention_mask=keep[:, None].astype("int32"))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    # Head 0 alone equals the shared-head oracle with E[0], F[0]: the heads really differ.
    shared, _ = oracle.mha_forward(mha.get_weights(), x, x, core=lambda q, k, v, _: (
        oracle.linformer_naive(q, k, v, e[0], f[0], keep)))
    assert not np.allclose(np.asarray(got), shared, atol=1e-3)


@pytest.mark.parametrize("init", [None, "glorot_uniform", "seeded", "ones"])
def test_key_and_value_projections_start_independent(init):
    """Keras initializers repeat their draw: F must not silently start as a copy of E."""
    def build(seed):
        initializer = keras.initializers.RandomUniform(seed=7) if init == "seeded" else init
        layer = LowRankAttention(num_heads=2, key_dim=4, k=3, max_length=6, seed=seed,
                                 projection_initializer=initializer)
        layer.build((None, 6, 8), (None, 6, 8))
        return np.asarray(layer.key_projection), np.asarray(layer.value_projection)

    e, f = build(seed=11)
    assert np.array_equal(e, f) == (init == "ones")
    if init in (None, "seeded"):  # a seeded draw is reproducible, F included
        e2, f2 = build(seed=11)
        np.testing.assert_array_equal(e2, e)
        np.testing.assert_array_equal(f2, f)


def test_dropout_in_training_only_at_the_rate_with_expectation_kept():
    layer = LowRankAttention(num_heads=1, key_dim=8, value_dim=32, k=32, max_length=32,
                             dropout=0.25, seed=5)
    query, value = readout_inputs(layer)
    layer.value_projection.assign(np.eye(32, dtype="float32"))  # F = I: the output reads P
    mask = np.ones((4, 32), "int32")
    mask[2, 24:] = 0
    probs, _ = check_dropout_readout(layer, 0.25, query, value, mask)
    assert np.all(probs[2, :, 24:] == 0.0) and np.all(probs[2, :, :24] > 0.0)
    plain = LowRankAttention(num_heads=1, key_dim=8, value_dim=32, k=32, max_length=32)
    plain(query, value)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(plain(query, value, attention_mask=mask,
                                                training=True)), probs, atol=1e-6)


def test_qkv_rank_conversion_full_rank_exact_and_error_falls():
    x, mha = _mha()
    fused = FusedAttention.from_config(mha.get_config())
    fused(x, x)
    fused.set_weights(mha.get_weights())
    want = np.asarray(mha(x, x))
    errors = []
    for rank in (1, 2, 4, 8):
        layer = LowRankAttention.from_multi_head_attention(fused, (None, 9, 8), k=None,
                                                           qkv_rank=rank)
        errors.append(np.abs(np.asarray(layer(x, x)) - want).max())
    assert errors[-1] < 1e-5
    assert errors[0] > errors[1] > errors[2] > errors[3]
    names = [w.path.split("/", 1)[1] for w in layer.weights]
    assert "query/down/kernel" in names and "query/up/kernel" in names


def test_longer_than_max_length_raises_naming_the_limit():
    x, _ = _mha(9)
    layer = LowRankAttention(num_heads=2, key_dim=4, k=3, max_length=8)
    with pytest.raises(ValueError, match="max_length=8"):
        layer(x, x)


def test_longer_than_max_length_raises_at_run_time_with_unknown_length():
    """KerasHub models and exported graphs trace with a dynamic length: the check runs then.

    Static length: ValueError at call (or trace) time. Unknown length inside a tf.function:
    tf.errors.InvalidArgumentError when the graph runs, with the same explanation.
    """
    layer = LowRankAttention(num_heads=2, key_dim=4, k=3, max_length=8)
    layer.build((None, None, 8), (None, None, 8))
    run = tf.function(lambda x: layer(x, x),
                      input_signature=[tf.TensorSpec([None, None, 8], tf.float32)])
    x = np.random.default_rng(0).normal(size=(2, 9, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(run(x[:, :8])), np.asarray(layer(x[:, :8], x[:, :8])),
                               atol=1e-6)
    assert np.all(np.isfinite(np.asarray(run(x[:, :3]))))  # shorter than k works too
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)length\] \[9\].*max_length=8.*max_length >= the longest"):
        run(x)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"k": 0}, "k must"), ({"k": -1}, "k must"), ({"num_heads": 0}, "num_heads"),
     ({"max_length": 0}, "max_length"), ({"qkv_rank": 0}, "qkv_rank"),
     ({"sliding_window": 2}, "sliding_window")],
    ids=["k0", "k_neg", "heads0", "maxlen0", "rank0", "window"])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LowRankAttention(**{"num_heads": 2, "key_dim": 4, **kwargs})


def test_bad_call_and_build_arguments():
    x, _ = _mha()
    with pytest.raises(ValueError, match="qkv_rank=9"):
        LowRankAttention(num_heads=2, key_dim=4, k=3, max_length=9, qkv_rank=9)(x, x)
    layer = LowRankAttention(num_heads=2, key_dim=4, k=3, max_length=9)
    with pytest.raises(ValueError, match="causal"):
        layer(x, x, use_causal_mask=True)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, x, attention_mask=np.ones((2, 9, 4), bool))


def test_segment_mean_start_is_exact_at_k_equal_length_and_pools_below():
    x, mha = _mha(length=8)
    want = np.asarray(mha(x, x))
    exact_start = LowRankAttention.from_multi_head_attention(
        mha, (None, 8, 8), k=8, max_length=8, projection_initializer="segment_mean")
    np.testing.assert_allclose(np.asarray(exact_start(x, x)), want, atol=1e-5)
    pooled = LowRankAttention.from_multi_head_attention(
        mha, (None, 8, 8), k=4, max_length=8, projection_initializer="SEGMENT_MEAN",
        share_heads=False)
    pairs = np.kron(np.eye(4), np.full((2, 1), 0.5)).astype("float32")  # mean of 2 positions
    for projection in (pooled.key_projection, pooled.value_projection):
        np.testing.assert_array_equal(np.asarray(projection), np.stack([pairs, pairs]))
    keep = np.ones((2, 8), bool)

    def core(q, k, v, _):
        return oracle.linformer_naive(q, k, v, pairs, pairs, keep)

    expected, _ = oracle.mha_forward(mha.get_weights(), x, x, core=core)
    np.testing.assert_allclose(np.asarray(pooled(x, x)), expected, atol=1e-5)


def test_segment_mean_saves_and_reloads(tmp_path):
    x, _ = _mha()
    inputs = keras.Input((9, 8))
    layer = LowRankAttention(num_heads=2, key_dim=4, k=3, max_length=9,
                             projection_initializer="segment_mean")
    model = keras.Model(inputs, layer(inputs, inputs))
    path = tmp_path / "segment_mean.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    with pytest.raises(ValueError, match="Unknown projection_initializer 'pooling'"):
        LowRankAttention(num_heads=2, key_dim=4, k=3, projection_initializer="pooling")
