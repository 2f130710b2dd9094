"""Evaluation: classification metrics, GLUE metrics, perplexity, and inference cost.

The metric functions take NumPy arrays and need neither TensorFlow nor scikit-learn; each is
checked in the tests against a hand-computed case. `evaluate_classifier` (class logits) and
`evaluate_regressor` (one score per example, e.g. STS-B) run a Keras model over a `tf.data`
pipeline and add loss, latency per sample, throughput and the inference peak memory.
`apply_preprocessor` is the one way raw texts, or text pairs, go through a KerasHub preprocessor.

Example:

>>> m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], class_names=("neg", "pos"))
>>> m["accuracy"], m["confusion_matrix"]
(0.75, [[2, 0], [1, 1]])

References:
    Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
    Understanding", ICLR 2019 (the per-task metrics); Matthews, "Comparison of the predicted and
    observed secondary structure of T4 phage lysozyme", 1975 (MCC).
"""

import math
import time

import numpy as np

from keras_effattn.utils.memory import MemoryMeter

GLUE_TASK_METRICS = {
    "cola": ("matthews_corrcoef",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}


def _labels(y, name):
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {y.shape}.")
    return y


def confusion_matrix(y_true, y_pred, num_classes):
    """``C[i, j]`` = number of examples of true class i predicted as class j."""
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length.")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"{name} holds a class id outside [0, {num_classes}); check num_classes or the "
                "labels."
            )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    return matrix


def classification_metrics(y_true, y_pred, class_names=None, num_classes=None):
    """Accuracy, macro and per-class precision/recall/F1, and the confusion matrix.

    A class with no predictions has precision 0 (and with no examples, recall 0), as in
    scikit-learn's ``zero_division=0``.

    Args:
        y_true: 1-D int array of true class ids.
        y_pred: 1-D int array of predicted class ids.
        class_names: sequence of names, or None for "0", "1", ...
        num_classes: int or None (then ``len(class_names)`` or inferred from the labels).

    Returns:
        dict: ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``, ``per_class``
        (name -> precision/recall/f1/support), ``confusion_matrix`` (list of lists), ``num_examples``.
    """
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if y_true.size == 0:
        raise ValueError("classification_metrics needs at least one example.")
    if num_classes is None:
        num_classes = (
            len(class_names) if class_names else int(max(y_true.max(), y_pred.max())) + 1
        )
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for num_classes={num_classes}.")
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "num_examples": int(y_true.size),
        "accuracy": float(tp.sum() / y_true.size),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": matrix.tolist(),
    }


def binary_f1(y_true, y_pred, positive=1):
    """F1 of the positive class (GLUE's F1 for MRPC and QQP)."""
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    tp = float(np.sum((y_true == positive) & (y_pred == positive)))
    fp = float(np.sum((y_true != positive) & (y_pred == positive)))
    fn = float(np.sum((y_true == positive) & (y_pred != positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(y_true, y_pred):
    """Matthews correlation coefficient (multi-class form; 0 when undefined)."""
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    num_classes = int(max(y_true.max(), y_pred.max())) + 1
    c = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    t, p, n = c.sum(axis=1), c.sum(axis=0), c.sum()
    cov = np.trace(c) * n - t @ p
    denom = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return 0.0 if denom == 0 else float(cov / denom)


def glue_metrics(task, y_true, y_pred):
    """The metrics GLUE defines for `task`, e.g. Matthews correlation for CoLA.

    Args:
        task: str, a GLUE task name ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli",
            "rte", "wnli"; "SST-2"/"STS-B" spellings accepted).
        y_true: true labels (class ids, or float scores for STS-B).
        y_pred: predicted class ids (or scores for STS-B).

    Returns:
        dict from metric name to value.
    """
    key = task.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASK_METRICS:
        raise ValueError(f"Unknown GLUE task {task!r}; expected one of {sorted(GLUE_TASK_METRICS)}.")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {}
    for metric in GLUE_TASK_METRICS[key]:
        if metric == "accuracy":
            out[metric] = float(np.mean(y_true == y_pred))
        elif metric == "f1":
            out[metric] = binary_f1(y_true, y_pred)
        elif metric == "matthews_corrcoef":
            out[metric] = matthews_corrcoef(y_true, y_pred)
        else:
            out[metric] = regression_metrics(y_true, y_pred)[metric]
    return out


def regression_metrics(y_true, y_pred):
    """Pearson and Spearman correlation, MSE, RMSE and MAE of predicted scores.

    Correlations are 0 when undefined (constant labels or predictions), as for
    `matthews_corrcoef`.

    Args:
        y_true: 1-D float array of true scores.
        y_pred: 1-D float array of predicted scores (or [N, 1]).

    Returns:
        dict: ``pearson``, ``spearman``, ``mse``, ``rmse``, ``mae``, ``num_examples``.
    """
    from scipy import stats

    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_pred.ndim == 2 and y_pred.shape[1] == 1:
        y_pred = y_pred[:, 0]
    if y_true.ndim != 1 or y_pred.shape != y_true.shape:
        raise ValueError(
            f"regression_metrics needs 1-D y_true and y_pred of the same length, got shapes "
            f"{y_true.shape} and {y_pred.shape}."
        )
    if y_true.size < 2:
        raise ValueError("regression_metrics needs at least two examples (correlations).")
    constant = np.ptp(y_true) == 0 or np.ptp(y_pred) == 0
    error = y_pred - y_true
    mse = float(np.mean(error**2))
    return {
        "num_examples": int(y_true.size),
        "pearson": 0.0 if constant else float(stats.pearsonr(y_true, y_pred)[0]),
        "spearman": 0.0 if constant else float(stats.spearmanr(y_true, y_pred)[0]),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(np.mean(np.abs(error))),
    }


def perplexity(mean_cross_entropy):
    """Perplexity ``exp(loss)`` from a mean per-token cross-entropy in nats."""
    if not math.isfinite(mean_cross_entropy) or mean_cross_entropy < 0:
        raise ValueError(f"mean_cross_entropy must be a finite value >= 0, got {mean_cross_entropy}.")
    return float(math.exp(mean_cross_entropy))


def log_softmax_cross_entropy(logits, labels):
    """Mean sparse cross-entropy of `logits` [N, C] for int `labels` [N], in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(labels)), np.asarray(labels, np.int64)]))


def apply_preprocessor(preprocessor, x):
    """Runs a KerasHub preprocessor on a batch of raw features `x`, without labels.

    `x` is a string tensor (single texts) or a tuple ``(texts_a, texts_b)`` (text pairs, packed
    as ``[CLS] a [SEP] b [SEP]``). ``y=None`` is passed explicitly: called on a bare 2-tuple, a
    KerasHub preprocessor unpacks it as ``(x, y)`` and would drop the second segment.
    """
    return preprocessor(x, y=None)


def _preprocessed(features, preprocessor):
    """`features` (a dataset of texts or of ``(texts_a, texts_b)``) mapped through the
    preprocessor; tf.data hands a tuple element to ``map`` as separate arguments."""
    return features.map(lambda *x: apply_preprocessor(preprocessor, x[0] if len(x) == 1 else x))


def predict_timed(model, inputs, warmup_batches=1):
    """Runs `keras.Model.predict` over a batched `tf.data` input of model-ready inputs, timed.

    The first `warmup_batches` batches are run once before timing (tracing and XLA compilation
    are not inference cost).

    Returns:
        ``(outputs, stats)``; stats has ``seconds``, ``num_examples``, ``latency_ms_per_sample``,
        ``samples_per_s``, ``host_peak_rss_mb``, ``device_peak_mb``.
    """
    import keras

    if warmup_batches:
        keras.Model.predict(model, inputs.take(warmup_batches), verbose=0)
    meter = MemoryMeter().start()
    start = time.perf_counter()
    outputs = keras.Model.predict(model, inputs, verbose=0)
    seconds = time.perf_counter() - start
    memory = meter.stop()
    first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    if isinstance(first, dict):
        first = next(iter(first.values()))
    count = int(np.shape(first)[0])
    stats = {
        "seconds": seconds,
        "num_examples": count,
        "latency_ms_per_sample": 1000.0 * seconds / max(count, 1),
        "samples_per_s": count / max(seconds, 1e-9),
        **memory,
    }
    return outputs, stats


def evaluate_classifier(model, features, labels, class_names=None, warmup_batches=1,
                        preprocess=True):
    """Evaluates a classifier that outputs logits per class.

    Args:
        model: a Keras model giving [N, num_classes] logits.
        features: a batched `tf.data.Dataset` of inputs (no labels), in label order: raw inputs
            for a KerasHub task (its ``preprocessor`` is mapped over them when `preprocess`).
        labels: 1-D int array of the true class ids, same order.
        class_names: optional class names.
        warmup_batches: int, default 1. Batches run before timing.
        preprocess: bool, default True. Map ``model.preprocessor`` (when there is one) over
            `features` inside the timed pipeline; False when they are model-ready already.

    Returns:
        dict: `classification_metrics` plus ``loss`` (cross-entropy from the logits), and
        ``inference`` (latency, throughput, peak memory), and ``predictions`` (class ids).
    """
    labels = np.asarray(labels)
    preprocessor = getattr(model, "preprocessor", None)
    if preprocess and preprocessor is not None:
        features = _preprocessed(features, preprocessor)
    logits, stats = predict_timed(model, features, warmup_batches)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"The model gave outputs of shape {logits.shape} for {labels.shape[0]} labels; "
            "expected [num_examples, num_classes] in the order of the labels."
        )
    num_classes = logits.shape[1]
    predictions = logits.argmax(axis=-1)
    metrics = classification_metrics(labels, predictions, class_names, num_classes)
    metrics["loss"] = log_softmax_cross_entropy(logits, labels)
    metrics["inference"] = stats
    metrics["predictions"] = predictions.tolist()
    return metrics


def evaluate_regressor(model, features, labels, warmup_batches=1, preprocess=True):
    """Evaluates a regressor that outputs one score per example (e.g. STS-B similarity).

    Args:
        model: a Keras model giving [N, 1] (or [N]) scores.
        features: a batched `tf.data.Dataset` of inputs (no labels), in label order, as for
            `evaluate_classifier`.
        labels: 1-D float array of the true scores, same order.
        warmup_batches: int, default 1. Batches run before timing.
        preprocess: bool, default True. Map ``model.preprocessor`` over `features` first.

    Returns:
        dict: `regression_metrics` plus ``loss`` (the mean squared error), ``inference``
        (latency, throughput, peak memory), ``predictions`` (the scores) and ``labels`` (the
        true scores, so plots can be re-drawn from the saved metrics).
    """
    labels = np.asarray(labels, dtype=np.float64)
    preprocessor = getattr(model, "preprocessor", None)
    if preprocess and preprocessor is not None:
        features = _preprocessed(features, preprocessor)
    outputs, stats = predict_timed(model, features, warmup_batches)
    scores = np.asarray(outputs, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.shape != labels.shape:
        raise ValueError(
            f"The model gave outputs of shape {np.shape(outputs)} for {labels.shape[0]} labels; "
            "a regressor must give one score per example ([num_examples, 1]), in label order."
        )
    metrics = regression_metrics(labels, scores)
    metrics["loss"] = metrics["mse"]
    metrics["inference"] = stats
    metrics["predictions"] = scores.tolist()
    metrics["labels"] = labels.tolist()
    return metrics
