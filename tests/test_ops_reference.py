"""reference_attention (the naive quadratic form) against the NumPy oracle, every mask form."""

import numpy as np
import pytest
import tensorflow as tf

from keras_effattn.ops import masks, reference
from tests import oracle

B, T, S, N, H = 2, 5, 7, 3, 4


def _qkv(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, T, N, H)).astype("float32"),
            rng.normal(size=(B, S, N, H)).astype("float32"),
            rng.normal(size=(B, S, N, 6)).astype("float32"))


def _key():
    key = np.ones((B, S), bool)
    key[0, 5:] = False
    key[1] = False  # no key at all: zero output
    return key


def _cases():
    rng = np.random.default_rng(1)
    key = _key()
    dense = rng.random((B, T, S)) > 0.4
    dense[0, 1] = False  # a fully masked query row
    square = rng.normal(size=(B, S, N, H)).astype("float32")
    return {
        "none": (None, None, None),
        "key_padding_bs": (key.astype("int32"), np.broadcast_to(key[:, None], (B, T, S)), None),
        "key_padding_b1s": (key[:, None], np.broadcast_to(key[:, None], (B, T, S)), None),
        "dense_bts": (tf.constant(dense), dense, None),
        "float_mask": (dense.astype("float32"), dense, None),
        "causal_and_key_parts": (
            masks.MaskParts(key=tf.constant(_key()[:, :S]), causal=True),
            _key()[:, None] & oracle.causal_keep(S, S), square),
        "window_parts": (masks.MaskParts(window=2), oracle.window_keep(S, S, 2), square),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_matches_oracle(case):
    q, k, v = _qkv()
    mask, keep, square_q = CASES[case]
    if square_q is not None:  # causal and window masks need T == S
        q = square_q
    out, probs = reference.reference_attention(q, k, v, mask)
    want, want_probs = oracle.softmax_attention(q, k, v, keep)
    assert out.dtype == tf.float32 and probs.dtype == tf.float32
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(probs), want_probs, atol=1e-6)
    if keep is not None:
        rows = np.broadcast_to(keep, (B,) + keep.shape[1:]).any(-1)  # [B, T]
        assert np.all(np.asarray(out)[~rows] == 0.0)


def test_scale_and_half_precision_inputs():
    q, k, v = _qkv(2)
    out, _ = reference.reference_attention(q, k, v, scale=0.1)
    want, _ = oracle.softmax_attention(q, k, v, scale=0.1)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
    half, _ = reference.reference_attention(*(tf.cast(a, tf.float16) for a in (q, k, v)))
    assert half.dtype == tf.float32
    np.testing.assert_allclose(np.asarray(half), oracle.softmax_attention(q, k, v)[0], atol=5e-3)
