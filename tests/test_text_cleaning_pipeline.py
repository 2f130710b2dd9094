"""One text pipeline from notebook to deployment: the model's preprocessor cleans raw text, saves
the cleaning in its config, and the ONNX export and its predictor apply the same one."""

import numpy as np
import pytest

import keras_effattn
from export.to_onnx import export_onnx, model_text_cleaning
from keras_effattn.data import clean_text
from keras_effattn.models import preprocessing
from keras_effattn_runtime import metadata as meta
from keras_effattn_runtime.predict import Predictor, softmax
from tests.export_helpers import TINY, imdb, tiny_classifier

# Texts whose cleaning changes the tokens: repeated marks, dashes, HTML, entities, odd spaces.
NOISY = [
    "Great -- really great!!!",
    "Worst. Film. Ever??? <br /><br />Avoid",
    "It was&nbsp;fine &amp; fun...... I guess",
    "“Curly quotes” and – dashes — everywhere",
    "ﬁne ligatures and ＦＵＬＬ width",
    "no change here",
]


def _noisy_sentences(count=300, seed=0):
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "film", "plot", "acting", "not", "really", "boring", "fun"]
    marks = ["--", "!!!", "???", "<br />", "&amp;", "....", " - ", "''"]
    texts = []
    for _ in range(count):
        parts = [str(w) for w in rng.choice(words, size=rng.integers(3, 9))]
        for _ in range(rng.integers(1, 4)):
            parts.insert(int(rng.integers(0, len(parts) + 1)), str(rng.choice(marks)))
        texts.append(" ".join(parts))
    return texts


def test_preprocessor_cleans_raw_text_in_every_form():
    model = tiny_classifier("exact")
    pre = model.preprocessor
    assert isinstance(pre, preprocessing.CleaningTextClassifierPreprocessor)
    assert pre.text_cleaning == meta.CLEAN_TEXT
    expected = [clean_text(t) for t in NOISY]
    assert pre.clean(NOISY) == expected
    raw = pre(NOISY)["token_ids"].numpy()
    assert (raw == pre([clean_text(t) for t in NOISY])["token_ids"].numpy()).all()
    # Graph mode (tf.data), as fit and predict run it.
    import tensorflow as tf

    mapped = next(iter(tf.data.Dataset.from_tensor_slices(NOISY).batch(len(NOISY)).map(pre)))
    np.testing.assert_array_equal(mapped["token_ids"].numpy(), raw)
    # Pairs: each segment cleaned (y=None: KerasHub reads a lone tuple as (x, y)).
    pairs = pre((tf.constant(NOISY[:2]), tf.constant(NOISY[2:4])), y=None)["token_ids"].numpy()
    cleaned = pre((tf.constant(expected[:2]), tf.constant(expected[2:4])),
                  y=None)["token_ids"].numpy()
    np.testing.assert_array_equal(pairs, cleaned)


def test_predict_on_raw_strings_equals_predict_on_cleaned_text_and_none_turns_it_off():
    model = tiny_classifier("favor(num_features=16)")
    texts = _noisy_sentences(60)
    raw = model.predict(texts, verbose=0, batch_size=16)
    cleaned = model.predict([clean_text(t) for t in texts], verbose=0, batch_size=16)
    np.testing.assert_allclose(raw, cleaned, atol=1e-6)

    plain = keras_effattn.build_classifier(TINY, attention="exact", max_length=32,
                                           text_cleaning="none")
    assert plain.preprocessor.text_cleaning == "none"
    ids = plain.preprocessor(["Great -- really great!!!"])["token_ids"].numpy()
    ids_clean = plain.preprocessor(["Great - really great!"])["token_ids"].numpy()
    assert not (ids == ids_clean).all()  # raw text reaches the tokenizer unchanged
    with pytest.raises(ValueError, match="text_cleaning must be one of"):
        keras_effattn.build_classifier(TINY, text_cleaning="lowercase")


def test_text_cleaning_survives_save_and_load(tmp_path):
    import keras

    for cleaning in preprocessing.TEXT_CLEANINGS:
        model = keras_effattn.build_classifier(TINY, attention="exact", max_length=32,
                                               text_cleaning=cleaning)
        path = tmp_path / f"{cleaning}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert loaded.preprocessor.text_cleaning == cleaning
        np.testing.assert_array_equal(
            loaded.preprocessor(NOISY)["token_ids"].numpy(),
            model.preprocessor(NOISY)["token_ids"].numpy())


def test_exporter_reads_the_cleaning_from_the_model_and_refuses_a_different_one():
    model = tiny_classifier("exact")
    assert model_text_cleaning(model) == (meta.CLEAN_TEXT, "model")
    assert model_text_cleaning(model, meta.CLEAN_TEXT) == (meta.CLEAN_TEXT, "model")
    with pytest.raises(ValueError, match="differs from the model's own"):
        model_text_cleaning(model, "none")

    class Old:  # a model from before the cleaning moved into the preprocessor
        preprocessor = object()

    assert model_text_cleaning(Old()) == (meta.CLEAN_TEXT, "assumed")
    assert model_text_cleaning(Old(), "none") == ("none", "argument")


@pytest.mark.slow
def test_keras_predict_and_the_exported_predictor_agree_on_raw_noisy_texts(tmp_path):
    """The issue's check: 300 held-out sentences full of `--` and `!!!`, a freshly built FAVOR+
    classifier (outputs near 0.5, so any change of input shows): Keras `predict` on the raw
    strings and the ONNX predictor on the same raw strings give the same labels."""
    for cleaning in preprocessing.TEXT_CLEANINGS:
        model = tiny_classifier("favor(num_features=16)")
        model.preprocessor.text_cleaning = cleaning
        texts, labels = imdb(per_class=8)
        report = export_onnx(model, tmp_path / cleaning, texts, labels=labels,
                             label_names=["neg", "pos"])
        assert report["text_cleaning"] == cleaning and report["text_cleaning_source"] == "model"
        noisy = _noisy_sentences(300, seed=1)
        keras_probs = softmax(model.predict(noisy, verbose=0, batch_size=32))
        onnx_probs = softmax(Predictor(tmp_path / cleaning).predict_logits(noisy))
        np.testing.assert_allclose(onnx_probs, keras_probs, atol=1e-4)
        assert (onnx_probs.argmax(-1) == keras_probs.argmax(-1)).all()
