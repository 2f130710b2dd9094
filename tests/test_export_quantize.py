"""export.quantize: dynamic int8 (agreement on real reviews, size), fp16, graph optimisation,
the exact Gemm -> MatMul rewrite, and errors."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from export import quantize as quantize_lib
from export import verify
from export.predict import Predictor
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
    assert "MatMulInteger" in {n.op_type for n in graph.node}
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
    optimized = quantize_lib.optimize_graph(source, str(tmp_path / "optimized.onnx"))
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


def test_exported_layer_norms_are_fused_and_exact():
    folder, _, report = exported(ALL_KINDS)
    # The strict fp32 parity check (tokenizer, batch/length sweep) ran on the fused file.
    assert report["ok"] and report["verification"]["fp32"]["max_abs_diff"] <= 1e-4
    model = onnx.load(str(folder / "model.onnx"))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("LayerNormalization") == 2 * 4 + 1  # two per layer + embeddings
    assert "GlobalAveragePool" not in ops
    assert quantize_lib.fuse_layer_norm(model) == 0  # nothing left to fuse


def _decomposed_layer_norm_graph(rng, extra_use, opset=17, width=8, eps=1e-3):
    """Keras' LayerNormalization as tf2onnx writes it, on x [B, T, width]."""
    n = helper.make_node
    nodes = [
        n("GlobalAveragePool", ["x"], ["mean"]),
        n("Sub", ["x", "mean"], ["centred"]),
        n("Mul", ["centred", "centred"], ["square"]),
        n("GlobalAveragePool", ["square"], ["var"]),
        n("Add", ["var", "eps"], ["var_eps"]),
        n("Sqrt", ["var_eps"], ["std"]),
        n("Reciprocal", ["std"], ["inv"]),
        n("Mul", ["inv", "gamma"], ["g"]),
        n("Neg", ["mean"], ["neg_mean"]),
        n("Mul", ["neg_mean", "g"], ["shift"]),
        n("Add", ["shift", "beta"], ["offset"]),
        n("Mul", ["x", "g"], ["scaled"]),
        n("Add", ["scaled", "offset"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, None, width])]
    if extra_use:  # the variance is also a graph output: fusing would lose it
        outputs.append(helper.make_tensor_value_info("var", onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "layer_norm",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, None, width])],
        outputs,
        [numpy_helper.from_array(np.array(eps, np.float32), "eps"),
         numpy_helper.from_array(rng.normal(size=(1, 1, width)).astype(np.float32), "gamma"),
         numpy_helper.from_array(rng.normal(size=(1, 1, width)).astype(np.float32), "beta")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_fuse_layer_norm_equals_decomposed_form():
    rng = np.random.default_rng(0)
    model = _decomposed_layer_norm_graph(rng, extra_use=False)
    x = rng.normal(size=(3, 5, 8)).astype(np.float32) * 4 + 1
    expected = _run(model, x)
    assert quantize_lib.fuse_layer_norm(model) == 1
    assert [node.op_type for node in model.graph.node] == ["LayerNormalization"]
    assert {init.name for init in model.graph.initializer} == {
        "fused_layer_norm_0_gamma", "fused_layer_norm_0_beta"}
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), expected, atol=1e-5)
    # Independent oracle: NumPy layer norm.
    gamma, beta = (numpy_helper.to_array(i) for i in _decomposed_layer_norm_graph(
        np.random.default_rng(0), extra_use=False).graph.initializer[1:])
    mean = x.mean(-1, keepdims=True)
    oracle = (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-3) * gamma + beta
    np.testing.assert_allclose(_run(model, x), oracle, atol=1e-5)


def test_fuse_layer_norm_leaves_shared_intermediates_and_rejects_old_opsets():
    rng = np.random.default_rng(0)
    shared = _decomposed_layer_norm_graph(rng, extra_use=True)
    assert quantize_lib.fuse_layer_norm(shared) == 0
    assert len(shared.graph.node) == 13
    with pytest.raises(ValueError, match="opset >= 17"):
        quantize_lib.fuse_layer_norm(_decomposed_layer_norm_graph(rng, False, opset=16))

