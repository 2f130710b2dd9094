"""Graph fusions for exported encoders: layer norm, GELU and self-attention.

tf2onnx writes a Keras encoder as many small nodes: a LayerNormalization is 13 elementwise
nodes, an exact GELU six, and one self-attention block about forty (three projections with
their reshapes and transposes, the score product, the padding mask as four passes of
``Mul``/``Add`` arithmetic over the whole [B, N, T, S] score tensor, softmax, the weighted sum
and the reshape back). onnxruntime's own transformer optimiser recognises the graphs PyTorch
exports, not these. The passes here match the graphs tf2onnx writes for keras_effattn's
layers and replace each pattern by one fused node with the same maths:

- `fuse_layer_norm`: ONNX ``LayerNormalization`` (standard op, opset >= 17).
- `fuse_gelu`: ``com.microsoft.Gelu`` (exact erf GELU; onnxruntime then folds the bias add in
  front of it into ``BiasGelu`` when a session loads).
- `fuse_attention`: ``com.microsoft.Attention``: one [D, 3D] projection GEMM for Q, K and V, the
  padding mask as a [B, S] key mask, softmax and weighted sum in one kernel. Dynamic int8
  quantisation turns it into ``QAttention`` (int8 projection weights).

The ``com.microsoft`` ops are onnxruntime contrib ops: a model with them needs onnxruntime (the
predictor uses it anyway); `export_onnx(..., fuse="portable")` keeps to standard ONNX ops.

Every pass matches conservatively (constants, permutations, single consumers, shapes) and
leaves anything else alone; `export_onnx` then checks the fused model against Keras on real
texts, so a pattern matched wrongly fails the export instead of shipping. One documented
difference: in a sequence whose padding mask is all zeros (no real token at all) Keras'
attention returns zeros while the fused kernel averages the values; the shipped tokenizer
always emits ``[CLS]`` and ``[SEP]``, so an exported classifier never sees such an input.

References:
    onnxruntime contrib operators (Attention, Gelu),
    https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
LAYER_NORM_OPSET = 17  # first opset with LayerNormalization
FUSION_LEVELS = ("all", "portable", "none")
_MASK_FILL_MAX = -1e4  # a masking constant at or below this counts as "minus infinity"


class _Graph:
    """Producers, consumers and constants of a graph, for pattern matching."""

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self.producer, self.consumers = {}, {}
        for node in self.graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in dict.fromkeys(node.input):  # a node reading a tensor twice counts once
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.constants = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value.t)
        self.outputs = {o.name for o in self.graph.output}
        self.inputs = {i.name for i in self.graph.input}
        self.by_id = {id(n): n for n in self.graph.node}
        self.mask_casts = set()

    def node(self, name, op_type):
        """The node producing `name` if it has op `op_type` (default domain), else None."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
            return None
        return node

    def only(self, name, op_type):
        """The single consumer of internal tensor `name` if it has op `op_type`, else None."""
        users = self.consumers.get(name, [])
        if name in self.outputs or len(users) != 1 or users[0].op_type != op_type:
            return None
        return users[0]

    def constant(self, name):
        return self.constants.get(name)

    def scalar(self, name):
        value = self.constants.get(name)
        return None if value is None or value.size != 1 else float(value.reshape(()))

    @staticmethod
    def attrs(node):
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def other_input(self, node, name):
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    def rewrite(self, removed, added):
        """Drops nodes in `removed` (ids), appends `added`, re-sorts, removes dead code."""
        nodes = [n for n in self.graph.node if id(n) not in removed] + list(added)
        del self.graph.node[:]
        self.graph.node.extend(_topological(
            nodes, self.inputs, {i.name for i in self.graph.initializer}))
        _remove_dead(self.model)


def _topological(nodes, graph_inputs, initializers):
    """Nodes sorted so that every input is produced before it is read (stable)."""
    available = set(graph_inputs) | set(initializers) | {""}
    pending, ordered = list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in available})[:5]
            raise ValueError(f"graph rewrite left inputs without a producer: {missing}")
        pending = rest
    return ordered


def _remove_dead(model):
    """Removes nodes whose outputs nobody reads, then unused initializers."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _use_ms_domain(model):
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def opset(model):
    """The model's default-domain opset version."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fuse(model, level="all"):
    """Applies the fusions of `level` in place and returns the counts.

    Args:
        model: an `onnx.ModelProto`.
        level: ``"all"`` (layer norm, GELU, attention; needs onnxruntime to run),
            ``"portable"`` (layer norm only: standard ONNX ops) or ``"none"``.

    Returns:
        dict: number of fused ``layer_norm``, ``gelu`` and ``attention`` patterns.
    """
    if level not in FUSION_LEVELS:
        raise ValueError(f"fusion level must be one of {FUSION_LEVELS}, got {level!r}.")
    counts = {"layer_norm": 0, "gelu": 0, "attention": 0}
    if level == "none":
        return counts
    if opset(model) >= LAYER_NORM_OPSET:
        counts["layer_norm"] = fuse_layer_norm(model)
    if level == "all":  # attention before GELU: shape inference stops at contrib ops
        counts["attention"] = fuse_attention(model)
        counts["gelu"] = fuse_gelu(model)
    return counts


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
    if opset(model) < LAYER_NORM_OPSET:
        raise ValueError(
            f"fuse_layer_norm needs opset >= {LAYER_NORM_OPSET} (LayerNormalization), the model "
            f"has opset {opset(model)}; export with --opset {LAYER_NORM_OPSET} or skip fusion."
        )
    g = _Graph(model)
    ranks = _ranks(model)
    removed, added = set(), []
    for mean_node in list(g.graph.node):
        if mean_node.op_type != "GlobalAveragePool" or id(mean_node) in removed:
            continue
        x, mean = mean_node.input[0], mean_node.output[0]
        if ranks.get(x) != 3 or mean in g.outputs:
            continue
        users = g.consumers.get(mean, [])
        sub = [n for n in users if n.op_type == "Sub" and list(n.input) == [x, mean]]
        neg = [n for n in users if n.op_type == "Neg"]
        if len(users) != 2 or len(sub) != 1 or len(neg) != 1:
            continue
        sub, neg = sub[0], neg[0]
        square = g.only(sub.output[0], "Mul")
        if square is None or list(square.input) != [sub.output[0]] * 2:
            continue
        chain = [square]  # variance, + eps, sqrt, reciprocal, * gamma: each the only consumer
        for op_type in ("GlobalAveragePool", "Add", "Sqrt", "Reciprocal", "Mul"):
            following = g.only(chain[-1].output[0], op_type)
            if following is None:
                break
            chain.append(following)
        if len(chain) != 6:
            continue
        var_node, add_eps, sqrt, reciprocal, scale_mul = chain[1:]
        eps = g.scalar(g.other_input(add_eps, var_node.output[0]))
        gamma = g.constant(g.other_input(scale_mul, reciprocal.output[0]))
        if eps is None or gamma is None:
            continue
        scale = scale_mul.output[0]
        scale_users = g.consumers.get(scale, [])
        neg_mul = g.only(neg.output[0], "Mul")
        if scale in g.outputs or len(scale_users) != 2 or neg_mul is None \
                or neg_mul not in scale_users:
            continue
        x_mul = [n for n in scale_users if n is not neg_mul and n.op_type == "Mul"
                 and sorted(n.input) == sorted([x, scale])]
        add_beta = g.only(neg_mul.output[0], "Add")
        beta = None if add_beta is None else g.constant(
            g.other_input(add_beta, neg_mul.output[0]))
        if not x_mul or beta is None:
            continue
        x_mul = x_mul[0]
        final = g.only(x_mul.output[0], "Add")
        if final is None or sorted(final.input) != sorted([x_mul.output[0], add_beta.output[0]]):
            continue
        if add_beta.output[0] in g.outputs or len(g.consumers[add_beta.output[0]]) != 1:
            continue
        width = gamma.shape[-1] if gamma.ndim else 0
        if (width < 1 or gamma.size != width or beta.size not in (1, width)
                or gamma.dtype != np.float32 or beta.dtype != np.float32):
            continue
        tag = f"fused_layer_norm_{len(added)}"
        g.graph.initializer.extend([
            numpy_helper.from_array(gamma.reshape(width), f"{tag}_gamma"),
            numpy_helper.from_array(np.broadcast_to(beta.reshape(-1), (width,)).copy(),
                                    f"{tag}_beta"),
        ])
        added.append(helper.make_node(
            "LayerNormalization", [x, f"{tag}_gamma", f"{tag}_beta"], [final.output[0]],
            name=tag, axis=-1, epsilon=eps,
        ))
        removed.update(id(n) for n in (mean_node, sub, square, var_node, add_eps, sqrt,
                                        reciprocal, scale_mul, neg, neg_mul, add_beta, x_mul,
                                        final))
    if added:
        g.rewrite(removed, added)
    return len(added)


def fuse_gelu(model):
    """Replaces the exact GELU tf2onnx writes by ``com.microsoft.Gelu``, in place.

    TensorFlow lowers ``gelu(x, approximate=False)`` to ``0.5 * x * erfc(-x / sqrt(2))``;
    keras_effattn's converter writes ``erfc(z)`` as ``1 - erf(z)``, so the graph is::

        y = Mul(Mul(0.5, x), Sub(1, Erf(Mul(Neg(x), 1/sqrt(2)))))

    which equals ``0.5 * x * (1 + erf(x / sqrt(2)))`` (erf is odd), onnxruntime's Gelu.

    Args:
        model: an `onnx.ModelProto`.

    Returns:
        The number of GELUs fused.
    """
    g = _Graph(model)
    removed, added = set(), []
    for erf in list(g.graph.node):
        if erf.op_type != "Erf" or erf.domain not in ("", "ai.onnx"):
            continue
        scaled = g.node(erf.input[0], "Mul")
        if scaled is None:
            continue
        neg = next((g.node(i, "Neg") for i in scaled.input if g.node(i, "Neg")), None)
        if neg is None:
            continue
        factor = g.scalar(g.other_input(scaled, neg.output[0]))
        if factor is None or abs(factor - 2 ** -0.5) > 1e-6:
            continue
        x = neg.input[0]
        sub = g.only(erf.output[0], "Sub")
        if sub is None or list(sub.input)[1] != erf.output[0] or g.scalar(sub.input[0]) != 1.0:
            continue
        final = g.only(sub.output[0], "Mul")
        if final is None:
            continue
        half = g.node(g.other_input(final, sub.output[0]), "Mul")
        if half is None or g.scalar(g.other_input(half, x)) != 0.5 or x not in half.input:
            continue
        if any(g.only(t, op) is None for t, op in (
                (neg.output[0], "Mul"), (scaled.output[0], "Erf"), (half.output[0], "Mul"))):
            continue
        added.append(helper.make_node("Gelu", [x], [final.output[0]],
                                      name=f"fused_gelu_{len(added)}", domain=MS_DOMAIN))
        removed.update(id(n) for n in (neg, scaled, erf, sub, half, final))
    if added:
        _use_ms_domain(model)
        g.rewrite(removed, added)
    return len(added)


def fuse_attention(model):
    """Replaces tf2onnx's self-attention subgraphs by ``com.microsoft.Attention``, in place.

    Matches keras_effattn's exact attention (and Keras' ``MultiHeadAttention`` written the same
    way) as tf2onnx writes it, for self-attention (query = key = value input x [B, T, D]):

        q = (Reshape(x2d @ Wq) + bq) * scale -> [B, N, T, H];  k, v likewise without scale
        s = q @ kᵀ;  optionally masked: s * m + fill * (1 - m), m = (padding_mask != 0)
        p = Softmax(s) (masked: p * m);  ctx = p @ v -> [B, T, N·H] -> 2-D rows for Wo

    with x2d = x reshaped to [B·T, D] and a mask derived from a graph input only by reshaping
    ops, comparisons with zero and logical negation. The fused node computes the same: one
    [D, 3·N·H] projection, scores scaled by ``scale``, padded keys removed, softmax, weighted
    sum, heads merged. FAVOR+, Linformer and chunked attention write other graphs and stay as
    they are.

    Args:
        model: an `onnx.ModelProto`.

    Returns:
        The number of attention blocks fused.
    """
    g = _Graph(model)
    shape_info = _shape_info(model)
    removed, added, count = set(), [], 0
    for softmax in list(g.graph.node):
        if softmax.op_type != "Softmax" or softmax.domain not in ("", "ai.onnx"):
            continue
        match = _match_attention(g, softmax, shape_info)
        if match is None or removed & match["nodes"]:
            continue
        tag = f"fused_attention_{count}"
        nodes = _attention_nodes(g, match, tag)
        if nodes is None:
            continue
        removed |= match["nodes"]
        added += nodes
        count += 1
    if count:
        _use_ms_domain(model)
        g.rewrite(removed, added)
    return count


def _projection(g, head_tensor):
    """Matches ``Add(Squeeze(Reshape(x2d @ W)), b)`` giving [B, T, N, H]; returns its parts.

    A zero bias may have been folded away by the optimiser: then there is no ``Add``.
    """
    add = g.node(head_tensor, "Add")
    if add is None:
        squeeze = g.node(head_tensor, "Squeeze")
        bias = None
    else:
        squeeze = next((g.node(i, "Squeeze") for i in add.input if g.node(i, "Squeeze")), None)
        if squeeze is None:
            return None
        bias = g.constant(g.other_input(add, squeeze.output[0]))
        if bias is None or bias.ndim != 2:
            return None
    if squeeze is None:
        return None
    reshape = g.node(squeeze.input[0], "Reshape")
    if reshape is None:
        return None
    if bias is None:  # heads and head size from the reshape target [B, T, N, H, 1]
        target = g.producer.get(reshape.input[1])
        dims = None if target is None or target.op_type != "Concat" else [
            g.constant(i) for i in target.input[1:]]
        if dims is None or any(d is None for d in dims) or \
                [int(v) for d in dims for v in d.reshape(-1)][-1:] != [1]:
            return None
        heads_size = [int(v) for d in dims for v in d.reshape(-1)][:-1]
        if len(heads_size) != 2:
            return None
        bias = np.zeros(heads_size, np.float32)
    axes = g.constant(squeeze.input[1]) if len(squeeze.input) > 1 else None
    if axes is None or [int(a) for a in axes.reshape(-1)] not in ([4], [-1]):
        return None
    product = g.producer.get(reshape.input[0])
    if product is None or product.domain not in ("", "ai.onnx"):
        return None
    if product.op_type == "Gemm":
        attrs = g.attrs(product)
        if (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                or (len(product.input) > 2 and product.input[2])):
            return None
        weight = g.constant(product.input[1])
        if weight is not None and attrs.get("transB", 0):
            weight = weight.T
    elif product.op_type == "MatMul":
        weight = g.constant(product.input[1])
    else:
        return None
    heads, size = bias.shape
    if weight is None or weight.ndim != 2 or weight.shape[1] != heads * size:
        return None
    steps = [(product.output[0], "Reshape"), (reshape.output[0], "Squeeze")]
    if add is not None:
        steps.append((squeeze.output[0], "Add"))
    if any(g.only(tensor, op_type) is None for tensor, op_type in steps):
        return None
    nodes = {id(product), id(reshape), id(squeeze)} | ({id(add)} if add is not None else set())
    return {"x2d": product.input[0], "weight": weight.astype(np.float32),
            "bias": bias.reshape(-1).astype(np.float32), "heads": heads, "size": size,
            "nodes": nodes}


def _transpose(g, name, perm):
    node = g.node(name, "Transpose")
    if node is None or list(g.attrs(node).get("perm", [])) != perm:
        return None
    return node


def _key_mask(g, fill_add, scores):
    """Matches ``scores * Cast(m) + fill * Cast(Not(m))``; returns (m, nodes) or None."""
    muls = [g.node(i, "Mul") for i in fill_add.input]
    if any(m is None for m in muls):
        return None
    keep_mul = next((m for m in muls if scores in m.input), None)
    fill_mul = next((m for m in muls if m is not keep_mul), None)
    if keep_mul is None or fill_mul is None:
        return None
    keep_cast = g.node(g.other_input(keep_mul, scores), "Cast")
    fill_value = next((g.scalar(i) for i in fill_mul.input if g.scalar(i) is not None), None)
    drop_cast = next((g.node(i, "Cast") for i in fill_mul.input if g.node(i, "Cast")), None)
    if keep_cast is None or drop_cast is None or fill_value is None \
            or fill_value > _MASK_FILL_MAX:
        return None
    negated = g.node(drop_cast.input[0], "Not")
    if negated is None or negated.input[0] != keep_cast.input[0]:
        return None
    # fill_mul is often shared by every layer: dead-code removal drops it once unused.
    return keep_cast.input[0], {id(keep_mul), id(fill_add)}


def _mask_source(g, keep):
    """Follows a boolean keep mask back to a graph input: (input name, keep = input != 0)."""
    flips, name, seen = 0, keep, 0
    while name not in g.inputs and seen < 16:
        seen += 1
        node = g.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "Not":
            flips += 1
        elif node.op_type == "Equal":
            data = [i for i in node.input if g.scalar(i) != 0.0]
            if len(data) != 1 or len(node.input) != 2:
                return None
            flips += 1
            name = data[0]
            continue
        elif node.op_type == "Cast":
            if g.attrs(node).get("to") != onnx.TensorProto.BOOL:
                return None
        elif node.op_type == "Slice":
            starts, ends = g.constant(node.input[1]), g.constant(node.input[2])
            steps = g.constant(node.input[4]) if len(node.input) > 4 and node.input[4] else None
            if starts is None or ends is None or np.any(starts != 0) or (
                    steps is not None and np.any(steps != 1)):
                return None
            if np.any((ends != 1) & (ends < 2 ** 31 - 1)):  # keep whole axes or size-1 ones
                return None
        elif node.op_type not in ("Unsqueeze", "Squeeze"):
            return None
        name = node.input[0]
    if name not in g.inputs:
        return None
    return name, flips % 2 == 0


def _match_attention(g, softmax, shape_info):
    attrs = g.attrs(softmax)
    if attrs.get("axis", -1) not in (-1, 3):
        return None
    nodes = {id(softmax)}
    source = softmax.input[0]
    keep = None
    fill_add = g.node(source, "Add")
    if fill_add is not None:
        scores = next((i for i in fill_add.input
                       if g.node(i, "Mul") and any(g.node(j, "MatMul")
                                                   for j in g.node(i, "Mul").input)), None)
        if scores is None:
            return None
        keep_mul = g.node(scores, "Mul")
        qk_name = next(j for j in keep_mul.input if g.node(j, "MatMul"))
        mask = _key_mask(g, fill_add, qk_name)
        if mask is None:
            return None
        keep, mask_nodes = mask
        nodes |= mask_nodes
        qk = g.node(qk_name, "MatMul")
    else:
        qk = g.node(source, "MatMul")
    if qk is None:
        return None
    nodes.add(id(qk))
    # After the softmax: optionally p * Cast(m) + 0 * Cast(Not(m)), then p @ v.
    probs = softmax.output[0]
    if keep is not None:
        after = g.only(probs, "Mul")
        zero_add = None if after is None else g.only(after.output[0], "Add")
        if after is None or zero_add is None:
            return None
        keep_cast = g.node(g.other_input(after, probs), "Cast")
        zero_mul = g.node(g.other_input(zero_add, after.output[0]), "Mul")
        if keep_cast is None or keep_cast.input[0] != keep or zero_mul is None \
                or not any(g.scalar(i) == 0.0 for i in zero_mul.input):
            return None
        nodes |= {id(after), id(zero_add)}  # zero_mul may be shared, like fill_mul
        probs = zero_add.output[0]
    pv = g.only(probs, "MatMul")
    if pv is None or pv.input[0] != probs:
        return None
    nodes.add(id(pv))
    # Q, K, V heads.
    q_t = _transpose(g, qk.input[0], [0, 2, 1, 3])
    k_t = _transpose(g, qk.input[1], [0, 2, 3, 1])
    v_t = _transpose(g, pv.input[1], [0, 2, 1, 3])
    if q_t is None or k_t is None or v_t is None:
        return None
    scale, q_heads = 1.0, q_t.input[0]
    scaled = g.node(q_heads, "Mul")
    if scaled is not None:
        factor = next((g.scalar(i) for i in scaled.input if g.scalar(i) is not None), None)
        data = [i for i in scaled.input if g.scalar(i) is None]
        if factor is None or len(data) != 1:
            return None
        scale, q_heads = factor, data[0]
        nodes.add(id(scaled))
    parts = [_projection(g, name) for name in (q_heads, k_t.input[0], v_t.input[0])]
    if any(p is None for p in parts):
        return None
    q, k, v = parts
    if not (q["x2d"] == k["x2d"] == v["x2d"]) or len({(p["heads"], p["size"]) for p in parts}) != 1:
        return None
    for part in parts:
        nodes |= part["nodes"]
    nodes |= {id(q_t), id(k_t), id(v_t)}
    # x2d = Reshape(Unsqueeze(x, [2, 3]), [-1, D]) for an x of rank 3.
    flatten = g.node(q["x2d"], "Reshape")
    unsqueeze = None if flatten is None else g.node(flatten.input[0], "Unsqueeze")
    target = None if flatten is None else g.constant(flatten.input[1])
    if unsqueeze is None or target is None or list(target) != [-1, q["weight"].shape[0]]:
        return None
    axes = g.constant(unsqueeze.input[1]) if len(unsqueeze.input) > 1 else None
    x = unsqueeze.input[0]
    if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [2, 3] \
            or shape_info.get(x, (None,))[0] != 3:
        return None
    # Output: ctx [B, N, T, H] -> (Unsqueeze) -> Transpose -> Reshape to rows [B*T, N*H].
    heads, size = q["heads"], q["size"]
    # layouts: each tensor of the chain -> its axes, for the Shape nodes that read them.
    layout, tensor = ["B", "N", "T", "H"], pv.output[0]
    layouts = {tensor: layout}
    while True:
        users = g.consumers.get(tensor, [])
        data_users = [u for u in users if u.op_type != "Shape"]
        if tensor in g.outputs or len(data_users) != 1:
            return None
        node = data_users[0]
        if node.op_type == "Unsqueeze":
            axes = g.constant(node.input[1]) if len(node.input) > 1 else None
            if axes is None:
                return None
            layout = list(layout)
            for axis in sorted(int(a) % (len(layout) + axes.size) for a in axes.reshape(-1)):
                layout.insert(axis, 1)
        elif node.op_type == "Transpose":
            layout = [layout[p] for p in g.attrs(node)["perm"]]
        elif node.op_type == "Reshape":
            break
        else:
            return None
        nodes.add(id(node))
        tensor = node.output[0]
        layouts[tensor] = layout
    final_reshape = node
    if [d for d in layout if d != 1] != ["B", "T", "N", "H"]:
        return None
    rows = final_reshape.output[0]
    consumers = g.consumers.get(rows, [])
    if shape_info.get(rows, (None,))[0] != 2 or not consumers:
        return None
    for user in consumers:  # rows [B*T, N*H] go straight into the output projection
        if user.op_type not in ("Gemm", "MatMul") or user.input[0] != rows:
            return None
        weight = g.constant(user.input[1])
        trans_b = user.op_type == "Gemm" and g.attrs(user).get("transB", 0)
        if weight is None or weight.ndim != 2 or \
                weight.shape[1 if trans_b else 0] != heads * size:
            return None
    # Shape nodes reading tensors the fusion removes (tf2onnx's shape maths) are rebuilt.
    shape_users = [(user, dims) for tensor, dims in layouts.items()
                   for user in g.consumers.get(tensor, []) if user.op_type == "Shape"]
    nodes.add(id(final_reshape))
    handled = nodes | {id(user) for user, _ in shape_users}
    for node_id in nodes:  # nothing outside the block may read what the fusion removes
        for name in g.by_id[node_id].output:
            if name in g.outputs and name != rows:
                return None
            if name != rows and any(id(u) not in handled for u in g.consumers.get(name, [])):
                return None
    nodes = handled  # the Shape nodes are replaced too (their outputs keep their names)
    return {"nodes": nodes, "x": x, "q": q, "k": k, "v": v, "scale": scale, "keep": keep,
            "rows": rows, "heads": heads, "size": size, "shape_users": shape_users}


def _attention_nodes(g, match, tag):
    """The replacement nodes for a matched attention block, or None if the mask does not fit."""
    inputs = [match["x"], f"{tag}_weight", f"{tag}_bias"]
    nodes = []
    if match["keep"] is not None:
        source = _mask_source(g, match["keep"])
        if source is None or not source[1]:
            return None
        mask_int = f"{source[0]}_mask_index"
        if mask_int not in g.mask_casts:  # one cast per mask input, shared by the layers
            g.mask_casts.add(mask_int)
            nodes.append(helper.make_node("Cast", [source[0]], [mask_int],
                                          to=onnx.TensorProto.INT32, name=f"{mask_int}_cast"))
        inputs.append(mask_int)
    q, k, v = match["q"], match["k"], match["v"]
    weight = np.concatenate([q["weight"], k["weight"], v["weight"]], axis=1)
    bias = np.concatenate([q["bias"], k["bias"], v["bias"]])
    g.graph.initializer.extend([numpy_helper.from_array(weight, f"{tag}_weight"),
                                numpy_helper.from_array(bias, f"{tag}_bias")])
    context = f"{tag}_context"
    nodes.append(helper.make_node(
        "Attention", inputs, [context], name=tag, domain=MS_DOMAIN,
        num_heads=int(match["heads"]), scale=float(match["scale"]),
    ))
    width = match["heads"] * match["size"]
    shape_name = f"{tag}_rows_shape"
    g.graph.initializer.append(numpy_helper.from_array(np.array([-1, width], np.int64),
                                                       shape_name))
    nodes.append(helper.make_node("Reshape", [context, shape_name], [match["rows"]],
                                  name=f"{tag}_rows"))
    # Shape nodes that read removed tensors: rebuild those shapes from x's [B, T] and constants.
    if match["shape_users"]:
        x_shape = f"{tag}_x_shape"
        nodes.append(helper.make_node("Shape", [match["x"]], [x_shape], name=f"{tag}_x_shape"))
        pieces = {}
        for dim, index in (("B", 0), ("T", 1)):
            pieces[dim] = f"{tag}_{dim}"
            g.graph.initializer.append(
                numpy_helper.from_array(np.array([index], np.int64), f"{tag}_{dim}_index"))
            nodes.append(helper.make_node("Gather", [x_shape, f"{tag}_{dim}_index"],
                                          [pieces[dim]], axis=0, name=f"{tag}_{dim}"))
        for dim, value in (("N", match["heads"]), ("H", match["size"]), (1, 1)):
            pieces[dim] = f"{tag}_dim_{dim}"
            g.graph.initializer.append(
                numpy_helper.from_array(np.array([value], np.int64), pieces[dim]))
        for user, dims in match["shape_users"]:
            attrs = g.attrs(user)
            start, end = attrs.get("start", 0), attrs.get("end", len(dims))
            picked = dims[start:end]
            nodes.append(helper.make_node(
                "Concat", [pieces[d] for d in picked], list(user.output), axis=0,
                name=f"{user.name or tag}_rebuilt"))
    return nodes


def _shape_info(model):
    """Tensor name -> (rank, last dimension or None) from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    info = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            last = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
            info[value.name] = (len(dims), last)
    return info


def _ranks(model):
    """Tensor name -> rank from ONNX shape inference (inputs, outputs and intermediates)."""
    return {name: rank for name, (rank, _) in _shape_info(model).items()}
