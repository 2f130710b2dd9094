"""A masked language model on the same backbones and attention specs.

`build_masked_lm` returns KerasHub's `DistilBertMaskedLM` (a dense + layer-norm head whose
output projection is tied to the token embedding, plus an output bias) on a keras_effattn
backbone, with a `DistilBertMaskedLMPreprocessor` that picks and masks tokens inside the
`tf.data` pipeline. Its compiled loss is the mean cross-entropy over masked positions
(weighted by ``mask_weights``), so ``perplexity = exp(loss)``.

The all-MiniLM-L6-v2 checkpoint holds no masked-LM head (it is a sentence encoder), so with
``"minilm-l6"`` the head starts from random initialisation and must be trained before its
perplexity means anything; the encoder and the tied embedding table are pretrained.

For training and scoring with whole-word masks instead of KerasHub's token-level ones,
`encode_unmasked` packs texts once and `mask_whole_words` draws seeded whole-word masks on them
(`keras_effattn.data.masking`); the model then runs with its preprocessor detached.
`swap_masked_lm_attention` moves a trained masked-LM model to other attention, head included.
"""

import contextlib
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


def encode_unmasked(preprocessor, texts, batch_size=256):
    """Tokenises and packs `texts` as the masked-LM preprocessor does, without masking.

    Args:
        preprocessor: a KerasHub masked-LM preprocessor (e.g. ``build_masked_lm(...).
            preprocessor``).
        texts: sequence of str.
        batch_size: int, default 256. Texts tokenised per call.

    Returns:
        A dict of NumPy arrays ``token_ids`` (int32 [N, T]) and ``padding_mask`` (bool
        [N, T]), with ``T`` the preprocessor's sequence length.
    """
    import numpy as np

    if not len(texts):
        raise ValueError("encode_unmasked got no texts.")
    if preprocessor.packer is None:
        preprocessor.build(None)
    pad = preprocessor.tokenizer.pad_token_id
    token_ids = []
    for start in range(0, len(texts), batch_size):
        pieces = preprocessor.tokenizer(list(texts[start:start + batch_size]))
        ids, _ = preprocessor.packer((pieces,))
        token_ids.append(np.asarray(ids, np.int32))
    token_ids = np.concatenate(token_ids)
    return {"token_ids": token_ids, "padding_mask": token_ids != pad}


def whole_word_masker(preprocessor):
    """A `keras_effattn.data.masking.WholeWordMasker` with the preprocessor's vocabulary and
    masking settings (selection rate and length, mask and random-token rates)."""
    from keras_effattn.data.masking import WholeWordMasker

    return WholeWordMasker.from_tokenizer(
        preprocessor.tokenizer,
        rate=float(preprocessor.mask_selection_rate),
        max_predictions=int(preprocessor.mask_selection_length),
        mask_token_rate=float(preprocessor.mask_token_rate),
        random_token_rate=float(preprocessor.random_token_rate),
    )


def mask_whole_words(preprocessor, encoded, seed):
    """Whole-word-masked model inputs for `encoded` (from `encode_unmasked`).

    The same `seed` gives the same masks in any process, so every model scored on them
    predicts exactly the same tokens.

    Args:
        preprocessor: the model's masked-LM preprocessor (vocabulary and masking settings).
        encoded: dict of ``token_ids`` and ``padding_mask`` arrays.
        seed: int, seeds a `numpy.random.Generator`.

    Returns:
        ``(x, mask_ids, mask_weights)``: `x` is the dict of ``token_ids`` (masked),
        ``padding_mask`` and ``mask_positions`` the model takes with its preprocessor
        detached; `mask_weights` (1 per predicted token) is the loss's sample weight.
    """
    import numpy as np

    out = whole_word_masker(preprocessor)(encoded["token_ids"], np.random.default_rng(seed))
    x = {"token_ids": out["token_ids"], "padding_mask": encoded["padding_mask"],
         "mask_positions": out["mask_positions"]}
    return x, out["mask_ids"], out["mask_weights"]


def swap_masked_lm_attention(model, attention, options=None):
    """A copy of a (trained) masked-LM model whose encoder uses other attention.

    The backbone goes through `keras_effattn.swap_attention` (projections copied, low-rank
    Q/K/V factors from the truncated SVD of the trained projections, new FAVOR+/Linformer state
    fresh); the preprocessor is shared and the masked-LM head's weights are copied (its output
    projection stays tied to the new backbone's token embedding). Nothing is retrained.

    Args:
        model: a `keras_hub.models.DistilBertMaskedLM` (e.g. from `build_masked_lm`).
        attention: an attention spec (see `keras_effattn.swap_attention`).
        options: optional per-kind default options.

    Returns:
        A new `DistilBertMaskedLM` compiled with `masked_lm_loss()`; `model` is unchanged.
    """
    from keras_effattn.models import swap

    if not isinstance(model, keras_hub.models.DistilBertMaskedLM):
        raise ValueError(
            "swap_masked_lm_attention needs a DistilBertMaskedLM (from build_masked_lm), got "
            f"{type(model).__name__}."
        )
    backbone = swap.swap_attention(model.backbone, attention, options)
    swapped = keras_hub.models.DistilBertMaskedLM(backbone=backbone,
                                                  preprocessor=model.preprocessor)
    head, new_head = model.masked_lm_head, swapped.masked_lm_head
    own = [w for w in head.weights if not any(w is e for e in model.backbone.weights)]
    new_own = [w for w in new_head.weights if not any(w is e for e in backbone.weights)]
    for target, source in zip(new_own, own, strict=True):
        target.assign(source)
    swapped.compile(loss=masked_lm_loss())
    return swapped


@contextlib.contextmanager
def preprocessor_detached(model):
    """Within the block, `model.fit`/`evaluate` take already-masked ``(x, y, sample_weight)``
    (e.g. from `mask_whole_words`) instead of raw strings; the preprocessor is restored after,
    also on error, so a saved model still takes raw strings."""
    preprocessor = model.preprocessor
    model.preprocessor = None
    try:
        yield model
    finally:
        model.preprocessor = preprocessor
