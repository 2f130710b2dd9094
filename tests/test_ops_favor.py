"""FAVOR+ ops: features, the linear paths against their naive quadratic forms, error vs M."""

import numpy as np
import pytest
import tensorflow as tf

from keras_effattn.ops import favor
from tests import oracle

B, N, H = 2, 2, 8


def _qkv(t, seed=0):
    rng = np.random.default_rng(seed)
    q, k = (0.7 * rng.normal(size=(B, t, N, H)).astype("float32") for _ in range(2))
    return q, k, rng.normal(size=(B, t, N, 5)).astype("float32")


def test_orthogonal_features_blocks_and_norms():
    w = np.asarray(favor.orthogonal_random_features(20, H, seed=3))
    assert w.shape == (20, H)
    block = w[:H] / np.linalg.norm(w[:H], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-5)
    # Same seed, same features; another seed, other features.
    np.testing.assert_array_equal(w, np.asarray(favor.orthogonal_random_features(20, H, 3)))
    assert not np.allclose(w, np.asarray(favor.orthogonal_random_features(20, H, 4)))
    # Row norms follow chi(H): mean near sqrt(H) over many rows.
    many = np.asarray(favor.orthogonal_random_features(4096, H, 5))
    assert abs(np.linalg.norm(many, axis=1).mean() - np.sqrt(H - 0.5)) < 0.1


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("t", [7, 13])
def test_linear_path_equals_naive_quadratic_form_and_oracle(causal, t):
    q, k, v = _qkv(t)
    w = favor.orthogonal_random_features(16, H, seed=1)
    keep = np.ones((B, t), bool)
    keep[1, t - 3:] = False
    got = favor.favor_attention(q, k, v, w, key_keep=tf.constant(keep), causal=causal,
                                block_size=3)
    naive, matrix = oracle.favor_naive(q, k, v, np.asarray(w), keep, causal)
    np.testing.assert_allclose(np.asarray(got), naive, atol=1e-5)
    implied = favor.favor_attention_matrix(q, k, w, tf.constant(keep), None, causal)
    np.testing.assert_allclose(np.asarray(implied), matrix, atol=1e-6)


def test_padding_is_exact_and_fully_padded_rows_are_zero():
    q, k, v = _qkv(9)
    w = favor.orthogonal_random_features(16, H, seed=2)
    keep = np.ones((B, 9), bool)
    keep[0, 6:] = False
    keep[1] = False
    k2, v2 = k.copy(), v.copy()
    k2[0, 6:] += 50.0  # huge padded keys must not move the stabiliser or the sums
    v2[0, 6:] -= 7.0
    for causal in (False, True):
        a = np.asarray(favor.favor_attention(q, k, v, w, tf.constant(keep), causal=causal))
        b = np.asarray(favor.favor_attention(q, k2, v2, w, tf.constant(keep), causal=causal))
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)
        assert np.all(a[1] == 0.0)


def test_error_falls_as_features_grow():
    q, k, v = _qkv(32, seed=4)
    want, _ = oracle.softmax_attention(q, k, v)
    errors = []
    for m in (8, 64, 512):
        runs = [np.abs(np.asarray(favor.favor_attention(
            q, k, v, favor.orthogonal_random_features(m, H, seed=s))) - want).mean()
            for s in range(3)]
        errors.append(np.mean(runs))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * errors[0]


def test_float16_inputs_stay_finite():
    q, k, v = _qkv(9)
    big = [tf.cast(a * 4.0, tf.float16) for a in (q, k, v)]
    out = favor.favor_attention(*big, favor.orthogonal_random_features(16, H, 0))
    assert out.dtype == tf.float32 and np.all(np.isfinite(np.asarray(out)))


def test_bad_num_features():
    with pytest.raises(ValueError, match="num_features"):
        favor.orthogonal_random_features(0, H, 0)
