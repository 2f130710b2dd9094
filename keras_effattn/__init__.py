"""keras_effattn: memory-efficient Transformer attention for TensorFlow/Keras 3."""

__version__ = "0.1.0"

from keras_effattn import data
from keras_effattn.layers.favor_attention import FavorAttention
from keras_effattn.layers.fused_attention import FusedAttention
from keras_effattn.layers.low_rank_attention import LowRankAttention
from keras_effattn.layers.spec import (
    LayerSpec,
    format_attention_spec,
    make_attention,
    parse_attention_spec,
)
from keras_effattn.models.attention_maps import attention_maps
from keras_effattn.models.backbones import load_backbone
from keras_effattn.models.classifier import build_classifier
from keras_effattn.models.masked_lm import build_masked_lm
from keras_effattn.models.swap import describe_attention, swap_attention
from keras_effattn.training.distribute import get_strategy
from keras_effattn.training.fit import TrainConfig, train_and_evaluate
from keras_effattn.training.optimizers import build_optimizer
from keras_effattn.training.precision import precision_scope
from keras_effattn.training.remat import enable_remat

__all__ = [
    "FavorAttention",
    "FusedAttention",
    "LayerSpec",
    "LowRankAttention",
    "TrainConfig",
    "attention_maps",
    "build_classifier",
    "build_masked_lm",
    "build_optimizer",
    "data",
    "describe_attention",
    "enable_remat",
    "format_attention_spec",
    "get_strategy",
    "load_backbone",
    "make_attention",
    "parse_attention_spec",
    "precision_scope",
    "swap_attention",
    "train_and_evaluate",
]
