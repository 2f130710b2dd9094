"""FAVOR+ (Performer) linear-time attention as a MultiHeadAttention drop-in."""

import random

import keras
import tensorflow as tf

from keras_effattn.layers.fused_attention import (
    check_attention_axes,
    check_mha_layout,
    set_weights_with_extras,
)
from keras_effattn.ops import favor
from keras_effattn.ops import masks as masks_lib


def load_projection_weights(layer, source):
    """Copies MultiHeadAttention projection weights into `layer`, matching by variable path.

    Args:
        layer: a built MultiHeadAttention subclass.
        source: a built `keras.layers.MultiHeadAttention` (or subclass).
    """
    mine = {w.path.split("/", 1)[1]: w for w in layer.weights if "/" in w.path}
    theirs = {w.path.split("/", 1)[1]: w for w in source.weights if "/" in w.path}
    wanted = [p for p in theirs if p.split("/")[0] in ("query", "key", "value",
                                                        "attention_output", "gate")]
    missing = [p for p in wanted if p not in mine]
    if missing:
        raise ValueError(
            f"{layer.name} has no variables {missing} to receive from {source.name}; build both "
            "with the same num_heads, key_dim, value_dim, use_bias and input shapes."
        )
    for path in wanted:
        if tuple(mine[path].shape) != tuple(theirs[path].shape):
            raise ValueError(
                f"Shape mismatch for {path}: {tuple(mine[path].shape)} here, "
                f"{tuple(theirs[path].shape)} in {source.name}."
            )
        mine[path].assign(theirs[path].value)


@keras.saving.register_keras_serializable(package="keras_effattn")
class FavorAttention(keras.layers.MultiHeadAttention):
    """FAVOR+ (Performer) multi-head attention in linear time and memory.

    Approximates softmax attention with positive orthogonal random features:
    softmax(Q Kᵀ/sqrt(H)) V ≈ φ(Q) (φ(K)ᵀ V) / φ(Q) (φ(K)ᵀ 1), with
    φ(x) = exp(W x - |x|²/2 - c)/sqrt(M) on x scaled by H^(-1/4), W the M×H random features
    (orthogonal blocks, chi-distributed norms) and c a max stabiliser. Cost O((T + S)·M·H)
    instead of O(T·S·H). Padded keys get φ = 0, so they leave the numerator and the normaliser
    exactly; ``causal=True`` (or ``use_causal_mask=True``) uses block-wise prefix sums.

    Projections are MultiHeadAttention's (same variable names and shapes). The random features
    ``random_features`` [M, H] and the training-step counter ``feature_step`` are
    non-trainable weights added after them, so saving or exporting keeps the features fixed.
    ``get_weights()`` lists these two first, then MultiHeadAttention's; ``set_weights`` takes
    either the full list or MultiHeadAttention's (``set_weights(mha.get_weights())`` keeps the
    features), and `from_multi_head_attention` converts a trained layer.

    Masks: ``[B, S]`` or ``[B, 1, S]`` key padding (KerasHub's form) is used directly; a
    ``[B, T, S]`` mask is reduced to query and key padding (its row and column "any"), which is
    exact for padding masks; a per-query pattern such as causal must be given as
    ``causal=True``. Fully masked rows give zero output. Feature maps, sums and normalisers are
    float32 under every precision policy.

    Attention dropout has no matrix to act on and is not applied; `dropout` is accepted so the
    layer drops into KerasHub's `TransformerEncoder`, which passes it.

    Shape letters: B batch, T query length, S key length, N heads, H head size, M features.

    Args:
        num_heads: int, number of heads N.
        key_dim: int, size H of each query/key head.
        value_dim: int or None, size of each value head (defaults to `key_dim`).
        dropout: float, accepted for compatibility (see above).
        use_bias: bool. Defaults to True.
        num_features: int M > 0, random features per head. Defaults to 256.
        causal: bool, decoder (prefix-sum) attention. Defaults to False.
        redraw_every: int or None. None or 0 keeps the features fixed; N > 0 redraws them
            every N training calls (seeded by `seed` and the step, so reproducible).
        seed: int or None, seed of the random features and their redraws (None draws one when
            the layer is built; pass an int for redraws that are reproducible after reloading).
        causal_block_size: int > 0, block of the causal prefix sums. Defaults to 64.
        **kwargs: other `keras.layers.MultiHeadAttention` arguments.

    Call arguments:
        query, value, key, attention_mask, training, return_attention_scores, use_causal_mask:
            as `keras.layers.MultiHeadAttention`. With ``return_attention_scores=True`` the
            implied ``[B, N, T, S]`` matrix (normalised φ(Q)φ(K)ᵀ) is built: short inputs only.

    Returns:
        ``[B, T, dim]``, and the implied attention matrix when requested.

    Example:
    >>> import numpy as np
    >>> layer = FavorAttention(num_heads=2, key_dim=4, num_features=16, seed=0)
    >>> x = np.random.rand(1, 7, 8).astype("float32")
    >>> tuple(layer(x, x, attention_mask=np.ones((1, 1, 7), "int32")).shape)
    (1, 7, 8)

    References:
        Choromanski et al., "Rethinking Attention with Performers", ICLR 2021,
        arXiv:2009.14794.
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 num_features=256, causal=False, redraw_every=None, seed=None,
                 causal_block_size=64, **kwargs):
        if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}.")
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(
                f"num_features must be a positive int, got {num_features!r}. Try 256."
            )
        if redraw_every is not None and (
            isinstance(redraw_every, bool) or not isinstance(redraw_every, int) or redraw_every < 0
        ):
            raise ValueError(
                f"redraw_every must be None/0 (fixed features) or a positive int, got "
                f"{redraw_every!r}."
            )
        if not isinstance(causal_block_size, int) or causal_block_size <= 0:
            raise ValueError(
                f"causal_block_size must be a positive int, got {causal_block_size!r}.")
        if kwargs.get("sliding_window") is not None:
            raise ValueError(
                "FavorAttention does not support sliding_window; use FusedAttention.")
        check_attention_axes(kwargs.get("attention_axes"), type(self).__name__)
        super().__init__(num_heads=num_heads, key_dim=key_dim, value_dim=value_dim,
                         dropout=dropout, use_bias=use_bias, seed=seed, **kwargs)
        self.num_features = num_features
        self.causal = bool(causal)
        self.redraw_every = redraw_every
        self.causal_block_size = causal_block_size

    def build(self, query_shape, value_shape, key_shape=None):
        check_mha_layout(self, query_shape)
        super().build(query_shape, value_shape, key_shape)
        self._feature_seed = self.seed if self.seed is not None else random.randint(1, 2**30)
        num_features, dim, seed = self.num_features, self._key_dim, self._feature_seed

        def init_features(shape, dtype=None):
            return favor.orthogonal_random_features(num_features, dim, seed)

        self.random_features = self.add_weight(
            name="random_features", shape=(num_features, dim), dtype="float32",
            initializer=init_features, trainable=False,
        )
        self.feature_step = self.add_weight(
            name="feature_step", shape=(), dtype="int32", initializer="zeros", trainable=False,
        )
        self._extra_weights = [self.random_features, self.feature_step]

    def _compute_attention_mask(self, query, value, query_mask=None, value_mask=None,
                                key_mask=None, attention_mask=None, use_causal_mask=False):
        return masks_lib.merge_mask_parts(
            query_mask=query_mask, value_mask=value_mask, key_mask=key_mask,
            attention_mask=attention_mask, use_causal_mask=use_causal_mask,
            query_len=query.shape[1], key_len=value.shape[1],
        )

    def _features(self, training):
        if not training or not self.redraw_every:
            return self.random_features.value
        step = self.feature_step.value + 1
        self.feature_step.assign(step)

        def redraw():
            seed = tf.random.experimental.stateless_fold_in(
                tf.constant([self._feature_seed, 0], tf.int32), step)
            fresh = favor.orthogonal_random_features(self.num_features, self._key_dim, seed)
            self.random_features.assign(fresh)
            return fresh

        return tf.cond(tf.equal(step % self.redraw_every, 0), redraw,
                       lambda: tf.identity(self.random_features.value))

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        parts = masks_lib.as_mask_parts(attention_mask, query.shape[1], key.shape[1])
        causal = self.causal or use_causal_mask or parts.causal
        if causal and query.shape[1] is not None and key.shape[1] is not None:
            if query.shape[1] != key.shape[1]:
                raise ValueError(
                    "Causal FavorAttention needs query and key of the same length, got "
                    f"{query.shape[1]} and {key.shape[1]}."
                )
        query_keep, key_keep = masks_lib.reduce_to_padding(
            parts._replace(causal=False), "FavorAttention")
        features = self._features(bool(training))
        output = favor.favor_attention(
            query, key, value, features, key_keep=key_keep, query_keep=query_keep,
            causal=causal, block_size=self.causal_block_size,
        )
        probs = None
        if return_attention_scores:
            probs = keras.ops.cast(favor.favor_attention_matrix(
                query, key, features, key_keep, query_keep, causal), self.compute_dtype)
        return keras.ops.cast(output, self.compute_dtype), probs

    def set_weights(self, weights):
        """Sets all weights, or only the projections when given MultiHeadAttention's list."""
        set_weights_with_extras(self, weights, getattr(self, "_extra_weights", []))

    def load_multi_head_attention(self, mha):
        """Copies a built MultiHeadAttention's projections here (features are kept)."""
        load_projection_weights(self, mha)

    @classmethod
    def from_multi_head_attention(cls, mha, query_shape, value_shape=None, **kwargs):
        """A FavorAttention with `mha`'s configuration and projection weights.

        Args:
            mha: a built `keras.layers.MultiHeadAttention`.
            query_shape: the query shape to build with, e.g. ``(None, 128, 768)``.
            value_shape: the value shape (defaults to `query_shape`).
            **kwargs: FavorAttention options (num_features, causal, redraw_every, seed, ...).
        """
        config = mha.get_config()
        config.pop("name", None)
        config.update(kwargs)
        layer = cls(**config)
        layer.build(query_shape, value_shape or query_shape)
        layer.load_multi_head_attention(mha)
        return layer

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_features": self.num_features,
            "causal": self.causal,
            "redraw_every": self.redraw_every,
            "causal_block_size": self.causal_block_size,
        })
        return config
