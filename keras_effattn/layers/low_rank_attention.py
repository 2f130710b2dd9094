"""Low-rank attention (Linformer) with optional low-rank Q/K/V projections."""

import keras
from keras.src.layers.attention.multi_head_attention import _build_proj_equation

from keras_effattn.layers.fused_attention import (
    check_attention_axes,
    check_mha_layout,
    set_weights_with_extras,
)
from keras_effattn.ops import exact, lowrank
from keras_effattn.ops import masks as masks_lib


class _FactorizedProjection(keras.layers.Layer):
    """x [B, L, D] -> [B, L, N, H] through a rank-R bottleneck: (x @ down) @ up + bias."""

    def __init__(self, rank, num_heads, head_dim, use_bias, common_kwargs, **kwargs):
        super().__init__(dtype=common_kwargs.get("dtype"), **kwargs)
        shared = {k: v for k, v in common_kwargs.items() if k != "dtype"}
        self.down = keras.layers.EinsumDense(
            "abc,cd->abd", output_shape=(None, rank), name="down",
            dtype=common_kwargs.get("dtype"), **shared)
        self.up = keras.layers.EinsumDense(
            "abd,dnh->abnh", output_shape=(None, num_heads, head_dim),
            bias_axes="nh" if use_bias else None, name="up",
            dtype=common_kwargs.get("dtype"), **shared)

    def build(self, input_shape):
        self.down.build(input_shape)
        self.up.build(self.down.compute_output_shape(input_shape))

    def call(self, x):
        return self.up(self.down(x))

    def compute_output_shape(self, input_shape):
        return self.up.compute_output_shape(self.down.compute_output_shape(input_shape))


def _reseeded(initializer):
    """`initializer` with the next seed, so that F does not start as a copy of E.

    Keras' random initializers draw the same values at every call (an unseeded one fixes a seed
    when it is created); a deterministic initializer (no ``seed``) is returned as it is.
    """
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    seed = config["seed"]
    config["seed"] = seed + 1 if isinstance(seed, int) else None
    return type(initializer).from_config(config)


@keras.saving.register_keras_serializable(package="keras_effattn")
class SegmentMean(keras.initializers.Initializer):
    """Initialises Linformer projections ``[..., L, k]`` to segment means
    (`keras_effattn.ops.lowrank.segment_mean_projection`), the same for every head.

    Pass ``projection_initializer="segment_mean"`` (also in a spec:
    ``"lowrank(k=128,max_length=256,projection_initializer=segment_mean)"``). The segments split
    the L = ``max_length`` rows, so set ``max_length`` to the length the model runs at to use
    all k slots (at S < L only the first ``S·k/L`` slots receive keys).
    """

    def __call__(self, shape, dtype=None):
        projection = lowrank.segment_mean_projection(int(shape[-2]), int(shape[-1]))
        return keras.ops.cast(keras.ops.broadcast_to(projection, tuple(shape)),
                              dtype or "float32")

    def get_config(self):
        return {}


# Initializers named by a string in `projection_initializer` besides Keras' own.
PROJECTION_INITIALIZERS = {"segment_mean": SegmentMean}


@keras.saving.register_keras_serializable(package="keras_effattn")
class LowRankAttention(keras.layers.MultiHeadAttention):
    """Linformer multi-head attention: keys and values projected along the sequence to k.

    K' = Eᵀ K and V' = Fᵀ V with E, F of shape [max_length, k] (sliced to the actual length S),
    then softmax(Q K'ᵀ / sqrt(H)) V': O(T·k) time and memory instead of O(T·S). Padded keys and
    values are zeroed before the projection, so padding never leaks into K' or V', and
    projected slots that receive no real key are left out of the softmax (so identity E, F with
    k >= S is exact attention). Sequences
    shorter than k work (E is sliced to S rows). With ``k=None`` there is no sequence
    projection (exact attention).

    Length policy: S > max_length is an error naming the length, the limit and the fix (build
    the layer with a larger `max_length`); there is no silent truncation. A static length (eager
    calls, or tracing with a known length) raises ValueError. A length unknown when traced (a
    tf.function with a ``None`` length, as KerasHub models and exported graphs run) is checked
    when the graph runs and raises ``tf.errors.InvalidArgumentError`` with the same explanation.
    XLA drops run-time assertions, so a ``jit_compile`` function traced with a ``None`` length
    and ONNX graphs (tf2onnx drops them too) report a shape mismatch instead: truncate inputs
    to `max_length` there (the ONNX predictor does).

    ``qkv_rank=R`` factorises each Q/K/V projection through a rank-R bottleneck (variables
    ``query/down/kernel`` [D, R] and ``query/up/kernel`` [R, N, H], likewise for key/value);
    `from_multi_head_attention` initialises it from a trained full-rank layer by truncated SVD.
    Without `qkv_rank` the projections are MultiHeadAttention's (same names and shapes);
    ``get_weights()`` then lists E (and F) first, and ``set_weights(mha.get_weights())`` sets the
    projections and keeps E and F.

    Masks: ``[B, S]`` or ``[B, 1, S]`` key padding (KerasHub's form) directly; a ``[B, T, S]``
    mask is reduced to query and key padding (exact for padding masks). Causal and
    sliding-window masks cannot be expressed after a sequence projection and raise ValueError.
    Softmax in float32; dropout acts on the [B, N, T, k] probabilities.

    Shape letters: B batch, T query length, S key length, N heads, H head size.

    Args:
        num_heads: int, number of heads N.
        key_dim: int, size H of each query/key head.
        value_dim: int or None, size of each value head (defaults to `key_dim`).
        dropout: float, dropout on the attention probabilities.
        use_bias: bool. Defaults to True.
        k: int > 0 or None, projected length. Defaults to 256.
        max_length: int > 0, the longest sequence (rows of E and F). Defaults to 512.
        share_heads: bool, one E (and F) for all heads. Defaults to True.
        share_kv: bool, F = E. Defaults to False.
        qkv_rank: int > 0 or None, rank of the Q/K/V projections (<= min(dim, N·H)).
        projection_initializer: initializer of E and F. Defaults to N(0, 1/k). A seeded
            random initializer draws F with the next seed, so E and F start independent.
            ``"segment_mean"`` (`SegmentMean`) starts both as means of contiguous segments,
            which keeps a pretrained model's attention over positions.
        seed: int or None, seeds the default projection initializer and dropout.
        **kwargs: other `keras.layers.MultiHeadAttention` arguments.

    Call arguments:
        query, value, key, attention_mask, training, return_attention_scores: as
            `keras.layers.MultiHeadAttention`. With ``return_attention_scores=True`` the implied
            ``[B, N, T, S]`` matrix P Fᵀ is returned (output = that matrix times V).

    Returns:
        ``[B, T, dim]``, and the implied attention matrix when requested.

    Example:
    >>> import numpy as np
    >>> layer = LowRankAttention(num_heads=2, key_dim=4, k=3, max_length=16)
    >>> x = np.random.rand(1, 7, 8).astype("float32")
    >>> tuple(layer(x, x, attention_mask=np.ones((1, 1, 7), "int32")).shape)
    (1, 7, 8)

    References:
        Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020,
        arXiv:2006.04768.
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, k=256,
                 max_length=512, share_heads=True, share_kv=False, qkv_rank=None,
                 projection_initializer=None, seed=None, **kwargs):
        def positive(name, value, allow_none):
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                none = " or None" if allow_none else ""
                raise ValueError(f"{name} must be a positive int{none}, got {value!r}.")

        positive("num_heads", num_heads, False)
        positive("k", k, True)
        positive("max_length", max_length, False)
        positive("qkv_rank", qkv_rank, True)
        if kwargs.get("sliding_window") is not None:
            raise ValueError(
                "LowRankAttention does not support sliding_window; use FusedAttention.")
        if qkv_rank is not None and kwargs.get("use_gate"):
            raise ValueError("qkv_rank cannot be combined with use_gate=True.")
        check_attention_axes(kwargs.get("attention_axes"), type(self).__name__)
        super().__init__(num_heads=num_heads, key_dim=key_dim, value_dim=value_dim,
                         dropout=dropout, use_bias=use_bias, seed=seed, **kwargs)
        self.k = k
        self.max_length = max_length
        self.share_heads = bool(share_heads)
        self.share_kv = bool(share_kv)
        self.qkv_rank = qkv_rank
        if projection_initializer is None:
            projection_initializer = keras.initializers.RandomNormal(
                stddev=1.0 / float(k or 1) ** 0.5, seed=seed)
        if isinstance(projection_initializer, str) and (
                projection_initializer.lower() in PROJECTION_INITIALIZERS):
            projection_initializer = PROJECTION_INITIALIZERS[projection_initializer.lower()]()
        try:
            self.projection_initializer = keras.initializers.get(projection_initializer)
        except ValueError as error:
            raise ValueError(
                f"Unknown projection_initializer {projection_initializer!r}: use a Keras "
                f"initializer or one of {sorted(PROJECTION_INITIALIZERS)}.") from error

    def build(self, query_shape, value_shape, key_shape=None):
        check_mha_layout(self, query_shape)
        key_shape = value_shape if key_shape is None else key_shape
        if self.qkv_rank is None:
            super().build(query_shape, value_shape, key_shape)
        else:
            self._build_factorized(query_shape, value_shape, key_shape)
        self._extra_weights = []
        if self.k is not None:
            shape = (self.max_length, self.k)
            if not self.share_heads:
                shape = (self._num_heads,) + shape
            self.key_projection = self.add_weight(
                name="key_projection", shape=shape, initializer=self.projection_initializer,
                trainable=True)
            self._extra_weights.append(self.key_projection)
            if self.share_kv:
                self.value_projection = self.key_projection
            else:
                self.value_projection = self.add_weight(
                    name="value_projection", shape=shape,
                    initializer=_reseeded(self.projection_initializer), trainable=True)
                self._extra_weights.append(self.value_projection)

    def _build_factorized(self, query_shape, value_shape, key_shape):
        for name, shape, head_dim in (("query", query_shape, self._key_dim),
                                      ("key", key_shape, self._key_dim),
                                      ("value", value_shape, self._value_dim)):
            limit = min(int(shape[-1]), self._num_heads * head_dim)
            if self.qkv_rank > limit:
                raise ValueError(
                    f"qkv_rank={self.qkv_rank} exceeds the {name} projection's dimensions "
                    f"(input {shape[-1]}, output {self._num_heads}x{head_dim}); use "
                    f"qkv_rank <= {limit} or None."
                )
        common = self._get_common_kwargs_for_sublayer()
        self._query_dense = _FactorizedProjection(
            self.qkv_rank, self._num_heads, self._key_dim, self._use_bias, common, name="query")
        self._query_dense.build(query_shape)
        self._key_dense = _FactorizedProjection(
            self.qkv_rank, self._num_heads, self._key_dim, self._use_bias,
            self._get_common_kwargs_for_sublayer(), name="key")
        self._key_dense.build(key_shape)
        self._value_dense = _FactorizedProjection(
            self.qkv_rank, self._num_heads, self._value_dim, self._use_bias,
            self._get_common_kwargs_for_sublayer(), name="value")
        self._value_dense.build(value_shape)
        _, _, output_rank = _build_proj_equation(len(query_shape) - 1, bound_dims=1,
                                                 output_dims=2)
        self._build_attention(output_rank)
        self._output_dense = self._make_output_dense(
            query_shape, self._get_common_kwargs_for_sublayer(), "attention_output")
        dense_input = list(self._query_dense.compute_output_shape(query_shape))
        dense_input[-1] = self._value_dim
        self._output_dense.build(tuple(dense_input))

    def _compute_attention_mask(self, query, value, query_mask=None, value_mask=None,
                                key_mask=None, attention_mask=None, use_causal_mask=False):
        return masks_lib.merge_mask_parts(
            query_mask=query_mask, value_mask=value_mask, key_mask=key_mask,
            attention_mask=attention_mask, use_causal_mask=use_causal_mask,
            query_len=query.shape[1], key_len=value.shape[1],
        )

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        parts = masks_lib.as_mask_parts(attention_mask, query.shape[1], key.shape[1])
        if use_causal_mask:
            parts = parts._replace(causal=True)
        query_keep, key_keep = lowrank.padding_parts(parts, "LowRankAttention")
        if self.k is None:
            seed = self._dropout_layer.seed_generator if self._dropout > 0.0 else None
            output, probs = exact.fused_attention(
                query, key, value, masks_lib.MaskParts(query=query_keep, key=key_keep),
                scale=self._inverse_sqrt_key_dim, dropout_rate=self._dropout, seed=seed,
                training=bool(training))
            return output, keras.ops.cast(probs, self.compute_dtype)
        key = lowrank.check_max_length(key, self.max_length, "LowRankAttention")
        value = lowrank.check_max_length(value, self.max_length, "LowRankAttention")

        def dropout_fn(probs):
            return self._dropout_layer(probs, training=training)

        output, probs = lowrank.linformer_attention(
            query, key, value, self.key_projection, self.value_projection, key_keep=key_keep,
            query_keep=query_keep, scale=self._inverse_sqrt_key_dim,
            dropout_fn=dropout_fn if self._dropout > 0.0 else None)
        matrix = None
        if return_attention_scores:
            matrix = keras.ops.cast(lowrank.implied_attention_matrix(
                probs, self.value_projection, key_keep, keras.ops.shape(key)[1]),
                self.compute_dtype)
        return output, matrix

    def set_weights(self, weights):
        """Sets all weights, or only the projections when given MultiHeadAttention's list."""
        set_weights_with_extras(self, weights, getattr(self, "_extra_weights", []))

    @classmethod
    def from_multi_head_attention(cls, mha, query_shape, value_shape=None, **kwargs):
        """A LowRankAttention carrying a trained layer's weights, Q/K/V factorised by SVD.

        Args:
            mha: a built `keras.layers.MultiHeadAttention` (or a full-rank subclass such as
                `FusedAttention` or a LowRankAttention without `qkv_rank`).
            query_shape: the query shape to build with, e.g. ``(None, 128, 768)``.
            value_shape: the value shape (defaults to `query_shape`).
            **kwargs: LowRankAttention options (k, max_length, share_heads, share_kv,
                qkv_rank, ...). With ``qkv_rank=R`` each Q/K/V kernel W is replaced by its best
                rank-R approximation (truncated SVD, bias kept); R = min(dim, N·H) is exact.

        Returns:
            A built LowRankAttention.
        """
        config = mha.get_config()
        for key in ("name", "k", "max_length", "share_heads", "share_kv", "qkv_rank",
                    "projection_initializer", "chunk_size", "num_features", "causal",
                    "redraw_every", "causal_block_size"):
            config.pop(key, None)
        config.update(kwargs)
        layer = cls(**config)
        layer.build(query_shape, value_shape or query_shape)
        for name in ("query", "key", "value"):
            source = getattr(mha, f"_{name}_dense")
            target = getattr(layer, f"_{name}_dense")
            kernel = source.kernel.numpy()
            bias = source.bias.numpy() if source.bias is not None else None
            if layer.qkv_rank is None:
                target.kernel.assign(kernel)
                if bias is not None:
                    target.bias.assign(bias)
                continue
            down, up = lowrank.svd_factors(kernel, layer.qkv_rank)
            target.down.kernel.assign(down)
            target.up.kernel.assign(up)
            if bias is not None:
                target.up.bias.assign(bias)
        layer._output_dense.set_weights(mha._output_dense.get_weights())
        return layer

    def get_config(self):
        config = super().get_config()
        config.update({
            "k": self.k,
            "max_length": self.max_length,
            "share_heads": self.share_heads,
            "share_kv": self.share_kv,
            "qkv_rank": self.qkv_rank,
            "projection_initializer": keras.initializers.serialize(self.projection_initializer),
        })
        return config

