"""A text classifier from raw strings to logits on any attention spec.

`EffAttnTextClassifier` is a `keras_hub.models.TextClassifier`: `fit`, `evaluate` and `predict`
take raw strings (the preprocessor runs inside the `tf.data` pipeline), while calling the model
itself on ``{"token_ids": int32[B, T], "padding_mask": [B, T]}`` returns logits
``[B, num_classes]`` (the form ONNX export traces); with ``num_classes=1`` it is a regressor
giving one linear score ``[B, 1]`` (STS-B similarity). The head pools the encoder output with the
[CLS] vector or a masked mean over real tokens (all-MiniLM-L6-v2 was trained with mean pooling),
then applies an optional ReLU dense layer, dropout and the logits layer.
"""

import keras
import keras_hub

from keras_effattn.models import backbones as backbones_lib
from keras_effattn.models import minilm, preprocessing, swap

POOLINGS = ("cls", "mean")


@keras.saving.register_keras_serializable(package="keras_effattn")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of a sequence over its real (unpadded) positions.

    Computes ``sum_t x[b, t] * m[b, t] / max(sum_t m[b, t], 1)`` in float32 and casts back.

    Call arguments:
        inputs: float tensor [B, T, D].
        padding_mask: [B, T] tensor, true/1 for real tokens.

    Returns:
        [B, D] tensor in the layer's compute dtype.

    Example:
    ```python
    MaskedMeanPooling()(np.ones((2, 3, 4)), padding_mask=np.array([[1, 1, 0], [1, 0, 0]]))
    ```
    """

    def call(self, inputs, padding_mask):
        mask = keras.ops.cast(padding_mask, "float32")[:, :, None]
        total = keras.ops.sum(keras.ops.cast(inputs, "float32") * mask, axis=1)
        count = keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        return keras.ops.cast(total / count, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="keras_effattn")
class EffAttnTextClassifier(keras_hub.models.TextClassifier):
    """An encoder classifier with [CLS] or masked-mean pooling and freezing options.

    Args:
        backbone: a KerasHub encoder backbone taking ``token_ids`` and ``padding_mask``
            (any attention spec), e.g. from `keras_effattn.load_backbone`.
        num_classes: int >= 1. Number of classes; 1 makes a regressor with a single linear
            output (trained with mean squared error by the default `compile`).
        preprocessor: a KerasHub text classifier preprocessor, or None to feed token ids.
        pooling: ``"mean"`` (masked mean over real tokens, default) or ``"cls"``.
        hidden_dim: int or None. Width of the ReLU dense layer before the logits; None uses the
            backbone's hidden size, 0 drops the layer.
        dropout: float in [0, 1), default 0.1. Dropout before the logits layer.
        activation: optional activation of the outputs (None: logits).
        freeze_layers: int >= 0. Number of bottom encoder layers made non-trainable.
        freeze_token_embedding: bool. Make the token embedding table non-trainable.
        **kwargs: `keras_hub.models.Task` arguments (``name``, ``compile``...).

    Example:
    ```python
    classifier = keras_effattn.build_classifier("minilm-l6", attention="exact", max_length=128)
    classifier.fit(train_ds.batch(16))  # (string, label) pairs
    classifier.predict(["What a fine film."])
    ```
    """

    backbone_cls = keras_hub.models.DistilBertBackbone
    preprocessor_cls = keras_hub.models.DistilBertTextClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        pooling="mean",
        hidden_dim=None,
        dropout=0.1,
        activation=None,
        freeze_layers=0,
        freeze_token_embedding=False,
        **kwargs,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"num_classes must be an int >= 1 (1: a regressor with one linear output, "
                f">= 2: a classifier), got {num_classes!r}."
            )
        if num_classes == 1 and keras.activations.get(activation) is not keras.activations.linear:
            raise ValueError(
                f"num_classes=1 builds a regressor whose output is a linear score; got "
                f"activation={activation!r}. Leave activation=None."
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}.")
        encoders = swap.encoder_layers(backbone)
        if not isinstance(freeze_layers, int) or not 0 <= freeze_layers <= len(encoders):
            raise ValueError(
                f"freeze_layers must be an int in [0, {len(encoders)}] (the backbone has "
                f"{len(encoders)} encoder layers), got {freeze_layers!r}."
            )
        if (
            "token_ids" not in backbone.input
            or "padding_mask" not in backbone.input
            or len(backbone.input) != 2
        ):
            raise ValueError(
                f"{type(backbone).__name__} takes inputs {sorted(backbone.input)}; the "
                "classifier needs a backbone on token_ids and padding_mask only. Fold BERT "
                "checkpoints into DistilBERT (load_backbone(folder, fold_segments=True))."
            )
        for layer in encoders[:freeze_layers]:
            layer.trainable = False
        if freeze_token_embedding:
            backbone.token_embedding.trainable = False

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        width = backbone.hidden_dim if hidden_dim is None else hidden_dim
        self.pooler = (
            MaskedMeanPooling(dtype=backbone.dtype_policy, name="mean_pooling")
            if pooling == "mean"
            else None
        )
        self.pooled_dense = (
            keras.layers.Dense(
                width,
                activation="relu",
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                dtype=backbone.dtype_policy,
                name="pooled_dense",
            )
            if width
            else None
        )
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        )
        self.output_dense = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            activation=activation,
            dtype=backbone.dtype_policy,
            name="logits",
        )

        # === Functional Model ===
        inputs = backbone.input
        sequence = backbone(inputs)
        if isinstance(sequence, dict):
            sequence = sequence["sequence_output"]
        outputs = self.head(sequence, inputs["padding_mask"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.pooling = pooling
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.freeze_layers = freeze_layers
        self.freeze_token_embedding = freeze_token_embedding

    def head(self, sequence, padding_mask):
        """Pooling, optional hidden layer, dropout and output layer: sequence [B, T, D] ->
        logits (the functional graph's tail, reused by `attention_output_model`)."""
        if self.pooler is not None:
            x = self.pooler(sequence, padding_mask=padding_mask)
        else:
            x = sequence[:, getattr(self.backbone, "cls_token_index", 0), :]
        if self.pooled_dense is not None:
            x = self.pooled_dense(x)
        return self.output_dense(self.output_dropout(x))

    @property
    def is_regressor(self):
        """True for a one-output model (``num_classes=1``): a linear score, not logits."""
        return self.output_dense.units == 1

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """`keras_hub.models.TextClassifier.compile`; for a regressor (``num_classes=1``) the
        ``"auto"`` loss is mean squared error and the ``"auto"`` metrics MAE and RMSE."""
        if self.is_regressor:
            if loss == "auto":
                loss = keras.losses.MeanSquaredError()
            if metrics == "auto":
                metrics = [keras.metrics.MeanAbsoluteError(name="mae"),
                           keras.metrics.RootMeanSquaredError(name="rmse")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "pooling": self.pooling,
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "freeze_layers": self.freeze_layers,
                "freeze_token_embedding": self.freeze_token_embedding,
            }
        )
        return config


def task_backbone(source, attention, options, backbone_dropout):
    """A DistilBERT-input backbone for task models: BERT backbones are folded first."""
    backbone = backbones_lib.load_backbone(source, options=options, dropout=backbone_dropout)
    if isinstance(backbone, keras_hub.models.BertBackbone):
        kinds = swap.describe_attention(backbone)
        backbone = minilm.fold_bert_to_distilbert(backbone)
        attention = kinds if attention is None else attention
    if attention is not None:
        backbone = swap.swap_attention(backbone, attention, options)
    return backbone


def check_max_length(max_length, backbone):
    """Raises ValueError unless 2 <= max_length <= backbone.max_sequence_length."""
    limit = backbone.max_sequence_length
    if not isinstance(max_length, int) or not 2 <= max_length <= limit:
        raise ValueError(
            f"max_length must be an int in [2, {limit}] (the backbone's position table holds "
            f"{limit} positions), got {max_length!r}. Texts longer than max_length are "
            "truncated by the preprocessor."
        )
    return max_length


def build_classifier(
    source="minilm-l6",
    attention=None,
    num_classes=2,
    max_length=256,
    dropout=0.1,
    pooling="mean",
    hidden_dim=None,
    options=None,
    backbone_dropout=None,
    freeze_layers=0,
    freeze_token_embedding=False,
    tokenizer=None,
    activation=None,
    regression=False,
    text_cleaning=preprocessing.CLEAN_TEXT,
):
    """Builds a text classifier (raw strings to logits), or a regressor, on any backbone.

    Args:
        source: a backbone source for `keras_effattn.load_backbone` (default ``"minilm-l6"``,
            the offline pretrained all-MiniLM-L6-v2), or a KerasHub backbone.
        attention: an attention spec, or None to keep the source's attention.
        num_classes: int, default 2. 1 builds a regressor (one linear output).
        max_length: int, default 256. Token sequence length of the preprocessor (texts are
            truncated); at most the backbone's max_sequence_length (ValueError otherwise).
        dropout: float, default 0.1. Dropout before the logits layer.
        pooling: ``"mean"`` (masked mean, default: how all-MiniLM-L6-v2 was trained) or
            ``"cls"``.
        hidden_dim: width of the head's ReLU dense layer (None: backbone hidden size; 0: none).
        options: per-kind attention options, e.g. ``{"favor": {"num_features": 128}}``.
        backbone_dropout: optional float replacing the backbone's own dropout rate.
        freeze_layers: int, default 0. Bottom encoder layers to freeze.
        freeze_token_embedding: bool, default False. Freeze the token embedding table.
        tokenizer: optional KerasHub tokenizer; default: the source's WordPiece vocabulary
            (`keras_effattn.models.backbones.tokenizer_for`).
        activation: optional output activation (None: logits).
        regression: bool, default False. True builds a regressor: one linear output (the same
            as ``num_classes=1``; any other num_classes is a ValueError).
        text_cleaning: str, default ``"keras_effattn.clean_text"``. The normalisation the
            preprocessor applies to every raw text before tokenizing, saved with the model
            (so training, `predict` on raw strings, the ONNX export and its predictor all apply
            the same); ``"none"`` feeds texts as given.

    Returns:
        A compiled `EffAttnTextClassifier` (Adam 5e-5, sparse categorical cross-entropy from
        logits, accuracy; a regressor: mean squared error, MAE, RMSE); `.preprocessor` is a
        `keras_effattn.models.preprocessing.CleaningTextClassifierPreprocessor` (KerasHub's
        DistilBERT preprocessor that cleans first), which takes single texts or a tuple
        ``(texts_a, texts_b)`` of text pairs.

    Example:
    ```python
    model = build_classifier("minilm-l6", attention="favor(num_features=128)", max_length=128)
    model.fit(tf.data.Dataset.from_tensor_slices((texts, labels)).batch(8), epochs=1)
    ```
    """
    preprocessing.check_text_cleaning(text_cleaning)
    if regression:
        if num_classes not in (1, 2):  # 2 is the default, overridden by regression=True
            raise ValueError(
                f"regression=True builds a one-output regressor, but num_classes={num_classes!r} "
                "was given; drop num_classes or pass num_classes=1."
            )
        num_classes = 1
    backbone = task_backbone(source, attention, options, backbone_dropout)
    check_max_length(max_length, backbone)
    if tokenizer is None:
        tokenizer = backbones_lib.tokenizer_for(
            source if isinstance(source, (str, dict)) else backbone
        )
    preprocessor = preprocessing.CleaningTextClassifierPreprocessor(
        tokenizer=tokenizer, sequence_length=max_length, text_cleaning=text_cleaning
    )
    return EffAttnTextClassifier(
        backbone=backbone,
        num_classes=num_classes,
        preprocessor=preprocessor,
        pooling=pooling,
        hidden_dim=hidden_dim,
        dropout=dropout,
        activation=activation,
        freeze_layers=freeze_layers,
        freeze_token_embedding=freeze_token_embedding,
    )


def swap_classifier_attention(classifier, attention, options=None):
    """A copy of a (fine-tuned) classifier whose encoder uses other attention; nothing retrained.

    The backbone goes through `keras_effattn.swap_attention` (projections copied; low-rank Q/K/V
    factors initialised by truncated SVD of the trained projections, new FAVOR+/Linformer state
    fresh), the preprocessor is shared and the head's weights are copied. This is the
    "zero-shot" swap: what the new attention keeps of a model trained with another.

    Args:
        classifier: an `EffAttnTextClassifier`.
        attention: an attention spec (see `keras_effattn.swap_attention`).
        options: optional per-kind default options.

    Returns:
        A new `EffAttnTextClassifier`; `classifier` is unchanged.
    """
    if not isinstance(classifier, EffAttnTextClassifier):
        raise ValueError(
            "swap_classifier_attention needs a classifier from keras_effattn.build_classifier, "
            f"got {type(classifier).__name__}."
        )
    backbone = swap.swap_attention(classifier.backbone, attention, options)
    swapped = EffAttnTextClassifier(
        backbone=backbone,
        num_classes=classifier.num_classes,
        preprocessor=classifier.preprocessor,
        pooling=classifier.pooling,
        hidden_dim=classifier.hidden_dim,
        dropout=classifier.dropout,
        activation=classifier.activation,
    )
    for name in ("pooled_dense", "output_dense"):
        source = getattr(classifier, name)
        if source is not None:
            getattr(swapped, name).set_weights(source.get_weights())
    return swapped
