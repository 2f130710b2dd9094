"""keras_effattn: memory-efficient Transformer attention for TensorFlow/Keras 3."""

__version__ = "0.1.0"

from keras_effattn.layers.fused_attention import FusedAttention
from keras_effattn.layers.spec import LayerSpec
from keras_effattn.layers.spec import format_attention_spec
from keras_effattn.layers.spec import make_attention
from keras_effattn.layers.spec import parse_attention_spec
