"""Low-rank ops: Linformer projection against the oracle, padding, SVD factors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_effattn.ops import lowrank
from tests import oracle

B, N, H = 2, 2, 4


def _qkv(t, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=(B, t, N, H)).astype("float32") for _ in range(3))


@pytest.mark.parametrize("t,k", [(7, 3), (5, 9)], ids=["k<n", "k>n"])
def test_linformer_matches_oracle_with_padding(t, k):
    q, kk, v = _qkv(t)
    rng = np.random.default_rng(1)
    e = rng.normal(size=(11, k)).astype("float32")
    f = rng.normal(size=(11, k)).astype("float32")
    keep = np.ones((B, t), bool)
    keep[1, t - 2:] = False
    got, _ = lowrank.linformer_attention(q, kk, v, e, f, key_keep=tf.constant(keep))
    want, _ = oracle.linformer_naive(q, kk, v, e, f, keep)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    k2, v2 = kk.copy(), v.copy()
    k2[1, t - 2:] += 9.0
    v2[1, t - 2:] -= 9.0
    again, _ = lowrank.linformer_attention(q, k2, v2, e, f, key_keep=tf.constant(keep))
    np.testing.assert_allclose(np.asarray(again), np.asarray(got), atol=1e-6)


def test_identity_projection_with_k_at_least_n_is_exact_attention():
    q, k, v = _qkv(6)
    eye = np.eye(8, 8, dtype="float32")
    keep = np.ones((B, 6), bool)
    keep[0, 4:] = False
    got, _ = lowrank.linformer_attention(q, k, v, eye, eye, key_keep=tf.constant(keep))
    want, _ = oracle.softmax_attention(q, k, v, np.broadcast_to(keep[:, None], (B, 6, 6)))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_per_head_projection_shape():
    q, k, v = _qkv(5)
    e = np.random.default_rng(2).normal(size=(N, 8, 3)).astype("float32")
    out, probs = lowrank.linformer_attention(q, k, v, e, e)
    assert tuple(out.shape) == (B, 5, N, H) and tuple(probs.shape) == (B, N, 5, 3)
    shared, _ = lowrank.linformer_attention(q, k, v, e[0], e[0])
    per_head0, _ = lowrank.linformer_attention(q, k, v, np.stack([e[0], e[0]]),
                                               np.stack([e[0], e[0]]))
    np.testing.assert_allclose(np.asarray(per_head0), np.asarray(shared), atol=1e-6)


def test_svd_factors_full_rank_exact_and_error_falls():
    w = np.random.default_rng(3).normal(size=(8, 2, 4))
    errors = []
    for r in range(1, 9):
        down, up = lowrank.svd_factors(w, r)
        errors.append(np.abs(np.einsum("dr,rab->dab", down, up) - w).max())
    assert errors[-1] < 1e-5
    assert all(a >= b for a, b in zip(errors, errors[1:]))
    with pytest.raises(ValueError, match="rank"):
        lowrank.svd_factors(w, 9)


@pytest.mark.parametrize("length,k", [(8, 8), (8, 4), (10, 3), (3, 5)])
def test_segment_mean_projection_averages_contiguous_segments(length, k):
    e = lowrank.segment_mean_projection(length, k)
    assert e.shape == (length, k)
    # Every position lands in exactly one slot; slots hold contiguous positions in order.
    assert np.all((e > 0).sum(axis=1) == 1)
    slots = e.argmax(axis=1)
    assert np.all(np.diff(slots) >= 0)
    used = e.sum(axis=0) > 0
    np.testing.assert_allclose(e.sum(axis=0)[used], 1.0, rtol=1e-6)  # a mean per used slot
    assert used.sum() == min(length, k)
    if length == k:
        np.testing.assert_array_equal(e, np.eye(length))
    with pytest.raises(ValueError, match="k must be a positive int"):
        lowrank.segment_mean_projection(length, 0)
