"""The attention maths (no layers): masks, reference, exact (fused/chunked), FAVOR+, low-rank."""

from keras_effattn.ops.exact import attention_probs, chunked_attention, fused_attention
from keras_effattn.ops.favor import favor_attention, orthogonal_random_features
from keras_effattn.ops.lowrank import linformer_attention, svd_factors
from keras_effattn.ops.masks import MaskParts
from keras_effattn.ops.reference import reference_attention

__all__ = [
    "MaskParts",
    "attention_probs",
    "chunked_attention",
    "favor_attention",
    "fused_attention",
    "linformer_attention",
    "orthogonal_random_features",
    "reference_attention",
    "svd_factors",
]
