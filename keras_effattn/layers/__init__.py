"""Attention layers: drop-in `keras.layers.MultiHeadAttention` subclasses, and attention specs."""

from keras_effattn.layers.favor_attention import FavorAttention
from keras_effattn.layers.fused_attention import FusedAttention
from keras_effattn.layers.low_rank_attention import LowRankAttention, SegmentMean
from keras_effattn.layers.spec import (
    ALIASES,
    KINDS,
    LayerSpec,
    attention_class,
    format_attention_spec,
    make_attention,
    parse_attention_spec,
)

__all__ = [
    "ALIASES",
    "KINDS",
    "FavorAttention",
    "FusedAttention",
    "LayerSpec",
    "LowRankAttention",
    "SegmentMean",
    "attention_class",
    "format_attention_spec",
    "make_attention",
    "parse_attention_spec",
]
