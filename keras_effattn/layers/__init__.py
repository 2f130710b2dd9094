"""Attention layers: drop-in `keras.layers.MultiHeadAttention` subclasses, and attention specs."""

from keras_effattn.layers.favor_attention import FavorAttention
from keras_effattn.layers.fused_attention import FusedAttention
from keras_effattn.layers.low_rank_attention import LowRankAttention
from keras_effattn.layers.spec import ALIASES
from keras_effattn.layers.spec import KINDS
from keras_effattn.layers.spec import LayerSpec
from keras_effattn.layers.spec import attention_class
from keras_effattn.layers.spec import format_attention_spec
from keras_effattn.layers.spec import make_attention
from keras_effattn.layers.spec import parse_attention_spec

__all__ = [
    "ALIASES",
    "KINDS",
    "FavorAttention",
    "FusedAttention",
    "LowRankAttention",
    "LayerSpec",
    "attention_class",
    "format_attention_spec",
    "make_attention",
    "parse_attention_spec",
]
