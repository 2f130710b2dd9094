"""Graph optimisation, dynamic int8 quantisation and fp16 conversion of an exported classifier.

All three take an ONNX file and write another; none needs TensorFlow.

- `optimize_graph`: onnxruntime's offline graph optimisation at the *basic* level (constant
  folding, redundant-node elimination, common-subexpression elimination), then the pattern
  fusions of `export.fusion` (layer norm, GELU, self-attention). The fusions of onnxruntime's
  extended/all levels (Add + LayerNormalization -> SkipLayerNormalization, bias + GELU) depend
  on the machine and are applied by onnxruntime when a session loads.
- `quantize_int8`: onnxruntime int8 quantisation: weights of MatMul (constant right-hand side
  only, so attention's activation-activation products stay float), of the fused ``Attention``
  nodes (which become ``QAttention``) and of the embedding Gathers are stored as 8-bit integers
  with a per-channel scale; activations are quantised on the fly, per tensor (dynamic
  quantisation) or, for the MatMuls turned into ``MatMulNBits``, per token and block.
  `INT8_RECIPES` names the recipes measured; the export uses ``INT8_RECIPES["default"]``
  (`DEFAULT_INT8_RECIPE`). The embedding table is most of a small encoder's bytes, so
  quantising Gather is what brings the file under a third of fp32.
- `convert_fp16`: float16 weights and compute with float32 inputs/outputs kept (for GPUs and
  for halving the file; on CPU onnxruntime inserts casts and is usually slower than fp32).

Example:
```python
optimize_graph("model_raw.onnx", "model.onnx")
quantize_int8("model.onnx", "model_int8.onnx", **INT8_RECIPES["default"])
```

References:
    onnxruntime, "Quantize ONNX models",
    https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
"""

import os
import tempfile

import onnx

from export import fusion as fusion_lib

QUANTIZE_MODES = ("int8", "fp16")


def _check_file(path, name):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} {path!r} does not exist; export the model first.")


def optimize_graph(src, dst, fusion="all"):
    """Offline basic-level onnxruntime graph optimisation, then `export.fusion` passes.

    Args:
        src: path of the ONNX model to optimise.
        dst: path to write (may equal `src`).
        fusion: ``"all"`` (default: layer norm, GELU and attention; the fused model needs
            onnxruntime), ``"portable"`` (layer norm only: standard ONNX ops) or ``"none"``.

    Returns:
        dict: the number of patterns fused per kind (see `export.fusion.fuse`).
    """
    import onnxruntime as ort

    _check_file(src, "src")
    if fusion not in fusion_lib.FUSION_LEVELS:
        raise ValueError(
            f"fusion must be one of {fusion_lib.FUSION_LEVELS}, got {fusion!r}."
        )
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = out
        options.log_severity_level = 3
        ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
        # onnxruntime drops the model's metadata when it writes the optimised graph: keep it.
        original, optimized = onnx.load(src), onnx.load(out)
        counts = fusion_lib.fuse(optimized, fusion)
        del optimized.metadata_props[:]
        optimized.metadata_props.extend(original.metadata_props)
        onnx.save(optimized, out)
        os.replace(out, dst)
    return counts


INT8_WEIGHT_TYPES = ("int8", "uint8")
BLOCKWISE_SCOPES = ("all", "ffn_output")


def quantize_int8(
    src,
    dst,
    per_channel=True,
    quantize_embeddings=True,
    quantize_attention=True,
    reduce_range=False,
    weight_type="uint8",
    float_top_layers=0,
    float_ffn_output=None,
    matmul_block_size=None,
    blockwise="all",
    blockwise_layers=None,
):
    """int8 quantisation with onnxruntime: 8-bit weights, activations quantised on the fly
    (per tensor by dynamic quantisation; per token for the MatMuls made ``MatMulNBits``).

    Args:
        src: path of the float32 ONNX model.
        dst: path to write.
        per_channel: bool, default True. One scale per output channel of each weight (on a
            briefly fine-tuned MiniLM it halves the logit error of per-tensor scales: label
            agreement 98.8% instead of 96.9% on 160 IMDB reviews, same file size).
        quantize_embeddings: bool, default True. Also store the embedding tables (Gather
            weights) as int8.
        quantize_attention: bool, default True. Turn the fused ``Attention`` nodes into
            ``QAttention`` (int8 Q/K/V projection); False keeps them float.
        reduce_range: bool, default False. 7-bit weights. x86 CPUs without VNNI compute
            uint8 x int8 products with ``vpmaddubsw``, whose int16 pair sums can saturate;
            7-bit weights cannot, so results no longer depend on the instruction set.
        weight_type: ``"uint8"`` (default: uint8 x uint8 kernels, exact integer arithmetic
            on every x86 instruction set, so int8 results do not depend on the CPU) or
            ``"int8"`` (uint8 x int8 kernels: ``vpmaddubsw`` on AVX2, whose int16 pair sums can
            saturate, VNNI's ``vpdpbusd`` elsewhere).
        float_top_layers: int, default 0. Keep this many of the top encoder layers and the
            classifier head in float32 (`top_layer_nodes`).
        float_ffn_output: bool or None (default: True without `matmul_block_size`, False
            with it). Keep every feed-forward output projection (the MatMul reading the GELU
            output, whose activations carry BERT's outliers and whose dynamic per-tensor
            activation scale is the coarsest) in float32 (`ffn_output_nodes`). True with
            ``blockwise="ffn_output"`` is an error: that option quantises exactly those
            projections.
        matmul_block_size: None (default) or an int: quantise MatMuls into onnxruntime's
            ``MatMulNBits`` instead (which ones: `blockwise`): symmetric 8-bit weights with one
            scale per block of this many input channels, and activations quantised to int8 on
            the fly per row (token) and block (``accuracy_level`` 4), so one token's outliers
            no longer coarsen every other token's scale, as the per-tensor scale of dynamic
            quantisation does. The feed-forward output projections are then quantised too,
            unless `float_ffn_output` is True. Needs onnxruntime >= 1.22 (8-bit ``MatMulNBits``
            on CPU) and the ``onnx-ir`` package. Slower than dynamic int8 on x86 for these
            shapes (BUILD_NOTES, "Per-token int8").
        blockwise: ``"all"`` (default: every MatMul not kept float) or ``"ffn_output"`` (only
            the feed-forward output projections, `ffn_output_nodes`, whose inputs carry the
            largest per-token outliers; the other MatMuls get dynamic int8). Used with
            `matmul_block_size`.
        blockwise_layers: None (default: every layer) or an int >= 1: with
            ``blockwise="ffn_output"``, only the feed-forward outputs of the first this many
            encoder layers (graph order) run per token; later layers' get dynamic int8. The
            outliers are largest in the lower layers (BUILD_NOTES, "Per-token int8").

    These defaults (`INT8_RECIPES["uint8_float_ffn_output"]`) were the export's default
    recipe until 2026-12-07, picked on the main job's MiniLM classifier on an AVX2 CPU (1,000
    IMDB test reviews, BUILD_NOTES): label agreement with Keras 99.7 % (3 flips) vs 98.8 % (12)
    for per-channel uint8 x int8 everywhere (`INT8_RECIPES["compact"]`). The export's default
    is now `DEFAULT_INT8_RECIPE` (per-token int8 for the feed-forward outputs).

    Returns:
        `dst`.
    """
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    _check_file(src, "src")
    if weight_type not in INT8_WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {INT8_WEIGHT_TYPES}, got {weight_type!r}.")
    if isinstance(float_top_layers, bool) or not isinstance(float_top_layers, int) or (
        float_top_layers < 0
    ):
        raise ValueError(f"float_top_layers must be an int >= 0, got {float_top_layers!r}.")
    if matmul_block_size is not None:
        _check_block_size(matmul_block_size)
    if blockwise not in BLOCKWISE_SCOPES:
        raise ValueError(f"blockwise must be one of {BLOCKWISE_SCOPES}, got {blockwise!r}.")
    if blockwise_layers is not None and (
            isinstance(blockwise_layers, bool) or not isinstance(blockwise_layers, int)
            or blockwise_layers < 1 or matmul_block_size is None or blockwise != "ffn_output"):
        raise ValueError(
            f"blockwise_layers={blockwise_layers!r}: give an int >= 1, with matmul_block_size "
            "and blockwise='ffn_output' (it picks how many layers' feed-forward outputs run "
            "per token).")
    if float_ffn_output is None:
        float_ffn_output = matmul_block_size is None
    elif float_ffn_output and matmul_block_size is not None and blockwise == "ffn_output":
        raise ValueError(
            "float_ffn_output=True keeps the feed-forward output projections float, but "
            "blockwise='ffn_output' quantises exactly those per token; pass one of them "
            "(blockwise='all' with float_ffn_output=True quantises every other MatMul per token)."
        )
    every_matmul_blockwise = matmul_block_size is not None and blockwise == "all"
    op_types = [] if every_matmul_blockwise else ["MatMul"]
    op_types += ["Attention"] if quantize_attention else []
    op_types += ["Gather"] if quantize_embeddings else []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as tmp:
        unfused = os.path.join(tmp, "unfused.onnx")
        prepared = os.path.join(tmp, "prepared.onnx")
        out = os.path.join(tmp, "quantized.onnx")
        # tf2onnx writes the attention projections as Gemm, which dynamic quantisation skips;
        # as MatMul + Add they are quantised like the feed-forward layers.
        model = onnx.load(src)
        gemm_to_matmul(model)
        excluded = top_layer_nodes(model, float_top_layers) if float_top_layers else []
        if float_ffn_output:
            excluded += ffn_output_nodes(model)
        if matmul_block_size is not None:
            chosen = None if blockwise == "all" else ffn_output_nodes(model)[:blockwise_layers]
            model = blockwise_matmuls(model, matmul_block_size, excluded, only=chosen)
        onnx.save(model, unfused)
        # ONNX shape inference only: onnxruntime's symbolic shape inference does not finish on
        # tf2onnx graphs and then dumps `sym_shape_infer_temp.onnx` into the working directory.
        quant_pre_process(unfused, prepared, skip_optimization=True, skip_symbolic_shape=True)
        quantize_dynamic(
            prepared,
            out,
            weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
            op_types_to_quantize=op_types,
            per_channel=per_channel,
            reduce_range=reduce_range,
            nodes_to_exclude=excluded,
            # ONNX shape inference stops at contrib ops (Attention, Gelu): tensors after
            # them have no inferred type, and all of this model's activations are float32.
            extra_options={"MatMulConstBOnly": True,
                           "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        _copy_metadata(src, out)
        os.replace(out, dst)
    return dst


MATMUL_BLOCK_SIZES = (16, 32, 64, 128, 256)  # what onnxruntime's 8-bit MatMulNBits packs


def _check_block_size(block_size):
    if (isinstance(block_size, bool) or not isinstance(block_size, int)
            or block_size not in MATMUL_BLOCK_SIZES):
        raise ValueError(
            f"matmul_block_size must be one of {', '.join(map(str, MATMUL_BLOCK_SIZES))} "
            f"(the blocks onnxruntime's 8-bit MatMulNBits takes), got {block_size!r}."
        )


def blockwise_matmuls(model, block_size, excluded=(), only=None):
    """The model with every MatMul of a constant weight (but those named in `excluded`; with
    `only`, just those named there) turned into onnxruntime's ``MatMulNBits``: symmetric 8-bit
    weights, one scale per block of `block_size` input channels (16, 32, 64, 128 or 256), int8
    compute with activations quantised per row and block (``accuracy_level`` 4). Returns a new
    `onnx.ModelProto`. (8-bit ``MatMulNBits`` on CPU needs onnxruntime >= 1.22 and its
    quantizer ``onnx-ir``; both are install requirements.)
    """
    _check_block_size(block_size)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    skipped = set(excluded)
    if only is not None:
        # (The quantizer's nodes_to_include does not restrict it; exclude the rest instead.)
        chosen = set(only)
        skipped |= {node.name for node in model.graph.node
                    if node.op_type == "MatMul" and node.name not in chosen}
    quantizer = MatMulNBitsQuantizer(
        model, bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4,
        nodes_to_exclude=sorted(skipped), op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    return quantizer.model.model


# Named int8 recipes (keyword arguments of `quantize_int8` over its defaults): `export.to_onnx
# --int8_recipe` picks one ("default" unless told), `export.benchmark --int8_recipes` compares.
#
# "default" (since 2026-12-07): per-token int8 for the feed-forward output projections, whose
# inputs carry the outliers of a few tokens (MatMulNBits: 8-bit weights in blocks of 128 input
# channels, activations quantised per token and block), dynamic int8 with 7-bit int8 weights
# elsewhere (VNNI's u8 x s8 kernel; 7 bits cannot saturate AVX2's int16 pair sums, so the same
# integers on both). On the main job's model (Zen 4, BUILD_NOTES "Per-token int8"): 99.5 %
# label agreement at 0.97-1.00x optimum int8's time, where the previous default
# (`uint8_float_ffn_output`) gave 99.3 % at 1.5-1.6x.
DEFAULT_INT8_RECIPE = {"weight_type": "int8", "reduce_range": True, "matmul_block_size": 128,
                       "blockwise": "ffn_output"}
INT8_RECIPES = {
    "default": DEFAULT_INT8_RECIPE,
    # The default from 2026-12-03 to 2026-12-07 (`quantize_int8`'s own defaults): uint8
    # weights (exact integer arithmetic on every x86 CPU), feed-forward outputs kept float.
    "uint8_float_ffn_output": {},
    # The smallest file: every weight int8 (the default before 2026-12-03).
    "compact": {"weight_type": "int8", "float_ffn_output": False},
    "int8_weights": {"weight_type": "int8"},
    "quantized_ffn_output": {"float_ffn_output": False},
    "per_tensor": {"per_channel": False},
    "reduce_range": {"reduce_range": True},
    "float_attention": {"quantize_attention": False},
    "float_embeddings": {"quantize_embeddings": False},
    "float_top_layer": {"float_top_layers": 1},
    "float_top_2_layers": {"float_top_layers": 2},
    # Candidates for VNNI CPUs, where int8 weights run VNNI's u8 x s8 instruction: compact with
    # the top layer (and head) float, and compact with 7-bit weights (no int16 saturation on
    # AVX2, so the same labels on every x86 instruction set).
    "compact_float_top_layer": {"weight_type": "int8", "float_ffn_output": False,
                                "float_top_layers": 1},
    "compact_reduce_range": {"weight_type": "int8", "float_ffn_output": False,
                             "reduce_range": True},
    # Per-token int8 for every MatMul (blocks of 32): the most accurate, and the slowest
    # (MatMulNBits ran one of these matmuls 1.4-2.8x slower than dynamic int8 on Zen 4).
    "blockwise": {"weight_type": "int8", "matmul_block_size": 32},
    # The default with blocks of 256 input channels in the feed-forward outputs: MatMulNBits
    # ran 9-17 % faster than at 128 on one such matmul (Zen 4), the model 1-5 % faster, but
    # it kept 99.3 % of Keras' labels against the default's 99.5 % (BUILD_NOTES).
    "ffn_output_block_256": {**DEFAULT_INT8_RECIPE, "matmul_block_size": 256},
    # The default with per-token feed-forward outputs in layers 0-2 only (their activations
    # carry the largest outliers): half the MatMulNBits work, 6-8 % faster than the default,
    # but 99.2 % of Keras' labels against its 99.5 % (Zen 4, BUILD_NOTES).
    "ffn_output_first_3": {**DEFAULT_INT8_RECIPE, "blockwise_layers": 3},
}


def ffn_output_nodes(model):
    """Names of the MatMuls whose input is a GELU output (through reshapes/transposes): the
    feed-forward output projections."""
    producer = {out: node for node in model.graph.node for out in node.output}
    passthrough = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Cast", "Identity")
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        source = producer.get(node.input[0])
        while source is not None and source.op_type in passthrough:
            source = producer.get(source.input[0])
        if source is not None and (source.op_type == "Gelu" or "gelu" in source.name.lower()):
            names.append(node.name)
    return names


def top_layer_nodes(model, count):
    """Names of the weight nodes (MatMul, Gemm, Attention) of the top `count` encoder layers and
    of everything after them (pooling and head), found by graph order.

    A post-LN encoder layer ends with two layer norms (after attention and after the
    feed-forward block) and the embeddings with one, so the nodes after the layer norm number
    ``total - 2 * count`` belong to the top `count` layers. Nodes are in topological order in
    every ONNX file onnxruntime and tf2onnx write.

    Raises:
        ValueError: the graph does not have ``1 + 2 * layers`` layer norms, or `count` is more
            than its layers.
    """
    norms = ("LayerNormalization", "SkipLayerNormalization")
    positions = [i for i, node in enumerate(model.graph.node) if node.op_type in norms]
    if len(positions) % 2 != 1:
        raise ValueError(
            f"expected 1 + 2 * layers layer norms in an encoder graph, found {len(positions)}; "
            "float_top_layers works on the exported DistilBERT/BERT classifiers."
        )
    layers = (len(positions) - 1) // 2
    if count > layers:
        raise ValueError(f"float_top_layers={count} but the model has {layers} layers.")
    start = positions[len(positions) - 1 - 2 * count]
    weights = ("MatMul", "Gemm", "Attention")
    return [node.name for node in model.graph.node[start + 1 :] if node.op_type in weights]


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


def quantize(src, dst, mode, **int8_options):
    """Dispatches to `quantize_int8` (with `int8_options`) or `convert_fp16` by `mode`
    (``"int8"`` or ``"fp16"``)."""
    if mode == "int8":
        return quantize_int8(src, dst, **int8_options)
    if mode == "fp16":
        return convert_fp16(src, dst)
    raise ValueError(f"quantize must be one of {QUANTIZE_MODES} (or None for fp32), got {mode!r}.")


def _copy_metadata(src, dst):
    original, converted = onnx.load(src), onnx.load(dst)
    del converted.metadata_props[:]
    converted.metadata_props.extend(original.metadata_props)
    onnx.save(converted, dst)
