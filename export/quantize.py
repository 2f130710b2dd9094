"""Graph optimisation, dynamic int8 quantisation and fp16 conversion of an exported classifier.

All three take an ONNX file and write another; none needs TensorFlow.

- `optimize_graph`: onnxruntime's offline graph optimisation at the *basic* level (constant
  folding, redundant-node elimination, common-subexpression elimination), then `fuse_layer_norm`
  (opset >= 17). Only standard ONNX ops come out, so the file stays portable; the fusions of
  the extended/all levels (Add + LayerNormalization -> SkipLayerNormalization, MatMul + Add)
  depend on the machine and are applied by onnxruntime when a session loads.
- `fuse_layer_norm`: Keras' LayerNormalization reaches ONNX as 13 elementwise nodes (mean and
  variance as GlobalAveragePool); they are replaced by one ``LayerNormalization`` node (same
  maths, one pass over the row), which onnxruntime's fused kernels can then build on.
- `quantize_int8`: onnxruntime dynamic quantisation: weights of MatMul (constant right-hand side
  only, so attention's activation-activation products stay float) and of the embedding Gathers
  are stored as int8 with a per-channel scale; activations are quantised on the
  fly. The embedding table is most of a small encoder's bytes, so quantising Gather is what
  brings the file under a third of fp32.
- `convert_fp16`: float16 weights and compute with float32 inputs/outputs kept (for GPUs and
  for halving the file; on CPU onnxruntime inserts casts and is usually slower than fp32).

Example:
```python
optimize_graph("model_raw.onnx", "model.onnx")
quantize_int8("model.onnx", "model_int8.onnx")
```

References:
    onnxruntime, "Quantize ONNX models",
    https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
"""

import os
import tempfile

import onnx

QUANTIZE_MODES = ("int8", "fp16")
LAYER_NORM_OPSET = 17  # first opset with LayerNormalization


def _check_file(path, name):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} {path!r} does not exist; export the model first.")


def optimize_graph(src, dst, fuse=True):
    """Offline basic-level onnxruntime graph optimisation (portable ops only).

    Args:
        src: path of the ONNX model to optimise.
        dst: path to write (may equal `src`).
        fuse: bool, default True. Also apply `fuse_layer_norm` (models at opset >= 17).

    Returns:
        `dst`.
    """
    import onnxruntime as ort

    _check_file(src, "src")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = out
        options.log_severity_level = 3
        ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
        # onnxruntime drops the model's metadata when it writes the optimised graph: keep it.
        original, optimized = onnx.load(src), onnx.load(out)
        if fuse and _opset(optimized) >= LAYER_NORM_OPSET:
            fuse_layer_norm(optimized)
        del optimized.metadata_props[:]
        optimized.metadata_props.extend(original.metadata_props)
        onnx.save(optimized, out)
        os.replace(out, dst)
    return dst


def quantize_int8(src, dst, per_channel=True, quantize_embeddings=True):
    """Dynamic int8 quantisation with onnxruntime (weights int8, activations uint8 on the fly).

    Args:
        src: path of the float32 ONNX model.
        dst: path to write.
        per_channel: bool, default True. One scale per output channel of each weight (on a
            briefly fine-tuned MiniLM it halves the logit error of per-tensor scales: label
            agreement 98.8% instead of 96.9% on 160 IMDB reviews, same file size).
        quantize_embeddings: bool, default True. Also store the embedding tables (Gather
            weights) as int8.

    Returns:
        `dst`.
    """
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    _check_file(src, "src")
    op_types = ["MatMul", "Gather"] if quantize_embeddings else ["MatMul"]
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as tmp:
        unfused = os.path.join(tmp, "unfused.onnx")
        prepared = os.path.join(tmp, "prepared.onnx")
        out = os.path.join(tmp, "quantized.onnx")
        # tf2onnx writes the attention projections as Gemm, which dynamic quantisation skips;
        # as MatMul + Add they are quantised like the feed-forward layers.
        model = onnx.load(src)
        gemm_to_matmul(model)
        onnx.save(model, unfused)
        # ONNX shape inference only: onnxruntime's symbolic shape inference does not finish on
        # tf2onnx graphs and then dumps `sym_shape_infer_temp.onnx` into the working directory.
        quant_pre_process(unfused, prepared, skip_optimization=True, skip_symbolic_shape=True)
        quantize_dynamic(
            prepared,
            out,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=op_types,
            per_channel=per_channel,
            extra_options={"MatMulConstBOnly": True},
        )
        _copy_metadata(src, out)
        os.replace(out, dst)
    return dst


def gemm_to_matmul(model):
    """Rewrites ``Gemm(A, B, C)`` with a constant B into ``MatMul(A, B') + C``, in place.

    Exact for alpha = 1, beta = 1 (or no C) and transA = 0 (what tf2onnx emits for dense
    layers); B' is B transposed when transB = 1. Other Gemms are left alone.

    Args:
        model: an `onnx.ModelProto`.

    Returns:
        The number of Gemm nodes rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if (
            node.op_type != "Gemm"
            or node.domain not in ("", "ai.onnx")
            or node.input[1] not in initializers
            or attributes.get("transA", 0) != 0
            or attributes.get("alpha", 1.0) != 1.0
            or (has_bias and attributes.get("beta", 1.0) != 1.0)
        ):
            nodes.append(node)
            continue
        weight_name = node.input[1]
        if attributes.get("transB", 0):
            weight = numpy_helper.to_array(initializers[weight_name]).T.copy()
            weight_name = f"{node.input[1]}_transposed_{rewritten}"
            graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(
            helper.make_node("MatMul", [node.input[0], weight_name], [product],
                             name=f"{node.name}_matmul")
        )
        if has_bias:
            nodes.append(
                helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                 name=f"{node.name}_bias")
            )
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return rewritten


def fuse_layer_norm(model):
    """Replaces Keras' decomposed LayerNormalization (last axis) by ONNX ``LayerNormalization``.

    Matches, for a rank-3 input x [B, T, C], constant eps, gamma and beta of C values, the graph
    tf2onnx writes for Keras' ``LayerNormalization``::

        mean = GlobalAveragePool(x); var = GlobalAveragePool((x - mean) * (x - mean))
        g = Reciprocal(Sqrt(var + eps)) * gamma
        y = x * g + (-mean * g + beta)

    which is ``(x - mean) / sqrt(var + eps) * gamma + beta``; intermediate tensors used
    elsewhere, other ranks or non-constant parameters leave the pattern alone. In place.

    Args:
        model: an `onnx.ModelProto` (opset >= 17).

    Returns:
        The number of layer norms fused.

    Raises:
        ValueError: the model's opset is below 17.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    if _opset(model) < LAYER_NORM_OPSET:
        raise ValueError(
            f"fuse_layer_norm needs opset >= {LAYER_NORM_OPSET} (LayerNormalization), the model "
            f"has opset {_opset(model)}; export with --opset {LAYER_NORM_OPSET} or skip fusion."
        )
    graph = model.graph
    ranks = _ranks(model)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):  # a node reading a tensor twice counts once
            consumers.setdefault(name, []).append(node)
    graph_outputs = {output.name for output in graph.output}

    def only(name, op_type):
        """The single consumer of `name` if it has op `op_type` and `name` is internal."""
        users = consumers.get(name, [])
        if name in graph_outputs or len(users) != 1 or users[0].op_type != op_type:
            return None
        return users[0]

    def other(node, name):
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    removed, fused = set(), []
    for mean_node in list(graph.node):
        if mean_node.op_type != "GlobalAveragePool" or id(mean_node) in removed:
            continue
        x, mean = mean_node.input[0], mean_node.output[0]
        if ranks.get(x) != 3 or mean in graph_outputs:
            continue
        users = consumers.get(mean, [])
        sub = [n for n in users if n.op_type == "Sub" and list(n.input) == [x, mean]]
        neg = [n for n in users if n.op_type == "Neg"]
        if len(users) != 2 or len(sub) != 1 or len(neg) != 1:
            continue
        sub, neg = sub[0], neg[0]
        square = only(sub.output[0], "Mul")
        if square is None or list(square.input) != [sub.output[0]] * 2:
            continue
        chain = [square]  # variance, + eps, sqrt, reciprocal, * gamma: each the only consumer
        for op_type in ("GlobalAveragePool", "Add", "Sqrt", "Reciprocal", "Mul"):
            following = only(chain[-1].output[0], op_type)
            if following is None:
                break
            chain.append(following)
        if len(chain) != 6:
            continue
        var_node, add_eps, sqrt, reciprocal, scale_mul = chain[1:]
        eps_name = other(add_eps, var_node.output[0])
        gamma_name = other(scale_mul, reciprocal.output[0])
        if eps_name not in constants or constants[eps_name].size != 1 \
                or gamma_name not in constants:
            continue
        g = scale_mul.output[0]
        g_users = consumers.get(g, [])
        neg_mul = only(neg.output[0], "Mul")
        if g in graph_outputs or len(g_users) != 2 or neg_mul is None or neg_mul not in g_users:
            continue
        x_mul = [n for n in g_users if n is not neg_mul and n.op_type == "Mul"
                 and sorted(n.input) == sorted([x, g])]
        add_beta = only(neg_mul.output[0], "Add")
        beta_name = None if add_beta is None else other(add_beta, neg_mul.output[0])
        if not x_mul or beta_name not in constants:
            continue
        x_mul = x_mul[0]
        final = only(x_mul.output[0], "Add")
        if final is None or sorted(final.input) != sorted([x_mul.output[0], add_beta.output[0]]):
            continue
        if add_beta.output[0] in graph_outputs or len(consumers[add_beta.output[0]]) != 1:
            continue
        gamma, beta = constants[gamma_name], constants[beta_name]
        width = gamma.shape[-1] if gamma.ndim else 0
        if (width < 1 or gamma.size != width or beta.size not in (1, width)
                or gamma.dtype != np.float32 or beta.dtype != np.float32):
            continue
        tag = f"fused_layer_norm_{len(fused)}"
        graph.initializer.extend([
            numpy_helper.from_array(gamma.reshape(width), f"{tag}_gamma"),
            numpy_helper.from_array(np.broadcast_to(beta.reshape(-1), (width,)).copy(),
                                    f"{tag}_beta"),
        ])
        fused.append((final, helper.make_node(
            "LayerNormalization", [x, f"{tag}_gamma", f"{tag}_beta"], [final.output[0]],
            name=tag, axis=-1, epsilon=float(constants[eps_name].reshape(()))),
        ))
        removed.update(id(n) for n in (mean_node, sub, square, var_node, add_eps, sqrt,
                                        reciprocal, scale_mul, neg, neg_mul, add_beta, x_mul))
    replacement = {id(final): node for final, node in fused}
    nodes = [replacement.get(id(n), n) for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return len(fused)


def _opset(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _ranks(model):
    """Tensor name -> rank from ONNX shape inference (inputs, outputs and intermediates)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    graph = inferred.graph
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.type.tensor_type.HasField("shape"):
            ranks[info.name] = len(info.type.tensor_type.shape.dim)
    return ranks


def convert_fp16(src, dst):
    """float16 weights and compute; float32 inputs/outputs are kept so callers do not change.

    Args:
        src: path of the float32 ONNX model.
        dst: path to write.

    Returns:
        `dst`.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _check_file(src, "src")
    model = onnx.load(src)
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as tmp:
        out = os.path.join(tmp, "fp16.onnx")
        onnx.save(half, out)
        _copy_metadata(src, out)
        os.replace(out, dst)
    return dst


def quantize(src, dst, mode):
    """Dispatches to `quantize_int8` or `convert_fp16` by `mode` (``"int8"`` or ``"fp16"``)."""
    if mode == "int8":
        return quantize_int8(src, dst)
    if mode == "fp16":
        return convert_fp16(src, dst)
    raise ValueError(f"quantize must be one of {QUANTIZE_MODES} (or None for fp32), got {mode!r}.")


def _copy_metadata(src, dst):
    original, converted = onnx.load(src), onnx.load(dst)
    del converted.metadata_props[:]
    converted.metadata_props.extend(original.metadata_props)
    onnx.save(converted, dst)
