"""The ONNX metadata keras_effattn writes into every exported classifier, and its reader.

ONNX ``metadata_props`` are string pairs. Ours (all under the ``keras_effattn.`` prefix):

| key | value |
| --- | --- |
| ``format`` | ``"text-classifier/1"``: marks the file as ours (the predictor refuses others) |
| ``labels`` | JSON list of class names, index = logit column |
| ``max_length`` | the packed sequence length the model was trained at |
| ``inputs`` | JSON list of the id inputs, e.g. ``["token_ids", "padding_mask"]`` |
| ``precision`` | ``fp32``, ``fp16`` or ``int8`` |
| ``padding_invariant`` | ``"true"`` when verification showed that padding to the longest text in a
  batch gives the same logits as padding to ``max_length`` |
| ``batch_invariant`` | ``"true"`` when verification showed that a text's logits are the same
  alone as in a batch of 8; ``"false"`` for dynamic int8, whose activation scales come from the
  whole batch (the predictor then runs one text per call). Older exports lack the key: true |
| ``tokenizer`` | JSON tokenizer settings (kind, lowercase, ..., ``vocab_sha256``) |
| ``tokenizer_kind``, ``vocab_sha256`` | the same two facts, flat |
| ``attention_spec`` | the per-layer attention spec (e.g. ``"exact,favor,exact,favor"``) |
| ``source_sha256`` | sha256 of the source ``.keras`` file (or of the weights when exported from
  memory) |
| ``versions`` | JSON of package versions used for the export |
| ``outputs`` | JSON list of the graph's outputs: ``["logits"]``, or ``["logits", "attention"]``
  when the export carries the top layer's attention per token (``[B, T]``, averaged over heads
  and over the positions the classifier pools; padded tokens 0). Older exports lack the key:
  ``["logits"]`` |
| ``fusion`` | ``all`` (fused attention/GELU: onnxruntime contrib ops), ``portable`` or ``none`` |
| ``text_cleaning`` | what the predictor does to a raw text before tokenizing it, as in training:
  ``keras_effattn.clean_text`` (`keras_effattn_runtime.cleaning.clean_text`, which the model's
  preprocessor applies in training and ``read_imdb(clean=True)`` applies too) or ``none``. Exports written before this key
  existed have no such entry and are read as ``none`` (they were verified on texts as given) |

This module imports only the standard library so the predictor can use it.
"""

import json

PREFIX = "keras_effattn."
FORMAT = "text-classifier/1"
PRECISIONS = ("fp32", "fp16", "int8")
JSON_KEYS = ("labels", "inputs", "tokenizer", "versions", "outputs")
# The optional second output of an export: the attention each token receives from the top layer.
ATTENTION_OUTPUT = "attention"
# Allowed ``text_cleaning`` values; the first is the default of `export.to_onnx.export_onnx`.
CLEAN_TEXT = "keras_effattn.clean_text"
TEXT_CLEANINGS = (CLEAN_TEXT, "none")


def to_props(values):
    """Our metadata dict -> ONNX ``metadata_props`` pairs (str -> str), keys prefixed."""
    props = {}
    for key, value in values.items():
        if key in JSON_KEYS:
            text = json.dumps(value, sort_keys=True)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        props[PREFIX + key] = text
    return props


def from_props(props, where="model.onnx"):
    """ONNX ``metadata_props`` (a str -> str mapping) -> our metadata dict, checked.

    Args:
        props: the model's custom metadata, e.g. ``session.get_modelmeta().custom_metadata_map``.
        where: the file name used in error messages.

    Raises:
        ValueError: the model is not a keras_effattn export, or its metadata is damaged.
    """
    props = dict(props or {})
    fmt = props.get(PREFIX + "format")
    if fmt is None:
        raise ValueError(
            f"{where} is not a keras_effattn export (no '{PREFIX}format' metadata); export the "
            "classifier with `python -m export.to_onnx --model MODEL.keras --output_dir DIR`."
        )
    if fmt != FORMAT:
        raise ValueError(
            f"{where} has metadata format {fmt!r}, this predictor reads {FORMAT!r}; re-export "
            "the model with this version of keras_effattn."
        )
    values = {}
    for full_key, text in props.items():
        if not full_key.startswith(PREFIX):
            continue
        key = full_key[len(PREFIX) :]
        if key in JSON_KEYS:
            try:
                values[key] = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{where}: metadata {full_key!r} is not valid JSON ({error}); re-export it."
                ) from error
        else:
            values[key] = text
    for required in ("labels", "max_length", "inputs", "tokenizer", "precision"):
        if required not in values:
            raise ValueError(f"{where}: metadata '{PREFIX}{required}' is missing; re-export it.")
    labels = values["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{where}: metadata labels must be a non-empty list of names.")
    try:
        values["max_length"] = int(values["max_length"])
    except ValueError as error:
        raise ValueError(
            f"{where}: metadata max_length {values['max_length']!r} is not an int."
        ) from error
    values["padding_invariant"] = values.get("padding_invariant") == "true"
    values["batch_invariant"] = values.get("batch_invariant", "true") == "true"
    # Older exports have no text_cleaning entry: the predictor never cleaned their texts.
    values["text_cleaning"] = values.get("text_cleaning", "none")
    if values["text_cleaning"] not in TEXT_CLEANINGS:
        raise ValueError(
            f"{where}: metadata text_cleaning {values['text_cleaning']!r} is not one this "
            f"predictor knows {TEXT_CLEANINGS}; install the keras-effattn-runtime version "
            "that matches the keras_effattn that wrote the model, or re-export it."
        )
    return values
