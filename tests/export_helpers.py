"""Shared helpers for the export tests: tiny classifiers, real IMDB texts, cached exports.

An export (conversion + verification) costs seconds, so each (attention, precision) pair is
exported once per test session and shared by test_export_* and test_predict.
"""

import atexit
import pathlib
import shutil
import tempfile

import keras
import numpy as np

import keras_effattn
from export.to_onnx import export_onnx
from keras_effattn.data import read_imdb
from tests.conftest import shared_data_dir

TINY = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "max_sequence_length": 64,
}
MAX_LENGTH = 32
LABELS = ["neg", "pos"]
# One layer of every kind: the hybrid that covers all exporters in one model.
ALL_KINDS = "exact,favor(num_features=16),lowrank(k=8),keras"

_EXPORTS = {}
_ROOT = []


def tiny_classifier(attention, layers=None, seed=0):
    """A random-init 2-layer classifier with the MiniLM vocabulary and O(1) logits."""
    keras.utils.set_random_seed(seed)
    config = dict(TINY)
    if layers is None and attention == ALL_KINDS:
        layers = 4
    if layers is not None:
        config["num_layers"] = layers
    model = keras_effattn.build_classifier(config, attention=attention, max_length=MAX_LENGTH)
    # The default init gives logits ~1e-2; a unit-scale head makes parity checks meaningful.
    rng = np.random.default_rng(seed)
    kernel, bias = model.output_dense.get_weights()
    model.output_dense.set_weights(
        [rng.normal(0.0, 1.0, kernel.shape).astype("float32"), bias]
    )
    return model


def imdb(per_class=8, seed=0, clean=False, split="test"):
    """(texts, labels) from the shared IMDB archive (raw text by default)."""
    data = read_imdb(
        str(shared_data_dir() / "aclImdb_v1.tar.gz"),
        split,
        max_per_class=per_class,
        seed=seed,
        clean=clean,
    )
    return list(data.texts), np.asarray(data.labels)


def exported(attention=ALL_KINDS, quantize=None, layers=None, attention_output=False):
    """(output_dir, model, report) of a cached export of a tiny classifier."""
    key = (attention, quantize, layers, attention_output)
    if key not in _EXPORTS:
        if not _ROOT:
            _ROOT.append(pathlib.Path(tempfile.mkdtemp(prefix="keras_effattn_export_tests_")))
            atexit.register(shutil.rmtree, _ROOT[0], ignore_errors=True)
        folder = _ROOT[0] / f"export_{len(_EXPORTS)}"
        model = tiny_classifier(attention, layers=layers)
        texts, labels = imdb()
        report = export_onnx(
            model,
            folder,
            texts,
            labels=labels,
            label_names=LABELS,
            quantize=quantize,
            min_agreement=0.75 if quantize else 0.99,
            attention_output=attention_output,
        )
        _EXPORTS[key] = (folder, model, report)
    return _EXPORTS[key]
