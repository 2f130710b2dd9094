"""load_backbone: configs, local Hugging Face folders, presets offline, MiniLM, errors."""

import json
import socket
import time

import keras
import keras_hub
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_effattn
from keras_effattn.models import backbones, swap

TINY = {"num_layers": 2, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "great", "bad"]


def _write_hf_bert_folder(folder, hidden=16, layers=2, heads=2, inter=32, positions=32, seed=0):
    """A random-weight Hugging Face BERT checkpoint with the real key names (no torch)."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.normal(0, 0.2, size=shape).astype("float32")

    tensors = {
        "embeddings.word_embeddings.weight": w(len(VOCAB), hidden),
        "embeddings.position_embeddings.weight": w(positions, hidden),
        "embeddings.token_type_embeddings.weight": w(2, hidden),
        "embeddings.LayerNorm.weight": 1 + w(hidden),
        "embeddings.LayerNorm.bias": w(hidden),
        "pooler.dense.weight": w(hidden, hidden),
        "pooler.dense.bias": w(hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            tensors[p + f"attention.self.{name}.weight"] = w(hidden, hidden)
            tensors[p + f"attention.self.{name}.bias"] = w(hidden)
        tensors[p + "attention.output.dense.weight"] = w(hidden, hidden)
        tensors[p + "attention.output.dense.bias"] = w(hidden)
        tensors[p + "attention.output.LayerNorm.weight"] = 1 + w(hidden)
        tensors[p + "attention.output.LayerNorm.bias"] = w(hidden)
        tensors[p + "intermediate.dense.weight"] = w(inter, hidden)
        tensors[p + "intermediate.dense.bias"] = w(inter)
        tensors[p + "output.dense.weight"] = w(hidden, inter)
        tensors[p + "output.dense.bias"] = w(hidden)
        tensors[p + "output.LayerNorm.weight"] = 1 + w(hidden)
        tensors[p + "output.LayerNorm.bias"] = w(hidden)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": len(VOCAB),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": inter,
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return tensors


def _x(length=10, vocab=len(VOCAB)):
    token_ids = np.random.default_rng(1).integers(5, vocab, size=(2, length)).astype("int32")
    mask = np.ones((2, length), "int32")
    mask[1, length // 2 :] = 0
    return {"token_ids": token_ids * mask, "padding_mask": mask}


def test_config_builds_random_distilbert_with_attention():
    backbone = keras_effattn.load_backbone(
        {**TINY, "max_sequence_length": 64}, attention="exact,keras"
    )
    assert isinstance(backbone, keras_hub.models.DistilBertBackbone)
    assert backbone.vocabulary_size == backbones.DEFAULT_VOCABULARY_SIZE
    assert backbone.max_sequence_length == 64
    assert keras_effattn.describe_attention(backbone) == "exact(chunk_size=none),keras"


def test_config_bert_architecture_and_heads_ablation():
    backbone = keras_effattn.load_backbone(
        {**TINY, "num_heads": 8, "hidden_dim": 32, "architecture": "bert", "vocabulary_size": 50}
    )
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert backbone.num_heads == 8
    assert swap.attention_layers(backbone)[0]._num_heads == 8


@pytest.mark.parametrize(
    "config, match",
    [
        ({"num_layers": 2}, "needs"),
        ({**TINY, "hidden_dim": 15}, "divisible"),
        ({**TINY, "architecture": "gpt"}, "Unknown architecture"),
        ({**TINY, "layers": 3}, "Unknown backbone config keys"),
    ],
    ids=["missing", "divisible", "architecture", "unknown-key"],
)
def test_bad_configs(config, match):
    with pytest.raises(ValueError, match=match):
        keras_effattn.load_backbone(config)


def test_dropout_override_keeps_weights():
    source = keras_effattn.load_backbone(TINY)
    rebuilt = keras_effattn.load_backbone(source, dropout=0.0)
    assert rebuilt.dropout == 0.0 and source.dropout == 0.1
    for a, b in zip(source.weights, rebuilt.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="dropout must be a float in"):
        keras_effattn.load_backbone(source, dropout=1.5)


def test_hf_bert_folder_converts_weights(tmp_path):
    tensors = _write_hf_bert_folder(tmp_path / "bert")
    bert = keras_effattn.load_backbone(tmp_path / "bert", fold_segments=False)
    assert isinstance(bert, keras_hub.models.BertBackbone)
    np.testing.assert_array_equal(
        np.asarray(bert.token_embedding.embeddings), tensors["embeddings.word_embeddings.weight"]
    )
    query = swap.attention_layers(bert)[1].query_dense.kernel
    np.testing.assert_allclose(
        np.asarray(query).reshape(16, 16),
        tensors["encoder.layer.1.attention.self.query.weight"].T,
    )


def test_hf_bert_folder_folds_to_equivalent_distilbert(tmp_path):
    _write_hf_bert_folder(tmp_path / "bert")
    bert = keras_effattn.load_backbone(str(tmp_path / "bert"), fold_segments=False)
    distil = keras_effattn.load_backbone(str(tmp_path / "bert"), attention="exact")
    assert isinstance(distil, keras_hub.models.DistilBertBackbone)
    for layer in bert.transformer_layers:  # KerasHub's BERT uses tanh-GELU; HF BERT is exact.
        layer._feedforward_intermediate_dense.activation = keras.activations.gelu
    x = _x()
    ref = bert({**x, "segment_ids": np.zeros_like(x["token_ids"])})["sequence_output"]
    mask = x["padding_mask"][..., None]
    np.testing.assert_allclose(np.asarray(distil(x)) * mask, np.asarray(ref) * mask, atol=1e-5)
    tokenizer = backbones.tokenizer_for(str(tmp_path / "bert"))
    assert tokenizer.vocabulary_size() == len(VOCAB)
    assert np.asarray(tokenizer("The film")).tolist() == [5, 6]


def test_missing_folder_and_incomplete_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        keras_effattn.load_backbone(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        keras_effattn.load_backbone(str(tmp_path / "empty"))
    _write_hf_bert_folder(tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        keras_effattn.load_backbone(str(tmp_path / "noweights"))


def test_unknown_source():
    with pytest.raises(ValueError, match="Unknown backbone source 'not_a_model'"):
        keras_effattn.load_backbone("not_a_model")
    with pytest.raises(ValueError, match="takes a string, a config dict"):
        keras_effattn.load_backbone(3)


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("from_preset must not be reached when the host is unreachable")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", refuse)


def test_preset_offline_fails_fast_with_alternatives(monkeypatch, no_download):
    def unreachable(address, timeout=None):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(backbones.PresetUnavailableError) as info:
        keras_effattn.load_backbone("distil_bert_base_en_uncased", network_timeout=1.0)
    message = str(info.value)
    assert "api.kaggle.com" in message and "minilm-l6" in message and "folder" in message


def test_preset_probe_never_hangs(monkeypatch, no_download):
    def blackhole(address, timeout=None):
        time.sleep(5)
        raise OSError("blackholed")

    monkeypatch.setattr(socket, "create_connection", blackhole)
    with pytest.raises(backbones.PresetUnavailableError, match="network_timeout=0.2s"):
        keras_effattn.load_backbone("hf://someone/bert_tiny", network_timeout=0.2)


def test_download_errors_are_rewrapped(monkeypatch):
    class _Socket:
        def close(self):
            pass

    def broken(*args, **kwargs):
        raise ConnectionError("Max retries exceeded")

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: _Socket())
    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", broken)
    with pytest.raises(backbones.PresetUnavailableError, match="Offline alternatives"):
        keras_effattn.load_backbone("bert_tiny_en_uncased")


def test_minilm_default_is_distilbert_with_stock_attention():
    backbone = keras_effattn.load_backbone("minilm-l6")
    assert isinstance(backbone, keras_hub.models.DistilBertBackbone)
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads) == (6, 384, 12)
    assert backbone.intermediate_dim == 1536 and backbone.vocabulary_size == 30522
    assert keras_effattn.describe_attention(backbone) == "keras*6"
