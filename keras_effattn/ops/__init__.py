"""The attention maths (no layers): masks, reference, exact (fused/chunked), FAVOR+, low-rank."""

from keras_effattn.ops.exact import attention_probs
from keras_effattn.ops.exact import chunked_attention
from keras_effattn.ops.exact import fused_attention
from keras_effattn.ops.masks import MaskParts
from keras_effattn.ops.reference import reference_attention

__all__ = [
    "MaskParts",
    "attention_probs",
    "chunked_attention",
    "fused_attention",
    "reference_attention",
]
