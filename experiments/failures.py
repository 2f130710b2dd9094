"""Failure-case statistics: length and negation of misclassified vs correctly classified texts.

Used by `experiments.analysis`; NumPy only, so it is tested without TensorFlow.

Example:

>>> negation_count("It was not good, and I didn't laugh.")
2
>>> failure_statistics(["a b", "not c d e"], [0, 1], [0, 0])["errors"]["count"]
1
"""

import re

import numpy as np

from keras_effattn_runtime.cleaning import NEGATIONS

_WORD = re.compile(r"[a-z']+")


def negation_count(text):
    """Number of negation words (`keras_effattn.data.NEGATIONS`) in `text`, case-insensitive."""
    return sum(1 for word in _WORD.findall(text.lower()) if word in NEGATIONS or
               word.endswith("n't"))


def error_rate_by_truncation(labels, predictions, token_counts, max_length):
    """Error rates of the reviews the model read whole vs those it truncated.

    Args:
        labels, predictions: class ids per review.
        token_counts: WordPiece tokens per review (without [CLS]/[SEP]).
        max_length: the model's packed length (``max_length - 2`` tokens of text fit).

    Returns:
        dict ``{"whole": {"count", "error_rate"}, "truncated": {...}}``.
    """
    wrong = np.asarray(labels) != np.asarray(predictions)
    cut = np.asarray(token_counts) > max_length - 2
    return {name: {"count": int(mask.sum()),
                   "error_rate": float(wrong[mask].mean()) if mask.any() else None}
            for name, mask in (("whole", ~cut), ("truncated", cut))}


def failure_statistics(texts, labels, predictions):
    """Length and negation statistics of misclassified vs correctly classified texts.

    Returns:
        dict with ``errors``/``correct`` groups (count, mean_words, share_with_negation,
        negations_per_100_words) and ``error_rate_by_length_quartile`` (quartile edges and
        rates).
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or len(texts) != labels.size:
        raise ValueError(
            f"failure_statistics needs one label and one prediction per text, got "
            f"{len(texts)} texts, {labels.size} labels and {predictions.size} predictions."
        )
    words = np.asarray([len(t.split()) for t in texts], dtype=np.float64)
    negations = np.asarray([negation_count(t) for t in texts], dtype=np.float64)
    wrong = labels != predictions

    def group(mask):
        if not mask.any():
            return {"count": 0, "mean_words": None, "share_with_negation": None,
                    "negations_per_100_words": None}
        return {"count": int(mask.sum()), "mean_words": float(words[mask].mean()),
                "share_with_negation": float(np.mean(negations[mask] > 0)),
                "negations_per_100_words": float(100 * negations[mask].sum() / words[mask].sum())}

    edges = np.quantile(words, [0.0, 0.25, 0.5, 0.75, 1.0])
    bins = np.clip(np.searchsorted(edges, words, side="right") - 1, 0, 3)
    rates = [float(wrong[bins == q].mean()) if np.any(bins == q) else None for q in range(4)]
    return {"errors": group(wrong), "correct": group(~wrong),
            "error_rate_by_length_quartile": {"edges_words": edges.tolist(), "rates": rates}}
