"""build_classifier: raw strings to logits, fit/evaluate/predict, save/load, options, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_effattn
from keras_effattn.models import classifier as classifier_lib
from keras_effattn.models import swap

TINY = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "max_sequence_length": 48,
}
TEXTS = ["a great film", "an awful boring mess", "I loved it", "I hated every minute"]
LABELS = [1, 0, 1, 0]


def _dataset(repeat=2, batch=4):
    return tf.data.Dataset.from_tensor_slices((TEXTS * repeat, LABELS * repeat)).batch(batch)


def test_mean_pooling_is_a_masked_mean_and_ignores_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "int32")
    pooled = np.asarray(classifier_lib.MaskedMeanPooling()(x, padding_mask=mask))
    np.testing.assert_allclose(pooled[0], x[0, :3].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pooled[1], x[1].mean(axis=0), rtol=1e-6)
    x2 = x.copy()
    x2[0, 3:] = 1e6  # garbage at padded positions changes nothing
    np.testing.assert_allclose(
        np.asarray(classifier_lib.MaskedMeanPooling()(x2, padding_mask=mask)), pooled
    )


@pytest.mark.slow
def test_fit_predict_evaluate_and_token_dict_contract():
    model = keras_effattn.build_classifier(TINY, attention="exact", max_length=16, num_classes=3)
    assert keras_effattn.describe_attention(model) == "exact(chunk_size=none)*2"
    history = model.fit(
        tf.data.Dataset.from_tensor_slices((TEXTS, [0, 1, 2, 0])).batch(2), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    logits = model.predict(TEXTS, verbose=0)
    assert logits.shape == (4, 3)
    # The ONNX contract: preprocessor fields + model called on token ids.
    pre = model.preprocessor
    assert pre.sequence_length == 16 and pre.tokenizer.lowercase
    assert pre.tokenizer.vocabulary_size() == 30522
    x = pre(TEXTS)
    direct = model({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]})
    np.testing.assert_allclose(np.asarray(direct), logits, atol=1e-5)
    metrics = model.evaluate(_dataset(), verbose=0, return_dict=True)
    assert set(metrics) >= {"loss", "sparse_categorical_accuracy"}


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_feeds_the_head(pooling):
    model = keras_effattn.build_classifier(TINY, max_length=16, pooling=pooling, hidden_dim=0)
    x = model.preprocessor(TEXTS)
    x = {"token_ids": np.asarray(x["token_ids"]), "padding_mask": np.asarray(x["padding_mask"])}
    sequence = np.asarray(model.backbone(x))
    if pooling == "cls":
        pooled = sequence[:, 0]
    else:
        mask = x["padding_mask"][..., None].astype("float32")
        pooled = (sequence * mask).sum(axis=1) / mask.sum(axis=1)
    kernel, bias = (np.asarray(w) for w in model.output_dense.weights)
    np.testing.assert_allclose(np.asarray(model(x)), pooled @ kernel + bias, atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    model = keras_effattn.build_classifier(
        TINY, attention="exact(chunk_size=4),keras", max_length=16, freeze_layers=1
    )
    expected = model.predict(TEXTS, verbose=0)
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, classifier_lib.EffAttnTextClassifier)
    assert keras_effattn.describe_attention(loaded) == keras_effattn.describe_attention(model)
    assert loaded.freeze_layers == 1 and not swap.encoder_layers(loaded.backbone)[0].trainable
    assert loaded.preprocessor.sequence_length == 16
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), expected, atol=1e-6)


@pytest.mark.slow
def test_freezing_keeps_frozen_weights_fixed():
    model = keras_effattn.build_classifier(
        TINY, max_length=16, freeze_layers=1, freeze_token_embedding=True
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    encoders = swap.encoder_layers(model.backbone)
    frozen = [np.asarray(w).copy() for w in encoders[0].weights]
    table = np.asarray(model.backbone.token_embedding.embeddings).copy()
    trained = [np.asarray(w).copy() for w in encoders[1].weights]
    model.fit(_dataset(), epochs=1, verbose=0)
    for before, w in zip(frozen, encoders[0].weights):
        np.testing.assert_array_equal(before, np.asarray(w))
    np.testing.assert_array_equal(table, np.asarray(model.backbone.token_embedding.embeddings))
    assert any(not np.array_equal(b, np.asarray(w)) for b, w in zip(trained, encoders[1].weights))


def test_dropout_overrides():
    model = keras_effattn.build_classifier(TINY, max_length=16, dropout=0.3, backbone_dropout=0.0)
    assert model.output_dropout.rate == 0.3
    assert model.backbone.dropout == 0.0
    assert swap.attention_layers(model.backbone)[0]._dropout == 0.0


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"regression": True}],
                         ids=["num-classes-1", "regression-flag"])
def test_regressor_has_one_linear_output_and_trains_on_mse(kwargs, tmp_path):
    model = keras_effattn.build_classifier(TINY, max_length=16, hidden_dim=0, **kwargs)
    assert model.num_classes == 1 and model.is_regressor
    assert isinstance(model.loss, keras.losses.MeanSquaredError)
    pairs = (np.array(TEXTS), np.array(TEXTS[::-1]))
    x = model.preprocessor(pairs, y=None)  # text pairs, as for STS-B
    x = {"token_ids": np.asarray(x["token_ids"]), "padding_mask": np.asarray(x["padding_mask"])}
    scores = np.asarray(model(x))
    assert scores.shape == (4, 1)
    # A linear score: the pooled vector times the kernel plus the bias, no activation.
    sequence = np.asarray(model.backbone(x))
    mask = x["padding_mask"][..., None].astype("float32")
    pooled = (sequence * mask).sum(axis=1) / mask.sum(axis=1)
    kernel, bias = (np.asarray(w) for w in model.output_dense.weights)
    np.testing.assert_allclose(scores, pooled @ kernel + bias, atol=1e-5)
    y = np.array([4.5, 0.5, 3.0, 1.0], "float32")
    data = tf.data.Dataset.from_tensor_slices((pairs, y)).batch(4)  # raw pairs, KerasHub's fit
    history = model.fit(data, epochs=1, verbose=0)
    assert set(history.history) >= {"loss", "mae", "rmse"}
    mse = float(np.mean((np.asarray(model(x))[:, 0] - y) ** 2))
    assert model.evaluate(data, verbose=0, return_dict=True)["loss"] == pytest.approx(mse, rel=1e-4)
    model.save(tmp_path / "reg.keras")
    loaded = keras.saving.load_model(tmp_path / "reg.keras")
    assert loaded.num_classes == 1
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_length": 64}, r"max_length must be an int in \[2, 48\]"),
        ({"pooling": "max"}, "pooling must be one of"),
        ({"num_classes": 0}, "num_classes must be an int >= 1"),
        ({"num_classes": 1, "activation": "sigmoid"}, "regressor whose output is a linear"),
        ({"num_classes": 3, "regression": True}, "regression=True builds a one-output"),
        ({"freeze_layers": 3}, r"freeze_layers must be an int in \[0, 2\]"),
        ({"dropout": -0.1}, "dropout must be a float"),
        ({"attention": "softmax"}, "Unknown attention kind"),
    ],
    ids=["too-long", "pooling", "classes", "regressor-activation", "regression-classes", "freeze",
         "dropout", "kind"],
)
def test_bad_arguments(kwargs, match):
    args = {"max_length": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        keras_effattn.build_classifier(TINY, **args)


@pytest.mark.slow
def test_minilm_fit_on_imdb_slice_lowers_the_loss(data_dir):
    from keras_effattn.data import read_imdb

    train = read_imdb(data_dir / "aclImdb_v1.tar.gz", "train", max_per_class=8, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((train.texts, train.labels)).batch(8)
    model = keras_effattn.build_classifier("minilm-l6", attention="exact", max_length=48)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    model.fit(dataset, epochs=3, verbose=0)
    after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert after < before - 0.05, (before, after)


def test_swap_classifier_attention_keeps_head_and_preprocessor():
    keras.utils.set_random_seed(3)
    model = keras_effattn.build_classifier(dict(TINY), attention="keras", max_length=16,
                                           hidden_dim=8, pooling="cls")
    # A unit-scale head (the default init gives logits ~1e-4, too small to show a change).
    kernel, bias = model.output_dense.get_weights()
    model.output_dense.set_weights([np.random.default_rng(0).normal(size=kernel.shape), bias])
    texts = ["a fine film", "dull and far too long, i left early"]
    before = model.predict(texts, verbose=0)
    exact = classifier_lib.swap_classifier_attention(model, "exact")
    np.testing.assert_allclose(exact.predict(texts, verbose=0), before, atol=1e-5)
    assert exact.preprocessor is model.preprocessor and exact.pooling == "cls"
    assert swap.describe_attention(exact.backbone).startswith("exact")
    # Full-rank factors reproduce the projections; rank 1 does not, and the original is unchanged.
    low = classifier_lib.swap_classifier_attention(model, "lowrank(k=none,qkv_rank=1)")
    assert np.abs(low.predict(texts, verbose=0) - before).max() > 1e-4
    np.testing.assert_allclose(model.predict(texts, verbose=0), before, atol=1e-6)
    with pytest.raises(ValueError, match="build_classifier"):
        classifier_lib.swap_classifier_attention(model.backbone, "exact")
