"""Exact softmax attention, fused for XLA, with an optional chunked memory-linear mode."""

import keras

from keras_effattn.ops import exact
from keras_effattn.ops import masks as masks_lib


def check_mha_layout(layer, query_shape):
    """Raises ValueError unless attention runs over axis 1 of rank-3 inputs (KerasHub's use)."""
    if len(query_shape) != 3:
        raise ValueError(
            f"{type(layer).__name__} takes query/value of shape [B, T, dim]; got rank "
            f"{len(query_shape)} ({tuple(query_shape)}). Use keras.layers.MultiHeadAttention "
            "for attention over several axes."
        )


def set_weights_with_extras(layer, weights, extras):
    """`layer.set_weights` that also accepts MultiHeadAttention's list (extras then kept).

    Args:
        layer: a built MultiHeadAttention subclass.
        weights: all of `layer`'s weights in `layer.weights` order, or only the projection
            weights in MultiHeadAttention's order (query, key, value, output; kernel, bias).
        extras: the variables the subclass added (random features, projections, counters).
    """
    variables = layer.weights
    if len(weights) == len(variables):
        base = variables
    else:
        base = [v for v in variables if not any(v is e for e in extras)]
        if len(weights) != len(base):
            raise ValueError(
                f"{layer.name} expects {len(variables)} weights (all) or {len(base)} "
                f"(MultiHeadAttention's projections only), got {len(weights)}."
            )
    for variable, value in zip(base, weights):
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(
                f"Weight {variable.path} has shape {tuple(variable.shape)}, got "
                f"{tuple(value.shape)}."
            )
        variable.assign(value)


def check_attention_axes(attention_axes, class_name):
    if attention_axes is None:
        return
    axes = (attention_axes,) if isinstance(attention_axes, int) else tuple(attention_axes)
    if axes not in ((1,), (-2,)):
        raise ValueError(
            f"{class_name} supports attention_axes=None (the sequence axis) only, got "
            f"{attention_axes!r}. Use keras.layers.MultiHeadAttention for other axes."
        )


@keras.saving.register_keras_serializable(package="keras_effattn")
class FusedAttention(keras.layers.MultiHeadAttention):
    """Exact multi-head softmax attention, fused for XLA, with a chunked memory-linear mode.

    Computes softmax(Q Kᵀ / sqrt(H)) V exactly, like `keras.layers.MultiHeadAttention`, from
    which it inherits the query/key/value/output projections (same variable names, shapes and
    order, so ``set_weights(mha.get_weights())`` and checkpoints carry over). Only the
    attention core (`_compute_attention`) is replaced: scores, mask, a float32 softmax, dropout
    and the weighted sum in one pass XLA fuses. Cost O(T·S) time and memory.

    With ``chunk_size=C`` the keys are processed in blocks of C with an online softmax, the
    queries in tiles of up to 1024 rows, and the backward pass recomputes each block instead of
    storing the T×S matrix: time stays O(T·S) but peak memory, in training as well as
    inference, is O(T·H + 1024·C) per head — linear in the length.
    Lengths that are not multiples of C are padded internally and masked. Without dropout the
    block loops are compiled with XLA (see `keras_effattn.ops.exact.chunked_attention`).

    Masks keep MultiHeadAttention's meaning (True = attend). ``attention_mask`` may be a key
    padding mask ``[B, S]``, KerasHub's ``[B, 1, S]`` or a full ``[B, T, S]`` mask. Padding
    masks and ``use_causal_mask`` are applied per block from positions (never as a T×S tensor);
    fully masked query rows give zero attention output. Dropout on the probabilities draws
    16-bit decisions from a stateless generator (the rate is rounded to a multiple of 1/65536);
    in chunked mode the backward pass regenerates the same masks.

    Shape letters: B batch, T query length, S key length, N heads, H head size.

    Args:
        num_heads: int, number of heads N.
        key_dim: int, size H of each query/key head.
        value_dim: int or None, size of each value head (defaults to `key_dim`).
        dropout: float, dropout rate on the attention probabilities. Defaults to 0.
        use_bias: bool, whether the projections have biases. Defaults to True.
        chunk_size: int or None. None (default) computes the full T×S matrix in one fused pass;
            an int C > 0 selects the chunked mode with key blocks of C.
        **kwargs: the other `keras.layers.MultiHeadAttention` arguments (output_shape,
            kernel/bias initializers, regularizers, constraints, seed, dtype, name, ...).

    Call arguments:
        query: ``[B, T, dim]``.
        value: ``[B, S, dim]``.
        key: optional ``[B, S, dim]``, defaults to `value`.
        attention_mask: optional bool/int keep mask ``[B, S]``, ``[B, 1, S]`` or ``[B, T, S]``.
        return_attention_scores: bool. Also return the ``[B, N, T, S]`` probabilities (built
            in full even in chunked mode: use for short inputs).
        training: bool, enables dropout.
        use_causal_mask: bool, each query attends only to keys at or before its position.

    Returns:
        ``[B, T, dim]`` (or `output_shape`), and the probabilities when requested.

    Example:
    >>> import numpy as np
    >>> layer = FusedAttention(num_heads=2, key_dim=4, chunk_size=3)
    >>> x = np.random.rand(1, 7, 8).astype("float32")
    >>> tuple(layer(x, x, attention_mask=np.ones((1, 1, 7), "int32")).shape)
    (1, 7, 8)

    References:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017, arXiv:1706.03762.
        Rabe & Staats, "Self-attention Does Not Need O(n²) Memory", 2021, arXiv:2112.05682.
        Dao et al., "FlashAttention", NeurIPS 2022, arXiv:2205.14135.
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 chunk_size=None, **kwargs):
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0
        ):
            raise ValueError(
                f"chunk_size must be None (full fused attention) or a positive int, got "
                f"{chunk_size!r}. Try chunk_size=256."
            )
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        check_attention_axes(kwargs.get("attention_axes"), type(self).__name__)
        super().__init__(num_heads=num_heads, key_dim=key_dim, value_dim=value_dim,
                         dropout=dropout, use_bias=use_bias, **kwargs)
        self.chunk_size = chunk_size

    def build(self, query_shape, value_shape, key_shape=None):
        check_mha_layout(self, query_shape)
        super().build(query_shape, value_shape, key_shape)

    def _compute_attention_mask(self, query, value, query_mask=None, value_mask=None,
                                key_mask=None, attention_mask=None, use_causal_mask=False):
        return masks_lib.merge_mask_parts(
            query_mask=query_mask, value_mask=value_mask, key_mask=key_mask,
            attention_mask=attention_mask, use_causal_mask=use_causal_mask,
            sliding_window=self._sliding_window, query_len=query.shape[1],
            key_len=value.shape[1],
        )

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        parts = masks_lib.as_mask_parts(attention_mask, query.shape[1], key.shape[1])
        if use_causal_mask and not parts.causal:
            parts = parts._replace(causal=True)
        seed = self._dropout_layer.seed_generator if self._dropout > 0.0 else None
        if self.chunk_size is None:
            output, probs = exact.fused_attention(
                query, key, value, parts, scale=self._inverse_sqrt_key_dim,
                dropout_rate=self._dropout, seed=seed, training=bool(training),
            )
            return output, keras.ops.cast(probs, self.compute_dtype)
        output = exact.chunked_attention(
            query, key, value, parts, chunk_size=self.chunk_size,
            scale=self._inverse_sqrt_key_dim, dropout_rate=self._dropout, seed=seed,
            training=bool(training),
        )
        probs = None
        if return_attention_scores:
            probs = keras.ops.cast(
                exact.attention_probs(query, key, parts, self._inverse_sqrt_key_dim),
                self.compute_dtype,
            )
        return output, probs

    def get_config(self):
        config = super().get_config()
        config["chunk_size"] = self.chunk_size
        return config
