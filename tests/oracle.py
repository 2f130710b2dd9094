"""An independent NumPy reference for attention (no TensorFlow, no Keras, no library code).

Shape letters: B batch, T query length, S key length, N heads, H head size, D model width.
Masks are keep masks (True = attend).
"""

import numpy as np


def softmax_attention(q, k, v, keep=None, scale=None):
    """Naive softmax attention in float64.

    Args:
        q: ``[B, T, N, H]``; k: ``[B, S, N, H]``; v: ``[B, S, N, Hv]``.
        keep: bool ``[B, T, S]`` (broadcastable) or None. Fully masked rows give zeros.

    Returns:
        ``(out [B, T, N, Hv], probs [B, N, T, S])``.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if keep is None:
        keep = np.ones(scores.shape, bool)
    else:
        keep = np.broadcast_to(np.asarray(keep, bool)[:, None], scores.shape)
    scores = np.where(keep, scores, -np.inf)
    row_max = np.max(scores, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(keep, np.exp(scores - row_max), 0.0)
    den = e.sum(-1, keepdims=True)
    probs = e / np.where(den > 0, den, 1.0)
    return np.einsum("bnts,bsnh->btnh", probs, v), probs


def causal_keep(t, s):
    return np.tril(np.ones((t, s), bool))[None]


def mha_forward(weights, query, value, keep=None, core=softmax_attention):
    """MultiHeadAttention's forward pass from its 8 weights (kernel, bias for q, k, v, out).

    Args:
        weights: ``[Wq [D,N,H], bq [N,H], Wk, bk, Wv, bv, Wo [N,H,D], bo [D]]``.
        query: ``[B, T, D]``; value: ``[B, S, D]`` (also used as key).
        keep: bool ``[B, T, S]`` or None.
        core: attention function (q, k, v, keep) -> (out, probs).
    """
    wq, bq, wk, bk, wv, bv, wo, bo = (np.asarray(w, np.float64) for w in weights)
    query = np.asarray(query, np.float64)
    value = np.asarray(value, np.float64)
    q = np.einsum("btd,dnh->btnh", query, wq) + bq
    k = np.einsum("bsd,dnh->bsnh", value, wk) + bk
    v = np.einsum("bsd,dnh->bsnh", value, wv) + bv
    out, probs = core(q, k, v, keep)
    return np.einsum("btnh,nhd->btd", out, wo) + bo, probs


def positive_features(x, w, is_query, keep=None, eps=1e-6):
    """FAVOR+'s φ in float64, written directly from the paper's formula (per batch and head)."""
    x = np.asarray(x, np.float64) * x.shape[-1] ** -0.25  # [B, L, N, H]
    logits = np.einsum("blnh,mh->bnlm", x, w) - 0.5 * np.sum(x**2, -1).transpose(0, 2, 1)[..., None]
    if is_query:
        stab = logits.max(-1, keepdims=True)
    else:
        real = logits if keep is None else np.where(keep[:, None, :, None], logits, -np.inf)
        stab = real.max(axis=(2, 3), keepdims=True)
        stab = np.where(np.isfinite(stab), stab, 0.0)
    phi = (np.exp(logits - stab) + eps) / np.sqrt(w.shape[0])
    if not is_query and keep is not None:
        phi = np.where(keep[:, None, :, None], phi, 0.0)
    return phi


def favor_naive(q, k, v, w, key_keep=None, causal=False):
    """The quadratic form of FAVOR+: normalised φ(Q) φ(K)ᵀ (masked) times V."""
    pq = positive_features(q, w, True)
    pk = positive_features(k, w, False, key_keep)
    a = np.einsum("bntm,bnsm->bnts", pq, pk)
    if causal:
        a = a * np.tril(np.ones(a.shape[-2:]))
    den = a.sum(-1, keepdims=True)
    a = a / np.where(den > 0, den, 1.0)
    return np.einsum("bnts,bsnh->btnh", a, np.asarray(v, np.float64)), a


def window_keep(t, s, window):
    """bool ``[1, T, S]``: |query position - key position| < window (a symmetric band)."""
    return (np.abs(np.arange(t)[:, None] - np.arange(s)[None, :]) < window)[None]


def linformer_naive(q, k, v, e, f, key_keep=None):
    """Linformer: masked keys zeroed, then projected by E, F; empty slots left out.

    E and F are ``[L, K]`` (shared by the heads) or ``[N, L, K]`` (one per head, computed
    head by head).
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    e, f = np.asarray(e, np.float64), np.asarray(f, np.float64)
    if e.ndim == 3:
        heads = [linformer_naive(q[:, :, n:n + 1], k[:, :, n:n + 1], v[:, :, n:n + 1], e[n],
                                 f[n], key_keep) for n in range(q.shape[2])]
        return (np.concatenate([h[0] for h in heads], axis=2),
                np.concatenate([h[1] for h in heads], axis=1))
    s = k.shape[1]
    keep = np.ones(k.shape[:2], bool) if key_keep is None else np.asarray(key_keep, bool)
    k = k * keep[..., None, None]
    v = v * keep[..., None, None]
    kp = np.einsum("bsnh,sk->bknh", k, e[:s])
    vp = np.einsum("bsnh,sk->bknh", v, f[:s])
    slots = (keep.astype(np.float64) @ np.abs(e[:s])) > 0  # [B, K]
    keep_slots = np.broadcast_to(slots[:, None, :], (q.shape[0], q.shape[1], slots.shape[1]))
    return softmax_attention(q, kp, vp, keep_slots)
