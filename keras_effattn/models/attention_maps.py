"""Attention maps for visualisation: per layer, the [B, heads, T, T] attention matrix.

For exact attention (stock `MultiHeadAttention` or `FusedAttention`) the map is the softmax
probability matrix. For FAVOR+ and low-rank layers it is the attention matrix the layer implies
(each layer returns it from ``return_attention_scores=True``: the normalised
``phi(Q) phi(K)^T`` for FAVOR+, the softmax over projected keys mapped back to positions for
Linformer). Implied matrices are built in full, so this is for short inputs.
"""

import keras
import keras_hub
import numpy as np

from keras_effattn.models import swap


def _backbone_of(model):
    backbone = getattr(model, "backbone", None)
    return backbone if backbone is not None else model


def _as_inputs(inputs, preprocessor, max_length):
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        if preprocessor is None:
            raise ValueError(
                "attention_maps got texts but no preprocessor: pass a task model with "
                ".preprocessor, preprocessor=..., or token ids."
            )
        tokenizer = getattr(preprocessor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("The preprocessor has no .tokenizer to tokenize texts with.")
        length = max_length or getattr(preprocessor, "sequence_length", None)
        if length is None:
            raise ValueError("Give max_length: the preprocessor sets no sequence_length.")
        packer = keras_hub.models.DistilBertTextClassifierPreprocessor(
            tokenizer=tokenizer, sequence_length=length
        )
        x = packer(list(inputs))
        return {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
    if isinstance(inputs, dict):
        if "token_ids" not in inputs:
            raise ValueError(f"Input dict needs 'token_ids'; got keys {sorted(inputs)}.")
        token_ids = np.asarray(inputs["token_ids"])
        padding_mask = np.asarray(inputs.get("padding_mask", token_ids != 0))
        return {"token_ids": token_ids.astype("int32"), "padding_mask": padding_mask}
    token_ids = np.asarray(inputs)
    if token_ids.ndim == 1:
        token_ids = token_ids[None, :]
    if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(
            "attention_maps takes texts, a dict with token_ids/padding_mask, or integer token "
            f"ids [B, T]; got an array of dtype {token_ids.dtype} and shape {token_ids.shape}."
        )
    pad_id = 0
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is not None:
        pad_id = int(tokenizer.pad_token_id)
    return {"token_ids": token_ids.astype("int32"), "padding_mask": token_ids != pad_id}


def attention_maps(model_or_backbone, inputs, preprocessor=None, max_length=None):
    """Computes the attention matrix of every layer and head.

    Args:
        model_or_backbone: a KerasHub backbone built from `TransformerEncoder` layers, or a
            task model with `.backbone` (and `.preprocessor` for texts).
        inputs: a string or list of strings (tokenized with the preprocessor's tokenizer and
            padded to `max_length`), a dict with ``token_ids`` (and ``padding_mask``), or
            integer token ids ``[B, T]`` (padding mask: ids != the pad id).
        preprocessor: optional KerasHub preprocessor with a `.tokenizer`; defaults to the
            model's own.
        max_length: optional int, the token length for texts (default: the preprocessor's).

    Returns:
        A dict with ``"maps"``: a list (one per encoder layer, bottom to top) of float32 NumPy
        arrays ``[B, heads, T, T]`` (rows: queries, columns: keys; padded keys get 0),
        ``"kinds"``: the spec of each layer, ``"token_ids"`` and ``"padding_mask"``.

    Raises:
        ValueError: for inputs longer than the backbone's max_sequence_length, texts without a
            preprocessor, or an attention layer that cannot return its attention matrix.

    Example:
    ```python
    out = attention_maps(keras_effattn.build_classifier("minilm-l6", max_length=16),
                         ["A fine film."])
    out["maps"][0].shape  # (1, 12, 16, 16)
    ```
    """
    backbone = _backbone_of(model_or_backbone)
    preprocessor = preprocessor or getattr(model_or_backbone, "preprocessor", None)
    encoders = swap.encoder_layers(backbone)
    x = _as_inputs(inputs, preprocessor, max_length)
    swap.check_sequence_length(backbone, x)
    embed_model = swap.embedding_model(backbone)
    feed = {name: x[name] for name in backbone.input if name in x}
    if "segment_ids" in backbone.input:
        feed["segment_ids"] = np.zeros_like(np.asarray(x["token_ids"]))
    missing = sorted(set(backbone.input) - set(feed))
    if missing:
        raise ValueError(f"{type(backbone).__name__} needs inputs {missing}.")
    hidden = embed_model(feed, training=False)
    padding_mask = keras.ops.convert_to_tensor(np.asarray(x["padding_mask"]).astype("int32"))
    kinds = [str(swap.layer_spec_of(layer)) for layer in swap.attention_layers(backbone)]
    maps = []
    for encoder, kind in zip(encoders, kinds):
        hidden, scores = encoder(
            hidden, padding_mask=padding_mask, return_attention_scores=True, training=False
        )
        if scores is None:
            raise ValueError(
                f"Layer {encoder.name!r} ({kind}) returned no attention matrix, so it cannot "
                "be visualised; use an exact, FAVOR+ or low-rank layer."
            )
        maps.append(np.asarray(keras.ops.convert_to_numpy(scores), dtype="float32"))
    return {
        "maps": maps,
        "kinds": kinds,
        "token_ids": np.asarray(x["token_ids"]),
        "padding_mask": np.asarray(x["padding_mask"]).astype(bool),
    }


def token_attention(scores, padding_mask, pooling="mean", cls_index=0):
    """How much attention each token receives from the positions a classifier pools.

    Args:
        scores: ``[B, heads, T, T]`` attention probabilities (queries x keys) of one layer.
        padding_mask: ``[B, T]``, true/1 on real tokens.
        pooling: ``"mean"`` (the classifier averages all real tokens: the weights are the
            attention rows of the real queries, averaged) or ``"cls"`` (the classifier reads
            one token: its row).
        cls_index: the pooled token for ``"cls"``.

    Returns:
        ``[B, T]`` float32 weights, averaged over heads: each row sums to 1 over the real tokens,
        padded tokens get 0.
    """
    scores = keras.ops.cast(scores, "float32")
    mask = keras.ops.cast(padding_mask, "float32")
    per_query = keras.ops.mean(scores, axis=1)  # [B, T(query), T(key)]
    if pooling == "cls":
        weights = per_query[:, cls_index, :]
    elif pooling == "mean":
        weights = keras.ops.einsum("bq,bqk->bk", mask, per_query)
        weights = weights / keras.ops.maximum(keras.ops.sum(mask, axis=1, keepdims=True), 1.0)
    else:
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}.")
    return weights * mask


class _TopLayerWithAttention(keras.layers.Layer):
    """Runs an encoder layer (its own weights) and returns ``(sequence, token_attention)``.

    KerasHub's `TransformerEncoder` declares one output to the functional API even with
    ``return_attention_scores=True``; wrapping the call lets its output spec be traced.
    """

    def __init__(self, encoder, pooling, cls_index, **kwargs):
        super().__init__(dtype=encoder.dtype_policy, **kwargs)
        self.encoder, self.pooling, self.cls_index = encoder, pooling, cls_index

    def call(self, hidden, padding_mask, training=None):
        sequence, scores = self.encoder(
            hidden, padding_mask=padding_mask, return_attention_scores=True, training=training
        )
        if scores is None:
            raise ValueError(
                f"The top layer {self.encoder.name!r} returns no attention matrix, so the "
                "model cannot output attention; export without it."
            )
        return sequence, token_attention(scores, padding_mask, self.pooling, self.cls_index)


def attention_output_model(classifier):
    """The classifier with a second output: the attention its top layer pays to each token.

    The model shares every layer (and weight) with `classifier` and computes its logits the same
    way; only the top encoder layer is also asked for its attention probabilities
    (``return_attention_scores=True``: the softmax matrix for exact layers, the implied matrix
    for FAVOR+ and low-rank ones), reduced by `token_attention` to the tokens the classifier's
    pooling reads. Used by the ONNX export's optional ``attention`` output, which the web page
    shows per word.

    Args:
        classifier: a `keras_effattn.models.classifier.EffAttnTextClassifier` (from
            `keras_effattn.build_classifier`).

    Returns:
        A `keras.Model` on the classifier's inputs with outputs ``{"logits": [B, C],
        "attention": [B, T]}``.

    Raises:
        ValueError: for another kind of model, or a top layer that cannot return its attention
            matrix.
    """
    from keras_effattn.models.classifier import EffAttnTextClassifier

    if not isinstance(classifier, EffAttnTextClassifier):
        raise ValueError(
            "attention_output_model needs a classifier from keras_effattn.build_classifier, "
            f"got {type(classifier).__name__}."
        )
    backbone = classifier.backbone
    top = swap.encoder_layers(backbone)[-1]
    node = top._inbound_nodes[0]
    below = keras.Model(backbone.input, node.arguments.args[0])
    inputs = classifier.input
    padding_mask = inputs["padding_mask"]
    hidden = below(inputs)
    cls_index = getattr(backbone, "cls_token_index", 0)
    sequence, attention = _TopLayerWithAttention(top, classifier.pooling, cls_index)(
        hidden, padding_mask
    )
    logits = classifier.head(sequence, padding_mask)
    return keras.Model(inputs, {"logits": logits, "attention": attention},
                       name=f"{classifier.name}_with_attention")
