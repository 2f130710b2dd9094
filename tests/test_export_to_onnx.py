"""export.to_onnx: conversion (exact GELU included), parity per attention kind, metadata, files,
atomic failure, float32 loading and the CLI."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import keras_effattn
from export import to_onnx, verify
from keras_effattn_runtime import metadata as meta
from keras_effattn_runtime.cleaning import clean_text
from keras_effattn_runtime.tokenizer import WordPieceTokenizer
from tests.conftest import REPO_ROOT
from tests.export_helpers import ALL_KINDS, LABELS, MAX_LENGTH, exported, imdb, tiny_classifier

pytestmark = pytest.mark.usefixtures("data_dir")


def _session(folder):
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def _keras_logits(model, batch):
    return np.asarray(model(batch, training=False))


def test_hybrid_of_every_kind_exports_with_parity():
    folder, model, report = exported(ALL_KINDS)
    assert report["ok"], report["verification"]["failures"]
    kinds = [spec.kind for spec in keras_effattn.parse_attention_spec(report["attention_spec"])]
    assert kinds == ["exact", "favor", "lowrank", "keras"]
    for name in ("model.onnx", "vocab.txt", "tokenizer.json", "export_report.json"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob(".export-*")), "staging folder left behind"
    verification = report["verification"]
    assert verification["tokenizer"]["mismatches"] == 0
    assert {(e["batch"], e["length"]) for e in verification["sweep"]} >= {(1, 16), (8, MAX_LENGTH)}
    assert max(e["fp32"]["max_abs_diff"] for e in verification["sweep"]) <= 1e-4
    assert verification["fp32"]["label_agreement"] == 1.0
    # the report on disk is the returned one
    on_disk = json.loads((folder / "export_report.json").read_text())
    assert on_disk["source_sha256"] == report["source_sha256"]


def test_dynamic_axes_and_deterministic_outputs():
    folder, model, _ = exported(ALL_KINDS)
    session = _session(folder)
    graph = onnx.load(str(folder / "model.onnx")).graph
    for value in graph.input:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], (value.name, dims)
    rng = np.random.default_rng(0)
    for batch_size, length in [(1, 5), (5, 17), (2, MAX_LENGTH)]:
        ids = rng.integers(1000, 20000, (batch_size, length)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[0, length // 2 :] = 0
        feeds = {"token_ids": ids, "padding_mask": mask}
        first = session.run(["logits"], feeds)[0]
        again = _session(folder).run(["logits"], feeds)[0]
        np.testing.assert_array_equal(first, again)  # random features are constants
        np.testing.assert_allclose(first, _keras_logits(model, feeds), atol=1e-4, rtol=0)


def test_exact_gelu_survives_conversion(tmp_path):
    # TF lowers exact GELU to Erfc; the handler rewrites it to 1 - Erf with no Erfc left,
    # and the default fusion then folds the whole GELU into one node.
    folder, _, _ = exported(ALL_KINDS)
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    assert "Gelu" in ops and "Erfc" not in ops
    path = tmp_path / "raw.onnx"
    to_onnx.convert_to_onnx(tiny_classifier("exact"), str(path))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Erf" in ops and "Erfc" not in ops


def test_metadata_names_everything_the_predictor_needs():
    folder, model, report = exported(ALL_KINDS)
    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    values = meta.from_props(props)
    assert values["labels"] == LABELS
    assert values["max_length"] == MAX_LENGTH
    assert values["precision"] == "fp32"
    assert values["inputs"] == ["token_ids", "padding_mask"]
    assert values["attention_spec"] == report["attention_spec"]
    tokenizer = WordPieceTokenizer.from_dir(folder)
    assert values["vocab_sha256"] == tokenizer.vocabulary_sha256
    assert values["tokenizer_kind"] == "keras_hub.WordPieceTokenizer"
    assert values["source_sha256"] == to_onnx.weights_sha256(model)
    assert {"tensorflow", "tf2onnx", "onnxruntime", "keras_effattn"} <= set(values["versions"])
    assert values["padding_invariant"] is True
    assert values["text_cleaning"] == report["text_cleaning"] == "keras_effattn.clean_text"


def test_text_cleaning_metadata_round_trip():
    base = {"format": meta.FORMAT, "labels": LABELS, "max_length": 8, "inputs": ["token_ids"],
            "tokenizer": {"kind": "x"}, "precision": "fp32"}
    for value in meta.TEXT_CLEANINGS:
        props = meta.to_props({**base, "text_cleaning": value})
        assert props["keras_effattn.text_cleaning"] == value
        assert meta.from_props(props)["text_cleaning"] == value
    assert meta.from_props(meta.to_props(base))["text_cleaning"] == "none"  # older exports
    with pytest.raises(ValueError, match="text_cleaning 'lowercase' is not one"):
        meta.from_props(meta.to_props({**base, "text_cleaning": "lowercase"}))


@pytest.mark.parametrize("text_cleaning", ["keras_effattn.clean_text", "none"])
def test_verification_sees_the_texts_the_predictor_will(tmp_path, monkeypatch, text_cleaning):
    # Conversion is replaced by a copy of a cached export; verification records its texts.
    folder, model, _ = exported(ALL_KINDS)
    seen = []

    def convert(model, path, opset=to_onnx.DEFAULT_OPSET):
        pathlib.Path(path).write_bytes((folder / "model.onnx").read_bytes())
        return ["token_ids", "padding_mask"]

    def verify_export(model, preprocessor, tokenizer, fp32_path, final_path, texts, **kwargs):
        seen.extend(texts)
        raise RuntimeError("stop after recording the texts")

    monkeypatch.setattr(to_onnx, "convert_to_onnx", convert)
    monkeypatch.setattr(to_onnx.verify, "verify_export", verify_export)
    monkeypatch.setattr(model.preprocessor, "text_cleaning", text_cleaning)  # the model's own
    texts, _ = imdb(per_class=4)
    texts[0] = "A <i>great</i> film &amp; cast!!!<br /><br />Loved it."
    with pytest.raises(RuntimeError, match="stop after"):
        to_onnx.export_onnx(model, tmp_path / "out", texts, optimize=False)
    expected = [clean_text(t) for t in texts] if text_cleaning != "none" else texts
    assert seen == expected
    assert (seen[0] == "A great film & cast! Loved it.") == (text_cleaning != "none")


@pytest.mark.slow
@pytest.mark.parametrize(
    "attention",
    ["keras", "exact", "exact(chunk_size=8)", "favor(num_features=16)", "lowrank(k=8)",
     "alternate:exact,favor(num_features=16)"],
    ids=["keras", "exact", "exact-chunked", "favor", "lowrank", "hybrid-alternate"],
)
def test_each_attention_kind_exports_with_parity(attention):
    folder, model, report = exported(attention)
    assert report["ok"], report["verification"]["failures"]
    assert report["verification"]["fp32"]["max_abs_diff"] <= 1e-4
    texts, _ = imdb(per_class=2, seed=9)
    batch = WordPieceTokenizer.from_dir(folder)(texts)
    np.testing.assert_allclose(
        _session(folder).run(["logits"], batch)[0], _keras_logits(model, batch), atol=1e-4
    )


def test_failed_parity_writes_nothing_final(tmp_path, monkeypatch):
    # A wrong Erfc rewrite (erfc -> erf) changes every GELU: verification must catch it.
    def wrong_erfc(ctx, node, name, args):
        node.type = "Erf"

    monkeypatch.setattr(to_onnx, "_erfc_handler", wrong_erfc)
    model = tiny_classifier("exact")
    texts, labels = imdb()
    (tmp_path / "model.onnx").write_bytes(b"an earlier export")
    with pytest.raises(to_onnx.ParityError, match="fp32 max") as caught:
        to_onnx.export_onnx(model, tmp_path, texts, labels=labels)
    assert not caught.value.report["ok"]
    assert (tmp_path / "model.onnx").read_bytes() == b"an earlier export"  # untouched
    assert not (tmp_path / "export_report.json").exists()
    assert not (tmp_path / "tokenizer.json").exists()
    assert json.loads((tmp_path / "export_report.failed.json").read_text())["ok"] is False
    assert not list(tmp_path.glob(".export-*"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantize": "int4"}, "quantize"),
        ({"opset": 11}, "opset"),
        ({"fusion": "fast"}, "fusion"),
        ({"max_abs_diff": -1.0}, "max_abs_diff"),
        ({"min_agreement": 1.5}, "min_agreement"),
        ({"texts": ["too", "few"]}, "at least 8"),
        ({"texts": "one string"}, "list of real texts"),
        ({"label_names": ["a", "b", "c"]}, "label_names"),
        ({"labels": [0, 1]}, "labels"),
        ({"text_cleaning": "lowercase"}, "text_cleaning must be one of"),
    ],
    ids=["quantize", "opset", "fusion", "tolerance", "agreement", "few-texts", "str-texts", "label-names",
         "labels", "text-cleaning"],
)
def test_bad_arguments(tmp_path, kwargs, match):
    _, model, _ = exported(ALL_KINDS)
    texts, _ = imdb(per_class=4)
    arguments = {"texts": texts, **kwargs}
    with pytest.raises(ValueError, match=match):
        to_onnx.export_onnx(model, tmp_path, **arguments)
    assert not (tmp_path / "model.onnx").exists()


def test_model_without_preprocessor_or_dict_inputs_is_refused(tmp_path):
    texts, _ = imdb(per_class=4)
    model = tiny_classifier("keras")
    model.preprocessor = None
    with pytest.raises(ValueError, match="preprocessor"):
        to_onnx.export_onnx(model, tmp_path, texts)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="token_ids"):
        to_onnx.model_inputs(plain)


def test_mixed_precision_model_is_loaded_as_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = tiny_classifier("exact")
    keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(ValueError, match="float32"):
        to_onnx.convert_to_onnx(model, str(tmp_path / "x.onnx"))
    path = tmp_path / "mixed.keras"
    model.save(path)
    loaded = to_onnx.load_float32(path)
    assert {layer.dtype_policy.name for layer in to_onnx._all_layers(loaded)} <= {
        "float32", "int32"
    }
    for original, copy in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copy))
    texts, _ = imdb(per_class=2)
    batch = WordPieceTokenizer.from_keras_hub(loaded.preprocessor)(texts)
    np.testing.assert_allclose(
        verify.run_keras(loaded, batch), verify.run_keras(model, batch), atol=5e-2
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_onnx.load_float32(tmp_path / "missing.keras")


@pytest.mark.slow
def test_cli_writes_export_and_fails_with_status_1(tmp_path):
    model = tiny_classifier("alternate:exact,favor(num_features=16)")
    model.save(tmp_path / "model.keras")
    texts, _ = imdb(per_class=4)
    (tmp_path / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    common = ["--model", str(tmp_path / "model.keras"), "--texts", str(tmp_path / "texts.txt"),
              "--labels", "neg,pos"]
    ok = subprocess.run(
        [sys.executable, "-m", "export.to_onnx", *common, "--output_dir", str(tmp_path / "ok")],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "label agreement" in ok.stdout
    report = json.loads((tmp_path / "ok" / "export_report.json").read_text())
    assert report["labels"] == ["neg", "pos"] and report["ok"]
    assert report["source_sha256"] == to_onnx.sha256_file(tmp_path / "model.keras")
    # The same CLI with a broken GELU rewrite: non-zero exit and no model.onnx.
    broken = (
        "import sys, export.to_onnx as t\n"
        "def wrong(ctx, node, name, args):\n"
        "    node.type = 'Erf'\n"
        "t._erfc_handler = wrong\n"
        "from absl import app\n"
        "t._flags()\n"
        "app.run(t.main, argv=['to_onnx'] + sys.argv[1:])\n"
    )
    failed = subprocess.run(
        [sys.executable, "-c", broken, *common, "--output_dir", str(tmp_path / "bad")],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "verification failed" in failed.stderr
    assert not (tmp_path / "bad" / "model.onnx").exists()
