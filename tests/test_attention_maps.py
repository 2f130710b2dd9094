"""attention_maps: exact softmax maps against a NumPy oracle, implied FAVOR+/low-rank maps."""

import keras_hub
import numpy as np
import pytest

import keras_effattn
from keras_effattn.models import swap

TINY = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "max_sequence_length": 24,
    "vocabulary_size": 60,
}


def _inputs(length=10):
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 60, size=(2, length)).astype("int32")
    token_ids[1, 7:] = 0  # padding
    return token_ids


def _oracle_first_layer(backbone, token_ids):
    """softmax(Q K^T / sqrt(H)) with padded keys masked, from the raw weights, in NumPy."""
    padding = token_ids != 0
    hidden = np.asarray(
        swap.embedding_model(backbone)(
            {"token_ids": token_ids, "padding_mask": padding.astype("int32")}
        ),
        "float64",
    )
    attention = swap.attention_layers(backbone)[0]
    wq, bq = (np.asarray(w, "float64") for w in attention.query_dense.weights)
    wk, bk = (np.asarray(w, "float64") for w in attention.key_dense.weights)
    q = np.einsum("btd,dnh->bnth", hidden, wq) + bq[None, :, None, :]
    k = np.einsum("btd,dnh->bnth", hidden, wk) + bk[None, :, None, :]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    scores = np.where(padding[:, None, None, :], scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    return probs / probs.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("spec", ["keras", "exact", "exact(chunk_size=3)"])
def test_exact_maps_match_numpy_oracle(spec):
    backbone = keras_effattn.load_backbone(TINY, attention=spec)
    token_ids = _inputs()
    out = keras_effattn.attention_maps(backbone, token_ids)
    maps = out["maps"]
    assert len(maps) == 2 and maps[0].shape == (2, 2, 10, 10)
    np.testing.assert_allclose(maps[0], _oracle_first_layer(backbone, token_ids), atol=1e-5)
    for layer_map in maps:
        np.testing.assert_allclose(layer_map.sum(axis=-1), 1.0, atol=1e-5)
        assert np.all(layer_map[1, :, :, 7:] == 0.0)  # padded keys get no attention
    assert out["padding_mask"][1].tolist() == [True] * 7 + [False] * 3


def test_texts_through_a_task_model_and_dict_inputs():
    classifier = keras_effattn.build_classifier({**TINY, "vocabulary_size": 30522}, max_length=12)
    out = keras_effattn.attention_maps(classifier, ["A fine film.", "Dull."])
    assert [m.shape for m in out["maps"]] == [(2, 2, 12, 12)] * 2
    assert out["token_ids"][0, 0] == 101  # [CLS]
    again = keras_effattn.attention_maps(
        classifier.backbone,
        {"token_ids": out["token_ids"], "padding_mask": out["padding_mask"]},
    )
    for a, b in zip(out["maps"], again["maps"]):
        np.testing.assert_array_equal(a, b)


def test_favor_implied_map_approaches_softmax_as_features_grow():
    source = keras_effattn.load_backbone(TINY)
    token_ids = _inputs()
    exact = keras_effattn.attention_maps(source, token_ids)["maps"][0]
    errors = {}
    for features in (8, 1024):
        swapped = keras_effattn.swap_attention(source, f"favor(num_features={features},seed=3)")
        implied = keras_effattn.attention_maps(swapped, token_ids)["maps"][0]
        np.testing.assert_allclose(implied[0].sum(axis=-1), 1.0, atol=1e-4)
        errors[features] = np.abs(implied - exact)[0].mean()
    assert errors[1024] < 0.5 * errors[8], errors
    assert errors[1024] < 0.02, errors


def test_full_rank_lowrank_map_equals_softmax():
    source = keras_effattn.load_backbone(TINY)
    token_ids = _inputs()
    exact = keras_effattn.attention_maps(source, token_ids)["maps"]
    swapped = keras_effattn.swap_attention(source, "lowrank(k=none,qkv_rank=16,max_length=24)")
    out = keras_effattn.attention_maps(swapped, token_ids)
    assert out["kinds"][0].startswith("lowrank(")
    for a, b in zip(out["maps"], exact):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_linformer_map_is_the_implied_matrix():
    source = keras_effattn.load_backbone(TINY)
    swapped = keras_effattn.swap_attention(source, "lowrank(k=4,max_length=24,seed=0)")
    out = keras_effattn.attention_maps(swapped, _inputs())
    assert out["maps"][0].shape == (2, 2, 10, 10)
    assert np.all(np.isfinite(out["maps"][0]))
    # Linformer's P F^T is not a probability matrix: it differs from the softmax map.
    exact = keras_effattn.attention_maps(source, _inputs())["maps"][0]
    assert np.abs(out["maps"][0] - exact).max() > 1e-3


def test_errors():
    backbone = keras_effattn.load_backbone(TINY)
    with pytest.raises(ValueError, match="exceeds the backbone's max_sequence_length=24"):
        keras_effattn.attention_maps(backbone, np.ones((1, 30), "int32"))
    with pytest.raises(ValueError, match="no preprocessor"):
        keras_effattn.attention_maps(backbone, ["some text"])
    with pytest.raises(ValueError, match="integer token ids"):
        keras_effattn.attention_maps(backbone, np.ones((1, 5), "float32"))
    task = keras_hub.models.DistilBertTextClassifier(backbone=backbone, num_classes=2)
    out = keras_effattn.attention_maps(task, _inputs())  # a task's backbone is used
    assert len(out["maps"]) == 2


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_attention_output_model_shares_the_classifier_and_reduces_its_top_map(pooling):
    from keras_effattn.models.attention_maps import attention_output_model

    config = {k: v for k, v in TINY.items() if k != "vocabulary_size"}  # MiniLM's vocabulary
    model = keras_effattn.build_classifier(
        {**config, "num_layers": 3}, attention="favor(num_features=8),lowrank(k=4),exact",
        pooling=pooling, max_length=12)
    token_ids = _inputs(12)
    feeds = {"token_ids": token_ids, "padding_mask": (token_ids != 0).astype("int32")}
    both = attention_output_model(model)(feeds)
    np.testing.assert_allclose(both["logits"], model(feeds), atol=1e-6)
    top = attention_maps_of(model, feeds)[-1].mean(axis=1)  # [B, T, T], heads averaged
    mask = feeds["padding_mask"].astype("float64")
    if pooling == "mean":
        expected = np.einsum("bq,bqk->bk", mask, top) / mask.sum(1, keepdims=True)
    else:
        expected = top[:, 0, :]
    np.testing.assert_allclose(both["attention"], expected * mask, atol=1e-6)
    np.testing.assert_allclose(np.asarray(both["attention"]).sum(-1), 1.0, atol=1e-5)
    # The weights are the classifier's own: training one moves the other.
    assert attention_output_model(model).count_params() == model.count_params()


def attention_maps_of(model, feeds):
    from keras_effattn.models.attention_maps import attention_maps

    return [m.astype("float64") for m in attention_maps(model, feeds)["maps"]]


def test_attention_output_model_refuses_other_models():
    from keras_effattn.models.attention_maps import attention_output_model

    backbone = keras_effattn.load_backbone(dict(TINY))
    with pytest.raises(ValueError, match="build_classifier"):
        attention_output_model(backbone)
