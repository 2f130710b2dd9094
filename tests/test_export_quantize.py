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
    assert set(verification["accuracy"]) == {"keras", "keras_ci95", "onnx_fp32", "onnx_final",
                                             "delta", "delta_ci95", "gained", "lost"}
    final = verification["final"]
    assert final["flips"] == round((1 - final["label_agreement"]) * final["n"])
    low, high = final["agreement_ci95"]
    assert low <= final["label_agreement"] <= high
    # 16 texts cannot resolve a 0.75 gate (4 flips allowed is fine, so no warning here) ...
    assert "warnings" not in verification
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
    assert not float_dense  # every dense layer is int8
    assert report["int8_recipe"] == "default"
    # The default: per-token int8 (MatMulNBits) for exactly the feed-forward output
    # projections (one per layer), dynamic int8 with int8 weights for the other dense layers.
    blockwise = [n.name for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(blockwise) == 4 and all("feedforward_output" in n for n in blockwise), blockwise
    assert any(t == "INT8" for t in types.values())
    ops = {n.op_type for n in graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert "QAttention" in ops and "Attention" not in ops  # the fused exact layer, int8
    # (MiniLM reaches 0.26; in this tiny model biases and norms weigh more.)
    assert report["file_bytes"]["int8"] * 2 <= report["file_bytes"]["fp32"]


def test_int8_label_never_depends_on_the_texts_beside_it():
    """Dynamic int8 picks activation scales per batch: the gate measures it one text per call
    (as the page runs it), records whether batching changes logits, and the predictor then
    runs such exports one text at a time."""
    folder, _, report = exported(ALL_KINDS, quantize="int8")
    verification = report["verification"]
    assert verification["final"]["batch_size"] == 1
    batch = verification["batch"]
    assert verification["batch_invariant"] is (batch["max_abs_diff"] <= 1e-4)
    # In this model batching moves int8 logits (per-batch scales), so the export says so ...
    assert batch["max_abs_diff"] > 1e-4 and verification["batch_invariant"] is False
    predictor = Predictor(folder)
    assert predictor.metadata["batch_invariant"] is False
    assert predictor.batch_size == 1
    # ... and through the predictor a text's logits are the same alone and among others.
    texts, _ = imdb(per_class=6, seed=12)
    alone = np.concatenate([predictor.predict_logits([t]) for t in texts])
    np.testing.assert_array_equal(predictor.predict_logits(texts), alone)
    batched = Predictor(folder, batch_size=8).predict_logits(texts)
    assert np.abs(batched - alone).max() > 0  # what the default avoids
    # fp32 exports are batch invariant and keep batching.
    fp32_folder, _, fp32_report = exported(ALL_KINDS)
    assert fp32_report["verification"]["batch_invariant"] is True
    assert Predictor(fp32_folder).batch_size == 16


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


@pytest.mark.parametrize("recipe", sorted(quantize_lib.INT8_RECIPES))
def test_every_int8_recipe_writes_a_working_model(tmp_path, recipe):
    folder, _, _ = exported("exact", layers=3)
    src, dst = str(folder / "model.onnx"), str(tmp_path / f"{recipe}.onnx")
    quantize_lib.quantize_int8(src, dst, **quantize_lib.INT8_RECIPES[recipe])
    texts, _ = imdb(per_class=8, seed=5)
    tokenizer = Predictor(folder).tokenizer
    fp32 = verify.run_texts(verify.onnx_session(src), tokenizer, texts)
    int8 = verify.run_texts(verify.onnx_session(dst), tokenizer, texts)
    assert 0 < np.max(np.abs(fp32 - int8)) < 0.5
    graph = onnx.load(dst).graph
    ops = [n.op_type for n in graph.node]
    options = quantize_lib.INT8_RECIPES[recipe]
    assert ("QAttention" in ops) == options.get("quantize_attention", True)
    types = _initializer_types(dst)
    embedding_int8 = any("token_embedding" in n and t in ("INT8", "UINT8")
                         for n, t in types.items())
    assert embedding_int8 == options.get("quantize_embeddings", True)
    if options.get("weight_type", "uint8") == "uint8":
        assert not any(t == "INT8" for t in types.values())
    else:
        assert any(t == "INT8" for t in types.values())
    float_ffn = [n for n in graph.node if n.op_type == "MatMul" and "feedforward_output" in n.name
                 and any(i.endswith("ReadVariableOp:0") for i in n.input)]
    blockwise = options.get("matmul_block_size") is not None
    # Float feed-forward outputs: all of them, or those of the float top layers; blockwise
    # recipes quantise them unless told to keep them float.
    assert bool(float_ffn) == (options.get("float_ffn_output", not blockwise)
                               or options.get("float_top_layers", 0) > 0)
    assert ("MatMulNBits" in ops) == blockwise
    dynamic = "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert dynamic == (not blockwise or options.get("blockwise") == "ffn_output")


def test_blockwise_int8_quantises_activations_per_token(tmp_path):
    """MatMulNBits (8-bit weights in blocks, int8 activations per row and block) replaces the
    chosen MatMuls; with float attention no scale spans two texts, so a text's logits are the
    same alone and among others, and they are closer to fp32 than per-tensor int8's."""
    folder, _, _ = exported("exact", layers=3)
    src = str(folder / "model.onnx")
    model = onnx.load(src)
    quantize_lib.gemm_to_matmul(model)
    constants = {init.name for init in model.graph.initializer}
    matmuls = sum(n.op_type == "MatMul" and n.input[1] in constants for n in model.graph.node)
    ffn_outputs = len(quantize_lib.ffn_output_nodes(model))
    assert ffn_outputs == 3
    texts, _ = imdb(per_class=6, seed=13)
    tokenizer = Predictor(folder).tokenizer
    fp32 = verify.run_texts(verify.onnx_session(src), tokenizer, texts, padding="longest",
                            batch_size=1)
    recipes = {
        "compact": (quantize_lib.INT8_RECIPES["compact"], 0),
        "blockwise": (quantize_lib.INT8_RECIPES["blockwise"], matmuls),
        "default": (quantize_lib.INT8_RECIPES["default"], ffn_outputs),
        "first_2": ({**quantize_lib.INT8_RECIPES["default"], "blockwise_layers": 2}, 2),
        "float_attention": ({"matmul_block_size": 32, "quantize_attention": False}, matmuls),
    }
    errors = {}
    for name, (options, blockwise_count) in recipes.items():
        dst = str(tmp_path / f"{name}.onnx")
        quantize_lib.quantize_int8(src, dst, **options)
        graph = onnx.load(dst).graph
        assert sum(n.op_type == "MatMulNBits" for n in graph.node) == blockwise_count, name
        if name == "first_2":  # the lowest layers' feed-forward outputs, in graph order
            per_token = [n.name for n in graph.node if n.op_type == "MatMulNBits"]
            assert ["transformer_layer_0_" in per_token[0], "transformer_layer_1_" in
                    per_token[1]] == [True, True], per_token
            assert all("feedforward_output" in n for n in per_token), per_token
        # No float MatMul of a weight is left: the rest went to dynamic int8.
        assert not any(n.op_type in ("MatMul", "Gemm") and n.input[1] in constants
                       for n in graph.node), name
        session = verify.onnx_session(dst)
        alone = verify.run_texts(session, tokenizer, texts, padding="longest", batch_size=1)
        errors[name] = float(np.abs(alone - fp32).mean())
        if name == "float_attention":
            batched = verify.run_texts(session, tokenizer, texts, padding="longest",
                                       batch_size=len(texts))
            np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert 0 < errors["blockwise"] < errors["compact"], errors
    assert 0 < errors["float_attention"] < errors["compact"], errors
    assert 0 < errors["default"] < 0.5, errors


def test_blockwise_block_size_is_checked(tmp_path):
    folder, _, _ = exported("exact", layers=3)
    # 512 is a power of two, but onnxruntime's 8-bit packing stops at 256.
    for size in (0, 24, 8, 512, True, "32", 32.0):
        with pytest.raises(ValueError, match="one of 16, 32, 64, 128, 256"):
            quantize_lib.quantize_int8(str(folder / "model.onnx"), str(tmp_path / "x.onnx"),
                                       matmul_block_size=size)
    for layers, scope in ((0, "ffn_output"), (True, "ffn_output"), (2, "all")):
        with pytest.raises(ValueError, match="blockwise_layers"):
            quantize_lib.quantize_int8(str(folder / "model.onnx"), str(tmp_path / "x.onnx"),
                                       matmul_block_size=32, blockwise=scope,
                                       blockwise_layers=layers)
    with pytest.raises(ValueError, match="blockwise must be one of"):
        quantize_lib.quantize_int8(str(folder / "model.onnx"), str(tmp_path / "x.onnx"),
                                   matmul_block_size=32, blockwise="attention")


def test_float_ffn_output_with_blockwise_keeps_them_float(tmp_path):
    folder, _, _ = exported("exact", layers=3)
    src, dst = str(folder / "model.onnx"), str(tmp_path / "x.onnx")
    model = onnx.load(src)
    quantize_lib.gemm_to_matmul(model)
    ffn = set(quantize_lib.ffn_output_nodes(model))
    assert len(ffn) == 3
    quantize_lib.quantize_int8(src, dst, weight_type="int8", matmul_block_size=32,
                               float_ffn_output=True)
    nodes = onnx.load(dst).graph.node
    assert {n.name for n in nodes if n.op_type == "MatMul"} >= ffn
    assert not any(n.name in ffn for n in nodes if n.op_type == "MatMulNBits")
    assert sum(n.op_type == "MatMulNBits" for n in nodes) > 0
    # Every other MatMul of a weight went per token: no dynamic int8 is left.
    assert not any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in nodes)
    with pytest.raises(ValueError, match="blockwise='ffn_output' quantises exactly those"):
        quantize_lib.quantize_int8(src, dst, matmul_block_size=32, blockwise="ffn_output",
                                   float_ffn_output=True)


def test_float_top_layers_keeps_the_top_layer_and_head_float(tmp_path):
    folder, _, _ = exported("exact", layers=3)
    src = str(folder / "model.onnx")
    model = onnx.load(src)
    quantize_lib.gemm_to_matmul(model)
    top = quantize_lib.top_layer_nodes(model, 1)
    # The top layer: Q/K/V (one fused Attention), output projection, two feed-forward MatMuls;
    # then the head's two dense layers.
    kinds = sorted(n.op_type for n in model.graph.node if n.name in top)
    assert kinds == ["Attention"] + ["MatMul"] * 5, kinds
    assert len(quantize_lib.top_layer_nodes(model, 3)) == 3 * 4 + 2
    with pytest.raises(ValueError, match="has 3 layers"):
        quantize_lib.top_layer_nodes(model, 4)
    dst = str(tmp_path / "top.onnx")
    quantize_lib.quantize_int8(src, dst, float_top_layers=1)
    quantized = onnx.load(dst).graph
    remaining = {n.name: n.op_type for n in quantized.node}
    assert all(name in remaining for name in top)  # left as they were: float
    assert sum(op == "QAttention" for op in remaining.values()) == 2


def test_agreement_statistics():
    assert verify.wilson_interval(1000, 1000)[0] == pytest.approx(0.99617, abs=1e-4)
    low, high = verify.wilson_interval(995, 1000)
    assert low == pytest.approx(0.98836, abs=1e-4) and high == pytest.approx(0.99786, abs=1e-4)
    assert verify.wilson_interval(0, 0) == [0.0, 1.0]
    reference = np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 4)
    candidate = reference.copy()
    candidate[0] = [0.0, 1.0]  # a right answer lost
    candidate[9] = [1.0, 0.0]  # a wrong answer made right
    candidate[8] = [1.0, 0.0]  # another gained
    labels = np.array([0] * 6 + [0] * 4)
    change = verify.accuracy_change(reference, candidate, labels)
    assert (change["gained"], change["lost"]) == (2, 1)
    assert change["delta"] == pytest.approx(0.1)
    assert change["delta_ci95"][0] < 0.1 < change["delta_ci95"][1]
    assert verify.compare(reference, candidate)["flips"] == 3
    assert "use at least 300 texts" in verify.resolution_warning(128, 0.99)
    assert verify.resolution_warning(1000, 0.99) is None
    assert verify.resolution_warning(10, 1.0) is None


class _BatchSession:
    """An onnxruntime-like session whose logits are a text's mean id, shifted by the batch's
    mean when `per_batch` (as a batch-wide activation scale would shift them)."""

    def __init__(self, per_batch):
        self.per_batch = per_batch

    def get_inputs(self):
        return [type("Input", (), {"name": "token_ids"})()]

    def run(self, names, feeds):
        ids = feeds["token_ids"].astype(np.float32)
        own = ids.mean(axis=1, keepdims=True)
        shift = ids.mean() if self.per_batch else 0.0
        return [np.concatenate([own - shift, -own], axis=1)]


def _id_tokenizer(texts, padding="max_length"):
    return {"token_ids": np.array([[len(t), len(t) % 7, 3] for t in texts])}


@pytest.mark.parametrize("per_batch", [False, True])
def test_batch_invariance_reruns_texts_in_batches(per_batch):
    texts = [f"review {'x' * i}" for i in range(20)]
    logits, comparison, invariant = verify.batch_invariance(
        _BatchSession(per_batch), _id_tokenizer, texts, check_texts=12)
    assert logits.shape == (20, 2)
    assert comparison["n"] == 12
    assert invariant is (not per_batch)
    assert (comparison["max_abs_diff"] > 1e-4) is per_batch
