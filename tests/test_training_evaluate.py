import math

import numpy as np
import pytest

from keras_effattn.training import evaluate


def test_classification_metrics_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = evaluate.classification_metrics(y_true, y_pred, class_names=("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # precision a=2/2, b=1/2, c=1/2; recall a=2/3, b=1/2, c=1/1
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    f1_c = 2 * 0.5 * 1 / 1.5
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + f1_c) / 3)


def test_never_predicted_class_scores_zero():
    m = evaluate.classification_metrics([0, 1], [0, 0], num_classes=2)
    assert m["per_class"]["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_matthews_and_f1_by_hand():
    y_true = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    y_pred = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    tp, tn, fp, fn = 3, 3, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert evaluate.matthews_corrcoef(y_true, y_pred) == pytest.approx(mcc)
    assert evaluate.binary_f1(y_true, y_pred) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert evaluate.matthews_corrcoef([0, 0], [0, 0]) == 0.0


@pytest.mark.parametrize(
    "task, keys",
    [("CoLA", {"matthews_corrcoef"}), ("MRPC", {"accuracy", "f1"}), ("SST-2", {"accuracy"}),
     ("STS-B", {"pearson", "spearman"}), ("rte", {"accuracy"})],
    ids=["cola", "mrpc", "sst2", "stsb", "rte"],
)
def test_glue_metrics_keys(task, keys):
    if task == "STS-B":
        m = evaluate.glue_metrics(task, [0.0, 1.0, 2.0, 3.5], [0.1, 0.9, 2.5, 3.0])
        assert m["spearman"] == pytest.approx(1.0)
        assert 0.9 < m["pearson"] < 1.0
    else:
        m = evaluate.glue_metrics(task, [0, 1, 1, 0], [0, 1, 0, 0])
    assert set(m) == keys


def test_perplexity_and_cross_entropy():
    assert evaluate.perplexity(math.log(20.0)) == pytest.approx(20.0)
    logits = np.log(np.array([[0.5, 0.5], [0.25, 0.75]]))
    assert evaluate.log_softmax_cross_entropy(logits, [0, 1]) == pytest.approx(
        -(math.log(0.5) + math.log(0.75)) / 2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: evaluate.glue_metrics("squad", [0], [0]), "Unknown GLUE task"),
        (lambda: evaluate.perplexity(float("nan")), "finite"),
        (lambda: evaluate.classification_metrics([0, 3], [0, 1], num_classes=2), "outside"),
        (lambda: evaluate.classification_metrics([], []), "at least one"),
        (lambda: evaluate.confusion_matrix([0, 1], [0], 2), "differ in length"),
    ],
    ids=["glue-task", "perplexity", "label-range", "empty", "lengths"],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_evaluate_classifier_on_a_keras_model():
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    model.layers[0].set_weights([np.array([[1.0, 0.0], [0.0, 1.0]], "float32")])
    x = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]], "float32")
    features = tf.data.Dataset.from_tensor_slices(x).batch(2)
    result = evaluate.evaluate_classifier(model, features, [0, 1, 1], ("a", "b"))
    assert result["predictions"] == [0, 1, 0]
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["inference"]["num_examples"] == 3
    assert result["inference"]["latency_ms_per_sample"] > 0
    assert result["loss"] == pytest.approx(evaluate.log_softmax_cross_entropy(x, [0, 1, 1]))


def test_regression_metrics_by_hand():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.5, 1.5, 3.5, 5.0])  # ranks 1.5, 1.5, 3, 4
    m = evaluate.regression_metrics(y_true, y_pred)
    errors = y_pred - y_true  # 0.5, -0.5, 0.5, 1.0
    assert m["mse"] == pytest.approx(np.mean(errors**2))
    assert m["rmse"] == pytest.approx(np.sqrt(1.75 / 4))
    assert m["mae"] == pytest.approx(0.625)
    centred_t, centred_p = y_true - 2.5, y_pred - 2.875
    pearson = (centred_t @ centred_p) / np.sqrt((centred_t @ centred_t) * (centred_p @ centred_p))
    assert m["pearson"] == pytest.approx(pearson)
    ranks_t, ranks_p = np.array([1, 2, 3, 4.0]) - 2.5, np.array([1.5, 1.5, 3, 4]) - 2.5
    spearman = (ranks_t @ ranks_p) / np.sqrt((ranks_t @ ranks_t) * (ranks_p @ ranks_p))
    assert m["spearman"] == pytest.approx(spearman)
    assert evaluate.regression_metrics(y_true, np.full(4, 2.0))["pearson"] == 0.0  # undefined
    with pytest.raises(ValueError, match="same length"):
        evaluate.regression_metrics(y_true, y_pred[:3])


def test_evaluate_regressor_on_a_keras_model():
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([np.array([[1.0], [2.0]], "float32")])
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")
    result = evaluate.evaluate_regressor(model, tf.data.Dataset.from_tensor_slices(x).batch(2),
                                         [1.0, 2.5, 2.0])
    assert result["predictions"] == pytest.approx([1.0, 2.0, 3.0])
    assert result["loss"] == pytest.approx((0.25 + 1.0) / 3)
    assert result["labels"] == [1.0, 2.5, 2.0]
    assert result["inference"]["num_examples"] == 3


def test_text_pairs_reach_the_preprocessor_as_two_segments():
    import keras_hub
    import tensorflow as tf

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"]
    preprocessor = keras_hub.models.DistilBertTextClassifierPreprocessor(
        keras_hub.models.DistilBertTokenizer(vocabulary=vocab), sequence_length=8)
    pairs = (tf.constant(["good film", "bad"]), tf.constant(["bad film", "good"]))
    x = evaluate.apply_preprocessor(preprocessor, pairs)
    assert np.asarray(x["token_ids"]).tolist() == [[2, 5, 7, 3, 6, 7, 3, 0],
                                                   [2, 6, 3, 5, 3, 0, 0, 0]]
    # The same packing inside a tf.data map over (texts_a, texts_b) elements.
    mapped = evaluate._preprocessed(tf.data.Dataset.from_tensor_slices(pairs).batch(2),
                                    preprocessor)
    np.testing.assert_array_equal(next(iter(mapped))["token_ids"], x["token_ids"])
