"""export.quantize: dynamic int8 (agreement on real reviews, size), fp16, graph optimisation,
the exact Gemm -> MatMul rewrite, and errors."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from export import quantize as quantize_lib
from export import verify
from keras_effattn_runtime.predict import Predictor
from tests.export_helpers import ALL_KINDS, exported, imdb

pytestmark = pytest.mark.usefixtures("data_dir")


def _initializer_types(path):
    return {
        init.name: onnx.TensorProto.DataType.Name(init.data_type)
        for init in onnx.load(str(path)).graph.initializer
    }


def test_int8_export_agrees_with_keras_on_real_reviews():
    folder, model, report = exported(ALL_KINDS, quantize="int8")
    assert report["ok"], report["verification"]["failures"]
    assert report["precision"] == "int8"
    verification = report["verification"]
    assert verification["fp32"]["max_abs_diff"] <= 1e-4  # fp32 stays strictly checked
    assert verification["final"]["label_agreement"] >= 0.75
    assert set(verification["accuracy"]) == {"keras", "onnx_fp32", "onnx_final", "delta"}
    # Independent check on other reviews, through the deployed predictor.
    texts, _ = imdb(per_class=10, seed=11)
    predictor = Predictor(folder)
    assert predictor.metadata["precision"] == "int8"
    keras_logits = verify.run_keras(model, predictor.tokenizer(texts))
    agreement = verify.compare(keras_logits, predictor.predict_logits(texts))
    assert agreement["label_agreement"] >= 0.75
    assert 0 < agreement["max_abs_diff"] < 0.5  # quantised: close, not identical
    # Weights of every dense layer and the embedding tables are stored as 8-bit integers.
    types = _initializer_types(folder / "model.onnx")
    assert any("token_embedding" in n and t in ("INT8", "UINT8") for n, t in types.items())
    graph = onnx.load(str(folder / "model.onnx")).graph
    constants = {init.name for init in graph.initializer}
    float_dense = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")
                   and any(i in constants for i in n.input)]
    assert not float_dense, f"dense layers left in float: {float_dense}"
    ops = {n.op_type for n in graph.node}
    assert "MatMulInteger" in ops
    assert "QAttention" in ops and "Attention" not in ops  # the fused exact layer, int8
    # (MiniLM reaches 0.26; in this tiny model biases and norms weigh more.)
    assert report["file_bytes"]["int8"] * 2 <= report["file_bytes"]["fp32"]


def test_fp16_conversion_keeps_io_types_and_logits(tmp_path):
    folder, _, _ = exported(ALL_KINDS)
    half = quantize_lib.convert_fp16(str(folder / "model.onnx"), str(tmp_path / "half.onnx"))
    session = ort.InferenceSession(half, providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(int32)", "tensor(int32)"]
    assert session.get_outputs()[0].type == "tensor(float)"
    assert "FLOAT16" in _initializer_types(half).values()
    texts, _ = imdb(per_class=4, seed=2)
    predictor = Predictor(folder)
    batch = predictor.tokenizer(texts)
    full = verify.run_session(predictor.session, batch)
    np.testing.assert_allclose(verify.run_session(session, batch), full, atol=2e-2)
    metadata = {p.key for p in onnx.load(half).metadata_props}
    assert "keras_effattn.format" in metadata


def test_optimize_graph_keeps_outputs_and_metadata(tmp_path):
    folder, _, _ = exported(ALL_KINDS)
    source = str(folder / "model.onnx")
    optimized = str(tmp_path / "optimized.onnx")
    counts = quantize_lib.optimize_graph(source, optimized)
    assert counts == {"layer_norm": 0, "gelu": 0, "attention": 0}  # the export fused them
    props = lambda path: {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props(optimized) == props(source)
    texts, _ = imdb(per_class=3, seed=6)
    predictor = Predictor(folder)
    batch = predictor.tokenizer(texts)
    other = ort.InferenceSession(optimized, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        verify.run_session(other, batch), verify.run_session(predictor.session, batch), atol=1e-5
    )


@pytest.mark.parametrize("trans_b, bias", [(0, True), (1, True), (1, False)],
                         ids=["plain", "transposed", "no-bias"])
def test_gemm_to_matmul_is_exact(tmp_path, trans_b, bias):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(6, 4) if trans_b else (4, 6)).astype(np.float32)
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    attributes = {"transB": trans_b, "beta": 1.0 if bias else 0.0}
    graph = helper.make_graph(
        [helper.make_node("Gemm", inputs, ["y"], name="dense", **attributes)],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 6])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "b")][: len(inputs) - 1],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(3, 4)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert quantize_lib.gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == (["MatMul", "Add"] if bias else ["MatMul"])
    onnx.checker.check_model(model)
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="export the model first"):
        quantize_lib.quantize_int8(str(tmp_path / "none.onnx"), str(tmp_path / "out.onnx"))
    folder, _, _ = exported(ALL_KINDS)
    with pytest.raises(ValueError, match="quantize must be one of"):
        quantize_lib.quantize(str(folder / "model.onnx"), str(tmp_path / "x.onnx"), "int4")
