"""A masked language model on the same backbones and attention specs.

`build_masked_lm` returns KerasHub's `DistilBertMaskedLM` (a dense + layer-norm head whose
output projection is tied to the token embedding, plus an output bias) on a keras_effattn
backbone, with a `DistilBertMaskedLMPreprocessor` that picks and masks tokens inside the
`tf.data` pipeline. Its compiled loss is the mean cross-entropy over masked positions
(weighted by ``mask_weights``), so ``perplexity = exp(loss)``.

The all-MiniLM-L6-v2 checkpoint holds no masked-LM head (it is a sentence encoder), so with
``"minilm-l6"`` the head starts from random initialisation and must be trained before its
perplexity means anything; the encoder and the tied embedding table are pretrained.
"""

import math

import keras
import keras_hub

from keras_effattn.models import backbones as backbones_lib
from keras_effattn.models import classifier as classifier_lib


def build_masked_lm(
    source="minilm-l6",
    attention=None,
    max_length=128,
    mask_selection_rate=0.15,
    mask_selection_length=None,
    options=None,
    backbone_dropout=None,
    tokenizer=None,
):
    """Builds a masked-LM model (raw strings in, masked-token logits out).

    Args:
        source: a backbone source for `keras_effattn.load_backbone` (default ``"minilm-l6"``)
            or a KerasHub backbone.
        attention: an attention spec, or None to keep the source's attention.
        max_length: int, default 128. Token sequence length of the preprocessor; at most the
            backbone's max_sequence_length.
        mask_selection_rate: float in (0, 1), default 0.15. Share of tokens selected for
            prediction (BERT's 80/10/10 mask/random/keep split applies to them).
        mask_selection_length: int or None. Most positions predicted per sequence; None uses
            ``ceil(1.5 * rate * max_length)`` (room for the binomial spread of the count).
        options: per-kind attention options.
        backbone_dropout: optional float replacing the backbone's dropout rate.
        tokenizer: optional KerasHub tokenizer (default: the source's vocabulary).

    Returns:
        A `keras_hub.models.DistilBertMaskedLM` compiled with `masked_lm_loss()` (Adam 5e-5,
        masked-token accuracy); `.preprocessor` masks raw strings.

    Example:
    ```python
    mlm = build_masked_lm("minilm-l6", attention="exact", max_length=64)
    mlm.fit(tf.data.Dataset.from_tensor_slices(lines).batch(8))
    ```
    """
    if not isinstance(mask_selection_rate, float) or not 0.0 < mask_selection_rate < 1.0:
        raise ValueError(
            f"mask_selection_rate must be a float in (0, 1), got {mask_selection_rate!r}."
        )
    backbone = classifier_lib.task_backbone(source, attention, options, backbone_dropout)
    classifier_lib.check_max_length(max_length, backbone)
    if mask_selection_length is None:
        mask_selection_length = min(max_length, math.ceil(1.5 * mask_selection_rate * max_length))
    if not isinstance(mask_selection_length, int) or not 1 <= mask_selection_length <= max_length:
        raise ValueError(
            f"mask_selection_length must be an int in [1, max_length={max_length}], got "
            f"{mask_selection_length!r}."
        )
    if tokenizer is None:
        tokenizer = backbones_lib.tokenizer_for(
            source if isinstance(source, (str, dict)) else backbone
        )
    preprocessor = keras_hub.models.DistilBertMaskedLMPreprocessor(
        tokenizer=tokenizer,
        sequence_length=max_length,
        mask_selection_rate=mask_selection_rate,
        mask_selection_length=mask_selection_length,
    )
    model = keras_hub.models.DistilBertMaskedLM(backbone=backbone, preprocessor=preprocessor)
    model.compile(loss=masked_lm_loss())
    return model


def masked_lm_loss():
    """Cross-entropy averaged over the masked positions only (``exp`` of it is perplexity).

    Keras' default reduction divides by every prediction slot, padding slots included;
    ``"mean_with_sample_weight"`` divides by the sum of ``mask_weights`` instead.
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
