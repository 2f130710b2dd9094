"""Encoder backbones with swappable attention, the offline MiniLM default, and task models."""

from keras_effattn.models.attention_maps import attention_maps
from keras_effattn.models.backbones import PresetUnavailableError, load_backbone, tokenizer_for
from keras_effattn.models.classifier import (
    EffAttnTextClassifier,
    MaskedMeanPooling,
    build_classifier,
    swap_classifier_attention,
)
from keras_effattn.models.masked_lm import (
    build_masked_lm,
    encode_unmasked,
    mask_whole_words,
    swap_masked_lm_attention,
)
from keras_effattn.models.minilm import fold_bert_to_distilbert
from keras_effattn.models.swap import describe_attention, swap_attention

__all__ = [
    "EffAttnTextClassifier",
    "MaskedMeanPooling",
    "PresetUnavailableError",
    "attention_maps",
    "build_classifier",
    "build_masked_lm",
    "describe_attention",
    "encode_unmasked",
    "fold_bert_to_distilbert",
    "load_backbone",
    "mask_whole_words",
    "swap_attention",
    "swap_classifier_attention",
    "swap_masked_lm_attention",
    "tokenizer_for",
]
