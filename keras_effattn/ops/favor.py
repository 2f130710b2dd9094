"""FAVOR+: positive orthogonal random features for linear-time softmax attention.

Shape letters: B batch, T query length, S key length, N heads, H head size, Hv value head size,
M number of random features.

The softmax kernel exp(q·k / sqrt(H)) is approximated by φ(q')·φ(k') with q' = q·H^(-1/4),
k' = k·H^(-1/4) and the positive map φ(x) = exp(W x - |x|²/2 - c) / sqrt(M), W the M×H random
features (blocks of orthogonal rows with chi-distributed norms) and c a stabiliser (the row max
for queries, the max over real keys for keys, 0 for a sequence without real keys; both cancel
in the normalisation). Attention is then φ(Q) (φ(K)ᵀ V) / φ(Q) (φ(K)ᵀ 1): O((T + S)·M·H) time
and memory. Padded keys get φ = 0 (their logits are replaced before the exp, so nothing
overflows), so they leave both the numerator and the normaliser; a sequence without real keys
gives zero output with finite gradients. The causal form uses prefix sums computed per
block of C positions (exact masked quadratic form inside a block, running sums across blocks).
All feature maps, sums and normalisers are float32.

References:
    Choromanski et al., "Rethinking Attention with Performers", ICLR 2021, arXiv:2009.14794.
"""

import math

import tensorflow as tf
from keras import ops

from keras_effattn.ops.masks import NEG_INF

# Added to every real feature so that normalisers stay positive when all features underflow.
FEATURE_EPS = 1e-6


def orthogonal_random_features(num_features, dim, seed):
    """``[M, H]`` Gaussian features with orthogonal blocks and chi-distributed row norms.

    Rows come in blocks of `dim` mutually orthogonal directions (QR of a Gaussian matrix); each
    row is rescaled by the norm of an independent Gaussian vector, so each row is marginally
    N(0, I) while rows within a block are orthogonal (lower-variance estimator).

    Args:
        num_features: int M > 0.
        dim: int H > 0.
        seed: int or int32 ``[2]`` tensor (stateless: the same seed gives the same features).

    Returns:
        float32 ``[M, H]``.

    Example:
    >>> w = orthogonal_random_features(6, 4, seed=0)
    >>> tuple(w.shape)
    (6, 4)
    """
    if not isinstance(num_features, int) or num_features <= 0:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}.")
    if isinstance(seed, int):
        seed = tf.constant([seed, 0], tf.int32)
    seed = tf.cast(seed, tf.int32)
    num_blocks = -(-num_features // dim)
    gauss = tf.random.stateless_normal([num_blocks, dim, dim], seed=seed, dtype=tf.float32)
    q, _ = tf.linalg.qr(gauss)  # columns orthonormal
    rows = tf.reshape(tf.transpose(q, [0, 2, 1]), [num_blocks * dim, dim])[:num_features]
    norm_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    norms = tf.norm(
        tf.random.stateless_normal([num_features, dim], seed=norm_seed, dtype=tf.float32), axis=-1
    )
    return rows * norms[:, None]


def positive_features(x, features, is_query, key_keep=None):
    """The positive random feature map φ, float32.

    The key stabiliser c is the max over real keys only. A sequence with no real key at all
    gets c = 0 (its features are all zeroed anyway), and masked keys' logits are replaced by 0
    before the ``exp`` (the "double where"), so no inf or NaN appears on either branch of a
    ``where``, forward or backward: fully masked sequences have finite gradients.

    Args:
        x: ``[B, L, N, H]`` queries or keys (already scaled by H^(-1/4)).
        features: ``[M, H]``.
        is_query: bool. Queries are stabilised per row, keys by one max over real keys.
        key_keep: bool ``[B, L]`` (keys only) or None; masked keys get φ = 0, do not enter
            the stabiliser and receive no gradient.

    Returns:
        float32 ``[B, N, L, M]``.

    Example:
    >>> import numpy as np
    >>> w = orthogonal_random_features(4, 2, seed=0)
    >>> k = np.ones((1, 3, 1, 2), "float32")
    >>> phi = positive_features(k, w, False, key_keep=np.zeros((1, 3), bool))
    >>> float(np.abs(phi).max())  # no real key: all features zero, and finite
    0.0
    """
    x = ops.cast(x, "float32")
    num = features.shape[0]
    proj = ops.einsum("blnh,mh->bnlm", x, features)
    half_sq = 0.5 * ops.sum(ops.square(x), axis=-1)  # [B, L, N]
    logits = proj - ops.expand_dims(ops.transpose(half_sq, (0, 2, 1)), -1)
    if is_query:
        return (ops.exp(logits - ops.max(logits, axis=-1, keepdims=True)) + FEATURE_EPS) / (
            math.sqrt(num))
    if key_keep is None:
        return (ops.exp(logits - ops.max(logits, axis=(2, 3), keepdims=True)) + FEATURE_EPS) / (
            math.sqrt(num))
    keep4 = ops.expand_dims(ops.expand_dims(ops.cast(key_keep, "bool"), 1), -1)  # [B, 1, L, 1]
    stab = ops.max(ops.where(keep4, logits, NEG_INF), axis=(2, 3), keepdims=True)
    has_keys = ops.any(keep4, axis=2, keepdims=True)  # [B, 1, 1, 1]
    stab = ops.where(has_keys, stab, 0.0)
    shifted = ops.where(keep4, logits - stab, 0.0)  # masked keys never reach exp
    phi = (ops.exp(shifted) + FEATURE_EPS) / math.sqrt(num)
    return ops.where(keep4, phi, 0.0)


def favor_features(query, key, features, key_keep=None):
    """φ(Q) ``[B, N, T, M]`` and φ(K) ``[B, N, S, M]`` for softmax with scale 1/sqrt(H)."""
    scale = float(query.shape[-1]) ** -0.25
    q = ops.cast(query, "float32") * scale
    k = ops.cast(key, "float32") * scale
    return (
        positive_features(q, features, True),
        positive_features(k, features, False, key_keep),
    )


def _finish(num, den, query_keep):
    den = ops.expand_dims(den, -1)
    out = num / ops.where(den > 0.0, den, 1.0)
    if query_keep is not None:
        out = ops.where(ops.expand_dims(ops.expand_dims(query_keep, 1), -1), out, 0.0)
    return ops.transpose(out, (0, 2, 1, 3))  # [B, T, N, Hv]


def favor_attention(query, key, value, features, key_keep=None, query_keep=None,
                    causal=False, block_size=64):
    """Linear-time FAVOR+ attention.

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, N, H]``.
        value: ``[B, S, N, Hv]``.
        features: float32 ``[M, H]`` from `orthogonal_random_features`.
        key_keep: bool ``[B, S]`` key padding or None.
        query_keep: bool ``[B, T]`` query padding (masked rows give zeros) or None.
        causal: bool; query i attends to keys j <= i (requires T == S).
        block_size: int, the block C of the causal prefix sums.

    Returns:
        float32 ``[B, T, N, Hv]``.

    Example:
    >>> import numpy as np
    >>> x = np.random.rand(1, 5, 2, 4).astype("float32")
    >>> w = orthogonal_random_features(8, 4, seed=0)
    >>> tuple(favor_attention(x, x, x, w, causal=True, block_size=2).shape)
    (1, 5, 2, 4)
    """
    phi_q, phi_k = favor_features(query, key, features, key_keep)
    v = ops.transpose(ops.cast(value, "float32"), (0, 2, 1, 3))  # [B, N, S, Hv]
    if not causal:
        kv = ops.einsum("bnsm,bnsh->bnmh", phi_k, v)
        num = ops.einsum("bntm,bnmh->bnth", phi_q, kv)
        den = ops.einsum("bntm,bnm->bnt", phi_q, ops.sum(phi_k, axis=2))
        return _finish(num, den, query_keep)
    num, den = _causal_prefix(phi_q, phi_k, v, block_size)
    return _finish(num, den, query_keep)


def _causal_prefix(phi_q, phi_k, v, block_size):
    """Σ_{j<=i} φ(q_i)·φ(k_j) v_j and its normaliser, block-wise (no [T, M, Hv] tensor)."""
    shape = tf.shape(phi_q)
    b, n, t = shape[0], shape[1], shape[2]
    m = phi_q.shape[-1]
    hv = v.shape[-1]
    c = block_size
    nb = (t + c - 1) // c
    pad = nb * c - t
    padding = [[0, 0], [0, 0], [0, pad], [0, 0]]
    q = tf.reshape(tf.pad(phi_q, padding), [b, n, nb, c, m])
    k = tf.reshape(tf.pad(phi_k, padding), [b, n, nb, c, m])
    vb = tf.reshape(tf.pad(v, padding), [b, n, nb, c, hv])
    # Running sums over the blocks before each block (exclusive prefix).
    kv_blocks = tf.einsum("bnjcm,bnjch->bnjmh", k, vb)
    kv_prefix = tf.cumsum(kv_blocks, axis=2, exclusive=True)
    k_prefix = tf.cumsum(tf.reduce_sum(k, axis=3), axis=2, exclusive=True)  # [b, n, nb, m]
    tril = tf.linalg.band_part(tf.ones([c, c], tf.float32), -1, 0)
    inner = tf.einsum("bnjcm,bnjdm->bnjcd", q, k) * tril
    num = tf.einsum("bnjcm,bnjmh->bnjch", q, kv_prefix) + tf.einsum("bnjcd,bnjdh->bnjch", inner, vb)
    den = tf.einsum("bnjcm,bnjm->bnjc", q, k_prefix) + tf.reduce_sum(inner, axis=-1)
    num = tf.reshape(num, [b, n, nb * c, hv])[:, :, :t]
    den = tf.reshape(den, [b, n, nb * c])[:, :, :t]
    return num, den


def favor_attention_matrix(query, key, features, key_keep=None, query_keep=None, causal=False):
    """The ``[B, N, T, S]`` attention matrix FAVOR+ implies: normalised φ(Q) φ(K)ᵀ (masked).

    Quadratic: meant for inspecting short inputs and for tests (it is the naive form the
    linear path must equal).
    """
    phi_q, phi_k = favor_features(query, key, features, key_keep)
    scores = ops.einsum("bntm,bnsm->bnts", phi_q, phi_k)
    if causal:
        t, s = ops.shape(scores)[2], ops.shape(scores)[3]
        rows, cols = ops.expand_dims(ops.arange(t), 1), ops.expand_dims(ops.arange(s), 0)
        tri = ops.greater_equal(rows, cols)
        scores = ops.where(tri, scores, 0.0)
    den = ops.sum(scores, axis=-1, keepdims=True)
    probs = scores / ops.where(den > 0.0, den, 1.0)
    if query_keep is not None:
        probs = ops.where(ops.expand_dims(ops.expand_dims(query_keep, 1), -1), probs, 0.0)
    return probs
