"""Mask conventions: the accepted shapes, factorisation and reduction to padding."""

import numpy as np
import pytest
import tensorflow as tf

from keras_effattn.ops import masks


def test_padding_forms_become_key_padding():
    pad = np.array([[1, 1, 0], [1, 0, 0]], "int32")
    for form in (pad, pad[:, None, :]):
        parts = masks.merge_mask_parts(attention_mask=form, query_len=4, key_len=3)
        assert parts.dense is None
        np.testing.assert_array_equal(np.asarray(parts.key), pad.astype(bool))


def test_keras_masks_stay_factorised():
    q = tf.constant([[True, True, False, False]])
    v = tf.constant([[True, False, True]])
    parts = masks.merge_mask_parts(query_mask=q, value_mask=v, use_causal_mask=True)
    assert parts.dense is None and parts.causal
    keep = np.asarray(masks.dense_keep(parts, 4, 3))
    want = q.numpy()[:, :, None] & v.numpy()[:, None, :] & np.tril(np.ones((4, 3), bool))[None]
    np.testing.assert_array_equal(keep, want)


def test_dense_keep_slices_keys_with_offsets():
    parts = masks.MaskParts(key=tf.constant([[True] * 6]), causal=True, window=3)
    full = np.asarray(masks.dense_keep(parts, 6, 6))
    block = np.asarray(masks.dense_keep(parts, 6, 2, key_offset=2, key_slice=(2, 2)))
    np.testing.assert_array_equal(block, full[:, :, 2:4])


def test_reduce_to_padding_is_exact_for_outer_products_and_rejects_causal():
    q = np.array([[1, 1, 0]], bool)
    k = np.array([[1, 0, 1, 1]], bool)
    dense = tf.constant(q[:, :, None] & k[:, None, :])
    query, key = masks.reduce_to_padding(masks.MaskParts(dense=dense))
    np.testing.assert_array_equal(np.asarray(query), q)
    np.testing.assert_array_equal(np.asarray(key), k)
    with pytest.raises(ValueError, match="causal"):
        masks.reduce_to_padding(masks.MaskParts(causal=True))


@pytest.mark.parametrize("shape", [(2, 1, 1, 3), (3,), (2, 4, 5), (2, 2, 3)],
                         ids=["rank4", "rank1", "wrong_S", "wrong_T"])
def test_wrong_shapes_raise(shape):
    with pytest.raises(ValueError, match="attention_mask"):
        masks.check_attention_mask(np.ones(shape), query_len=4, key_len=3, batch=2)
