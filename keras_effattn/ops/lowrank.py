"""Low-rank attention maths: Linformer sequence projection and low-rank factor helpers.

Shape letters: B batch, T query length, S key length, N heads, H head size, Hv value head size,
K projected length (Linformer's k), L maximum length, D model width, R factor rank.

Linformer projects keys and values along the sequence with E, F of shape [L, K] (sliced to the
actual length S): K' = Eᵀ K, V' = Fᵀ V, then softmax(Q K'ᵀ / sqrt(H)) V' costs O(T·K) instead
of O(T·S). Padded keys and values are zeroed *before* the projection, so they never leak into
K' or V'. Projected slots that receive no real key (possible with sparse E, e.g. the identity
when K >= S) are left out of the softmax.

References:
    Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020, arXiv:2006.04768.
"""

import numpy as np
import tensorflow as tf
from keras import ops

from keras_effattn.ops import masks as masks_lib


def check_max_length(x, max_length, what="LowRankAttention"):
    """`x` ``[B, S, ...]`` unchanged, once its length S is known to be <= `max_length`.

    E and F have `max_length` rows, so a longer sequence cannot be projected. A static S is
    checked now; an unknown S (a tf.function traced with a ``None`` length, as KerasHub models
    and exported graphs are) gets a run-time assertion that the returned tensor depends on, so it
    fires before any shape error.

    Raises:
        ValueError: S is static and exceeds `max_length` (eager calls, or tracing).
        tf.errors.InvalidArgumentError: at run time, when S is dynamic and exceeds
            `max_length`; the message names the length, `max_length` and the fix. XLA
            (``jit_compile=True``) and tf2onnx drop assertions: there a too-long input gives
            a shape mismatch instead.

    Example:
    >>> import numpy as np
    >>> check_max_length(np.zeros((1, 9, 2)), 8)
    Traceback (most recent call last):
    ...
    ValueError: LowRankAttention got a sequence of length 9 but max_length=8: E and F have only 8 rows. Build the layer with max_length >= 9 (or truncate the inputs).
    """
    length = x.shape[1]
    fix = "Build the layer with max_length >= {} (or truncate the inputs)."
    if length is not None:
        if length > max_length:
            raise ValueError(
                f"{what} got a sequence of length {length} but max_length={max_length}: E and F "
                f"have only {max_length} rows. " + fix.format(length)
            )
        return x
    x = tf.convert_to_tensor(x)
    dynamic = tf.shape(x)[1]
    check = tf.debugging.Assert(
        dynamic <= max_length,
        [f"{what} got a sequence of length", dynamic,
         f"but max_length={max_length}: E and F have only {max_length} rows. "
         + fix.format("the longest sequence")],
        name="check_max_length",
    )
    with tf.control_dependencies([check]):
        return tf.identity(x)


def project_sequence(x, projection, key_keep=None):
    """Projects ``[B, S, N, H]`` along the sequence with ``[L, K]`` or per-head ``[N, L, K]``.

    Rows of `projection` beyond S are ignored (sliced), padded positions are zeroed first.

    Returns:
        ``[B, K, N, H]`` in x's dtype.
    """
    s_len = ops.shape(x)[1]
    if key_keep is not None:
        keep = ops.expand_dims(ops.expand_dims(key_keep, -1), -1)
        x = ops.where(keep, x, ops.zeros_like(x))
    projection = ops.cast(projection, x.dtype)
    if len(projection.shape) == 2:
        proj = projection[:s_len]
        return ops.einsum("bsnh,sk->bknh", x, proj)
    proj = projection[:, :s_len]
    return ops.einsum("bsnh,nsk->bknh", x, proj)


def slot_keep(projection, key_keep, num_keys):
    """bool ``[B, N|1, K]``: projected slots that receive at least one real key.

    A slot whose column of E is zero on every real key holds K' = 0 and V' = 0 and carries no
    information; it is left out of the softmax (so E = identity with K >= S is exact attention
    and padded keys never dilute it). With a dense random E every slot is kept.
    """
    if key_keep is None:
        key_keep = ops.ones((1, num_keys), "bool")
    keep = ops.cast(key_keep, "float32")
    weight = ops.abs(ops.cast(projection, "float32"))
    if len(projection.shape) == 2:
        mass = ops.einsum("bs,sk->bk", keep, weight[:num_keys])
        return ops.expand_dims(mass > 0.0, 1)
    mass = ops.einsum("bs,nsk->bnk", keep, weight[:, :num_keys])
    return mass > 0.0


def linformer_probs(query, key_projected, scale=None, query_keep=None, slots=None):
    """float32 ``[B, N, T, K]`` softmax(Q K'ᵀ · scale) over the kept `slots` ``[B, N|1, K]``.

    Rows where `query_keep` is False, or with no kept slot, are zero.
    """
    if scale is None:
        scale = 1.0 / float(query.shape[-1]) ** 0.5
    query = ops.multiply(query, ops.cast(scale, query.dtype))
    scores = ops.cast(ops.einsum("btnh,bknh->bntk", query, key_projected), "float32")
    if slots is not None:
        slots = ops.expand_dims(slots, 2)  # [B, N|1, 1, K]
        probs = ops.softmax(ops.where(slots, scores, masks_lib.NEG_INF), axis=-1)
        probs = ops.where(slots, probs, 0.0)
    else:
        probs = ops.softmax(scores, axis=-1)
    if query_keep is not None:
        probs = ops.where(ops.expand_dims(ops.expand_dims(query_keep, 1), -1), probs, 0.0)
    return probs


def linformer_attention(query, key, value, key_projection, value_projection, key_keep=None,
                        query_keep=None, scale=None, dropout_fn=None):
    """Linformer attention.

    Args:
        query: ``[B, T, N, H]``.
        key: ``[B, S, N, H]``.
        value: ``[B, S, N, Hv]``.
        key_projection: E, ``[L, K]`` or ``[N, L, K]`` with L >= S.
        value_projection: F, same shape as E (pass E again to share it).
        key_keep: bool ``[B, S]`` key padding or None.
        query_keep: bool ``[B, T]`` query padding or None (masked rows give zeros).
        scale: float; defaults to ``1 / sqrt(H)``.
        dropout_fn: optional callable applied to the float32 ``[B, N, T, K]`` probabilities.

    Returns:
        ``(output [B, T, N, Hv] in value's dtype, probabilities [B, N, T, K] float32)``.

    Example:
    >>> import numpy as np
    >>> x = np.random.rand(1, 5, 2, 4).astype("float32")
    >>> e = np.random.rand(8, 3).astype("float32")
    >>> out, probs = linformer_attention(x, x, x, e, e)
    >>> tuple(out.shape), tuple(probs.shape)
    ((1, 5, 2, 4), (1, 2, 5, 3))
    """
    k_proj = project_sequence(key, key_projection, key_keep)
    v_proj = project_sequence(value, value_projection, key_keep)
    slots = slot_keep(key_projection, key_keep, ops.shape(key)[1])
    probs = linformer_probs(query, k_proj, scale, query_keep, slots)
    used = dropout_fn(probs) if dropout_fn is not None else probs
    out = ops.einsum("bntk,bknh->btnh", ops.cast(used, value.dtype), v_proj)
    return out, probs


def implied_attention_matrix(probs, value_projection, key_keep=None, num_keys=None):
    """The ``[B, N, T, S]`` matrix A with output = A V implied by Linformer: P Fᵀ (masked).

    Rows of A need not be positive or sum to one (F is a general projection).
    """
    s_len = num_keys
    if len(value_projection.shape) == 2:
        f = ops.cast(value_projection[:s_len], "float32")
        mat = ops.einsum("bntk,sk->bnts", probs, f)
    else:
        f = ops.cast(value_projection[:, :s_len], "float32")
        mat = ops.einsum("bntk,nsk->bnts", probs, f)
    if key_keep is not None:
        mat = ops.where(ops.expand_dims(ops.expand_dims(key_keep, 1), 1), mat, 0.0)
    return mat


def segment_mean_projection(length, k):
    """A ``[length, k]`` projection that averages contiguous segments of positions.

    Row s (a position) goes to slot ``j = floor(s · k / length)`` with weight ``1 / |segment
    j|``, so ``Eᵀ K`` is the mean key of each of k consecutive segments (pooling by
    ``length / k`` positions). With ``k = length`` it is the identity (exact attention); with
    ``k > length`` the extra slots receive nothing and are left out of the softmax. As a
    Linformer start it keeps a pretrained model's attention over positions (each pooled slot
    stands for its neighbourhood) where a random E scrambles it.

    Example:
    >>> segment_mean_projection(4, 2)
    array([[0.5, 0. ],
           [0.5, 0. ],
           [0. , 0.5],
           [0. , 0.5]], dtype=float32)
    """
    for name, value in (("length", length), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    slots = (np.arange(length) * k) // length
    counts = np.bincount(slots, minlength=k)
    projection = np.zeros((length, k), np.float32)
    projection[np.arange(length), slots] = 1.0 / counts[slots]
    return projection


def svd_factors(kernel, rank):
    """Truncated-SVD factors of a ``[D, ...]`` kernel: ``down [D, R]``, ``up [R, ...]``.

    ``down @ up`` is the best rank-R approximation of the kernel flattened to ``[D, prod(...)]``
    (Eckart–Young); the singular values are split evenly (sqrt) between the two factors.

    Args:
        kernel: array ``[D, ...]``.
        rank: int, 1 <= R <= min(D, prod(...)).

    Returns:
        ``(down float32 [D, R], up float32 [R, ...])``.

    Example:
    >>> w = np.arange(12.0).reshape(3, 2, 2)
    >>> down, up = svd_factors(w, 2)
    >>> bool(np.allclose(np.einsum("dr,rab->dab", down, up), w))
    True
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    flat = kernel.reshape(kernel.shape[0], -1)
    max_rank = min(flat.shape)
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= max_rank:
        raise ValueError(
            f"rank must be an int in [1, {max_rank}] for a kernel of shape {kernel.shape}, "
            f"got {rank!r}."
        )
    u, s, vt = np.linalg.svd(flat, full_matrices=False)
    root = np.sqrt(s[:rank])
    down = u[:, :rank] * root
    up = (root[:, None] * vt[:rank]).reshape((rank,) + kernel.shape[1:])
    return down.astype("float32"), up.astype("float32")


def padding_parts(mask_parts, what="LowRankAttention"):
    """(query_keep, key_keep) from a mask; causal and window masks raise ValueError."""
    return masks_lib.reduce_to_padding(mask_parts, what)
