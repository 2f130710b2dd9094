"""The offline MiniLM-L6 default: the BERT -> DistilBERT fold on real IMDB text."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest

import keras_effattn
from keras_effattn.data import read_imdb
from keras_effattn.models import minilm

LENGTH = 128


@pytest.fixture(scope="module")
def reviews():
    from conftest import require_shared_data, shared_data_dir

    archive = shared_data_dir() / "aclImdb_v1.tar.gz"
    require_shared_data(archive)
    return read_imdb(archive, "test", max_per_class=3, seed=0).texts


@pytest.fixture(scope="module")
def tokenized(reviews):
    tokenizer = minilm.tokenizer_from_folder(minilm.minilm_l6_path())
    packer = keras_hub.models.DistilBertTextClassifierPreprocessor(
        tokenizer, sequence_length=LENGTH
    )
    x = packer(reviews)
    return {
        "token_ids": np.asarray(x["token_ids"], "int32"),
        "padding_mask": np.asarray(x["padding_mask"], "int32"),
    }


def _bert_output(bert, x):
    out = bert({**x, "segment_ids": np.zeros_like(x["token_ids"])})["sequence_output"]
    return np.asarray(out)


@pytest.fixture(scope="module")
def bert_reference(tokenized):
    """KerasHub's BertBackbone from the MiniLM folder: outputs with tanh-GELU, then exact GELU."""
    bert = keras_hub.models.BertBackbone.from_preset(minilm.minilm_l6_path())
    tanh_gelu = _bert_output(bert, tokenized)
    for layer in bert.transformer_layers:
        layer._feedforward_intermediate_dense.activation = keras.activations.gelu
    return {"bert": bert, "tanh_gelu": tanh_gelu, "exact_gelu": _bert_output(bert, tokenized)}


def test_fold_equals_bert_on_real_imdb_text(tokenized, bert_reference):
    x = tokenized
    assert x["padding_mask"].sum(axis=1).min() > 20  # real reviews, not just [CLS] [SEP]
    distil = minilm.fold_bert_to_distilbert(bert_reference["bert"])
    assert isinstance(distil, keras_hub.models.DistilBertBackbone)
    real = x["padding_mask"].astype(bool)
    got = np.asarray(distil(x))
    np.testing.assert_allclose(got[real], bert_reference["exact_gelu"][real], atol=1e-5)
    # KerasHub's BERT uses the tanh GELU approximation; the checkpoint (and the fold) do not.
    assert np.abs(got[real] - bert_reference["tanh_gelu"][real]).max() > 1e-4


def test_load_backbone_minilm_with_exact_attention_equals_bert(tokenized, bert_reference):
    x = tokenized
    backbone = keras_effattn.load_backbone("minilm-l6", attention="exact")
    assert keras_effattn.describe_attention(backbone) == "exact(chunk_size=none)*6"
    real = x["padding_mask"].astype(bool)
    got = np.asarray(backbone(x))[real]
    np.testing.assert_allclose(got, bert_reference["exact_gelu"][real], atol=1e-5)


@pytest.mark.slow
def test_fold_equals_hugging_face_transformers(tokenized):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    x = tokenized
    model = transformers.BertModel.from_pretrained(minilm.minilm_l6_path()).eval()
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor(x["token_ids"].astype("int64")),
            attention_mask=torch.tensor(x["padding_mask"].astype("int64")),
        ).last_hidden_state.numpy()
    distil = keras_effattn.load_backbone("minilm-l6")
    real = x["padding_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(distil(x))[real], expected[real], atol=1e-5)


def test_tokenizer_matches_hugging_face_tokenizers(reviews):
    tokenizers = pytest.importorskip("tokenizers")
    folder = minilm.minilm_l6_path()
    reference = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    tokenizer = keras_effattn.models.tokenizer_for("minilm-l6")
    assert tokenizer.lowercase is True
    assert tokenizer.vocabulary_size() == 30522
    for text in list(reviews) + ["Hello, WORLD! Isn't it ünïcode?"]:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert np.asarray(tokenizer(text)).tolist() == expected


def test_minilm_path_has_the_checkpoint():
    folder = minilm.minilm_l6_path()
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6


def test_fold_rejects_non_bert():
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4, intermediate_dim=8
    )
    with pytest.raises(ValueError, match="takes a keras_hub.models.BertBackbone"):
        minilm.fold_bert_to_distilbert(backbone)


def test_fold_uses_segment_zero_only():
    bert = keras_hub.models.BertBackbone(
        vocabulary_size=20,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=10,
    )
    distil = minilm.fold_bert_to_distilbert(bert)
    folded = np.asarray(distil.embeddings.position_embedding.position_embeddings)
    positions = np.asarray(bert.position_embedding.position_embeddings)
    segment = np.asarray(bert.segment_embedding.embeddings)
    np.testing.assert_allclose(folded, positions + segment[0], atol=1e-7)
    assert not np.allclose(folded, positions + segment[1])
