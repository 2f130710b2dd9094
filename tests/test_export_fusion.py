"""export.fusion: layer norm, GELU and self-attention fused into single nodes, each checked
against the unfused graph (and so against Keras), on tiny exported classifiers and on
hand-built graphs; patterns that do not fit are left alone."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from export import fusion, to_onnx
from export import quantize as quantize_lib
from tests.export_helpers import ALL_KINDS, exported, imdb, tiny_classifier

pytestmark = pytest.mark.usefixtures("data_dir")


def _session(model):
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _random_feeds(rng, batch, length, vocab=30522):
    ids = rng.integers(1000, vocab, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    for row in range(batch):  # every row keeps at least [CLS] and [SEP]
        mask[row, rng.integers(2, length + 1):] = 0
    ids[mask == 0] = 0
    return {"token_ids": ids, "padding_mask": mask}


def _raw_export(tmp_path, attention, name="raw.onnx"):
    """tf2onnx's graph after onnxruntime's basic optimisation, as the export fuses it."""
    path = str(tmp_path / name)
    to_onnx.convert_to_onnx(tiny_classifier(attention), path)
    quantize_lib.optimize_graph(path, path, fusion="none")
    return onnx.load(path)


def test_exported_hybrid_fuses_only_the_exact_layer():
    folder, _, report = exported(ALL_KINDS)  # exact, favor, lowrank, keras
    assert report["fusion"] == {"level": "all",
                                "fused": {"layer_norm": 9, "gelu": 4, "attention": 1}}
    model = onnx.load(str(folder / "model.onnx"))
    attention = [n for n in model.graph.node if n.op_type == "Attention"]
    assert len(attention) == 1 and attention[0].domain == fusion.MS_DOMAIN
    attrs = {a.name: helper.get_attribute_value(a) for a in attention[0].attribute}
    assert attrs["num_heads"] == 2 and attrs["scale"] == pytest.approx(8 ** -0.5)
    # FAVOR+, Linformer and Keras' own attention keep their softmax / feature-map graphs.
    assert sum(n.op_type == "Softmax" for n in model.graph.node) >= 2


@pytest.mark.parametrize("attention", ["exact", "alternate:exact,favor(num_features=16)"])
def test_attention_and_gelu_fusion_equal_the_unfused_graph(tmp_path, attention):
    raw = _raw_export(tmp_path, attention)
    fused = onnx.load_from_string(raw.SerializeToString())
    counts = fusion.fuse(fused, "all")
    layers = 2
    assert counts["gelu"] == layers
    assert counts["attention"] == (layers if attention == "exact" else 1)
    onnx.checker.check_model(fused)
    ops = [n.op_type for n in fused.graph.node]
    assert "Erf" not in ops and ops.count("Gelu") == layers
    rng = np.random.default_rng(0)
    before, after = _session(raw), _session(fused)
    for batch, length in ((1, 1), (1, 2), (3, 7), (2, 31), (4, 32)):
        feeds = _random_feeds(rng, batch, max(length, 2))
        np.testing.assert_allclose(after.run(None, feeds)[0], before.run(None, feeds)[0],
                                   atol=2e-5, rtol=0)
    # Padded positions change nothing: same logits with extra padding appended.
    feeds = _random_feeds(rng, 2, 12)
    longer = {k: np.pad(v, ((0, 0), (0, 9))) for k, v in feeds.items()}
    np.testing.assert_allclose(after.run(None, longer)[0], after.run(None, feeds)[0], atol=2e-5)


def test_portable_and_none_levels_keep_standard_ops(tmp_path):
    raw = _raw_export(tmp_path, "exact")
    portable = onnx.load_from_string(raw.SerializeToString())
    assert fusion.fuse(portable, "portable") == {"layer_norm": 5, "gelu": 0, "attention": 0}
    assert all(n.domain in ("", "ai.onnx") for n in portable.graph.node)
    untouched = onnx.load_from_string(raw.SerializeToString())
    assert fusion.fuse(untouched, "none") == {"layer_norm": 0, "gelu": 0, "attention": 0}
    assert untouched == raw
    with pytest.raises(ValueError, match="fusion level must be one of"):
        fusion.fuse(untouched, "fast")


def test_all_padding_row_stays_finite(tmp_path):
    # The documented difference: no real token at all (never produced by the tokenizer).
    raw = _raw_export(tmp_path, "exact")
    fusion.fuse(raw, "all")
    feeds = {"token_ids": np.zeros((2, 5), np.int32), "padding_mask": np.zeros((2, 5), np.int32)}
    feeds["padding_mask"][1, :2] = 1
    assert np.isfinite(_session(raw).run(None, feeds)[0]).all()


def test_wrong_attention_fusion_fails_the_export(tmp_path, monkeypatch):
    # A fusion that reads the wrong projection must be caught by the export's parity check.
    original = fusion._attention_nodes

    def wrong_values(g, match, tag):
        match["v"] = dict(match["v"], weight=match["k"]["weight"])
        return original(g, match, tag)

    monkeypatch.setattr(fusion, "_attention_nodes", wrong_values)
    texts, labels = imdb()
    with pytest.raises(to_onnx.ParityError, match="fp32 max"):
        to_onnx.export_onnx(tiny_classifier("exact"), tmp_path, texts, labels=labels)
    assert not (tmp_path / "model.onnx").exists()
    report = to_onnx.export_onnx(tiny_classifier("exact"), tmp_path / "portable", texts,
                                 labels=labels, fusion="portable")
    assert report["ok"] and report["fusion"]["fused"]["attention"] == 0


def _self_attention_graph(rng, heads=2, size=3, shared_scores=False):
    """Exact masked self-attention in the layout tf2onnx writes for keras_effattn."""
    width = heads * size
    n = helper.make_node
    consts = {
        "axes23": np.array([2, 3], np.int64), "flat": np.array([-1, width], np.int64),
        "bt": np.array([0, 1], np.int64), "heads_size": np.array([heads, size], np.int64),
        "one": np.array([1], np.int64),
        "axis4": np.array([4], np.int64), "axis1": np.array([1], np.int64),
        "scale": np.array(size ** -0.5, np.float32), "fill": np.array(-1e30, np.float32),
        "zero": np.array(0.0, np.float32), "izero": np.array(0, np.int32),
        "rows": np.array([-1, width], np.int64),
    }
    for name in "qkv":
        consts[f"w{name}"] = rng.normal(size=(width, width)).astype(np.float32)
        consts[f"b{name}"] = rng.normal(size=(heads, size)).astype(np.float32)
    consts["wo"] = rng.normal(size=(width, width)).astype(np.float32)
    nodes = [
        n("Unsqueeze", ["x", "axes23"], ["x5"]),
        n("Reshape", ["x5", "flat"], ["x2d"]),
        n("Shape", ["x5"], ["x5_shape"]),
        n("Gather", ["x5_shape", "bt"], ["b_t"], axis=0),
        n("Concat", ["b_t", "heads_size", "one"], ["heads_shape"], axis=0),
        n("Unsqueeze", ["mask", "axis1"], ["m3"]),
        n("Equal", ["m3", "izero"], ["pad"]),
        n("Not", ["pad"], ["keep3"]),
        n("Unsqueeze", ["keep3", "axis1"], ["keep"]),
        n("Cast", ["keep"], ["keepf"], to=onnx.TensorProto.FLOAT),
        n("Not", ["keep"], ["drop"]),
        n("Cast", ["drop"], ["dropf"], to=onnx.TensorProto.FLOAT),
        n("Mul", ["fill", "dropf"], ["fillv"]),
        n("Mul", ["zero", "dropf"], ["zerov"]),
    ]
    for name in "qkv":
        nodes += [
            n("Gemm", ["x2d", f"w{name}"], [f"{name}2d"], transB=1),
            n("Reshape", [f"{name}2d", "heads_shape"], [f"{name}5"]),
            n("Squeeze", [f"{name}5", "axis4"], [f"{name}s"]),
            n("Add", [f"{name}s", f"b{name}"], [f"{name}4"]),
        ]
    nodes += [
        n("Mul", ["q4", "scale"], ["q_scaled"]),
        n("Transpose", ["q_scaled"], ["qt"], perm=[0, 2, 1, 3]),
        n("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
        n("MatMul", ["qt", "kt"], ["scores"]),
        n("Mul", ["keepf", "scores"], ["kept"]),
        n("Add", ["kept", "fillv"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
        n("Mul", ["keepf", "probs"], ["probs_kept"]),
        n("Add", ["probs_kept", "zerov"], ["probs_final"]),
        n("MatMul", ["probs_final", "vt"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "rows"], ["ctx_rows"]),
        n("MatMul", ["ctx_rows", "wo"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, width])]
    if shared_scores:  # the raw scores are also a graph output: fusing would lose them
        outputs.append(helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, None, width]),
         helper.make_tensor_value_info("mask", onnx.TensorProto.INT32, [None, None])],
        outputs, [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), consts


def _numpy_attention(x, mask, c, heads, size):
    """The oracle: naive masked softmax attention in NumPy."""
    def split(name):
        return (x @ c[f"w{name}"].T).reshape(*x.shape[:2], heads, size) + c[f"b{name}"]
    q, k, v = split("q"), split("k"), split("v")
    scores = np.einsum("btnh,bsnh->bnts", q, k) * size ** -0.5
    scores = np.where(mask[:, None, None, :] != 0, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = np.einsum("bnts,bsnh->btnh", probs, v).reshape(-1, heads * size)
    return ctx @ c["wo"]


def test_attention_fusion_on_a_hand_built_graph_matches_numpy():
    rng = np.random.default_rng(3)
    model, consts = _self_attention_graph(rng)
    x = rng.normal(size=(3, 7, 6)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6], np.int32)
    expected = _numpy_attention(x.astype(np.float64), mask, consts, 2, 3)
    np.testing.assert_allclose(_session(model).run(None, {"x": x, "mask": mask})[0], expected,
                               atol=1e-4)
    assert fusion.fuse_attention(model) == 1
    ops = [node.op_type for node in model.graph.node]
    assert "Attention" in ops and "Softmax" not in ops and ops.count("MatMul") == 1
    np.testing.assert_allclose(_session(model).run(None, {"x": x, "mask": mask})[0], expected,
                               atol=1e-4)


def test_attention_fusion_leaves_shared_intermediates_alone():
    model, _ = _self_attention_graph(np.random.default_rng(4), shared_scores=True)
    assert fusion.fuse_attention(model) == 0
    assert "Attention" not in [node.op_type for node in model.graph.node]


def test_exported_layer_norms_are_fused_and_exact():
    folder, _, report = exported(ALL_KINDS)
    # The strict fp32 parity check (tokenizer, batch/length sweep) ran on the fused file.
    assert report["ok"] and report["verification"]["fp32"]["max_abs_diff"] <= 1e-4
    model = onnx.load(str(folder / "model.onnx"))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("LayerNormalization") == 2 * 4 + 1  # two per layer + embeddings
    assert "GlobalAveragePool" not in ops
    assert fusion.fuse_layer_norm(model) == 0  # nothing left to fuse


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
    assert fusion.fuse_layer_norm(model) == 1
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
    assert fusion.fuse_layer_norm(shared) == 0
    assert len(shared.graph.node) == 13
    with pytest.raises(ValueError, match="opset >= 17"):
        fusion.fuse_layer_norm(_decomposed_layer_norm_graph(rng, False, opset=16))

