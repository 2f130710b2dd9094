"""Naive softmax attention: the plain quadratic form, kept simple as the readable definition.

The fused, chunked and approximate paths are checked against an independent NumPy oracle in
the tests; this function is the same definition in keras.ops, public for users who want a
plain baseline (it builds the whole [B, N, T, S] matrix in float32).

Shape letters: B batch, T query length, S key length, N heads, H head size.
"""

from keras import ops

from keras_effattn.ops import masks as masks_lib


def reference_attention(query, key, value, attention_mask=None, scale=None):
    """softmax(Q Kᵀ · scale, masked) V with the whole [B, N, T, S] matrix, in float32.

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, N, H]``.
        value: ``[B, S, N, Hv]``.
        attention_mask: a keep mask ``[B, S]``, ``[B, 1, S]``, ``[B, T, S]``, a `MaskParts`,
            or None. Fully masked query rows give zero output.
        scale: float; defaults to ``1 / sqrt(H)``.

    Returns:
        ``(output [B, T, N, Hv] float32, probabilities [B, N, T, S] float32)``.

    Example:
    >>> import numpy as np
    >>> q = np.ones((1, 3, 2, 4), "float32")
    >>> out, probs = reference_attention(q, q, q)
    >>> tuple(out.shape), tuple(probs.shape)
    ((1, 3, 2, 4), (1, 2, 3, 3))
    """
    query = ops.cast(query, "float32")
    key = ops.cast(key, "float32")
    value = ops.cast(value, "float32")
    if scale is None:
        scale = 1.0 / float(query.shape[-1]) ** 0.5
    scores = ops.einsum("btnh,bsnh->bnts", query * scale, key)
    t, s = ops.shape(query)[1], ops.shape(key)[1]
    parts = masks_lib.as_mask_parts(attention_mask, query.shape[1], key.shape[1])
    keep = masks_lib.dense_keep(parts, t, s)
    if keep is not None:
        keep = ops.expand_dims(keep, 1)
        scores = ops.where(keep, scores, masks_lib.NEG_INF)
    probs = ops.softmax(scores, axis=-1)
    if keep is not None:
        probs = ops.where(keep, probs, 0.0)
    return ops.einsum("bnts,bsnh->btnh", probs, value), probs
