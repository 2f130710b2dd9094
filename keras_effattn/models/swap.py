"""Swapping the self-attention of KerasHub encoders for keras_effattn layers.

This is the only module of keras_effattn that touches KerasHub internals: the private
`TransformerEncoder._self_attention_layer` attribute, the encoder's sublayer tracker and the
functional graph's inbound nodes. Everything here is checked against the installed KerasHub
(`check_keras_hub_version`) so that a KerasHub release that renames them fails loudly instead
of running stock attention silently.

A swapped backbone is an instance of a registered subclass of its KerasHub class (for example
`EffAttnDistilBertBackbone`, a `keras_hub.models.DistilBertBackbone`) whose config carries the
canonical attention spec under ``"attention"``. Loading a `.keras` file rebuilds the backbone
with the same attention kinds, then restores every weight, random features included.
"""

import importlib.metadata
import inspect

import keras
import keras_hub

from keras_effattn.layers import spec as spec_lib

MIN_KERAS_HUB = (0, 20)
_ATTENTION_ATTR = "_self_attention_layer"
_PROJECTIONS = ("query_dense", "key_dense", "value_dense", "output_dense")
_MHA_ARGS = tuple(
    name
    for name in inspect.signature(keras.layers.MultiHeadAttention.__init__).parameters
    if name not in ("self", "kwargs")
) + ("name", "dtype", "trainable")


def _version_tuple(text):
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_keras_hub_version():
    """Raises ImportError when the installed KerasHub is older than `MIN_KERAS_HUB`.

    Returns:
        The installed KerasHub version string.
    """
    try:
        version = importlib.metadata.version("keras-hub")
    except importlib.metadata.PackageNotFoundError:
        version = getattr(keras_hub, "__version__", "0.0")
    if _version_tuple(version) < MIN_KERAS_HUB:
        wanted = ".".join(str(v) for v in MIN_KERAS_HUB)
        raise ImportError(
            f"keras_effattn swaps attention inside KerasHub encoders and needs keras-hub>="
            f"{wanted}; found {version}. Upgrade with `pip install -U keras-hub`."
        )
    return version


def encoder_layers(backbone):
    """The backbone's `keras_hub.layers.TransformerEncoder` layers, from bottom to top.

    Args:
        backbone: a KerasHub backbone built from `TransformerEncoder` layers.

    Returns:
        A list of `TransformerEncoder` layers in depth order.

    Raises:
        ValueError: when `backbone` is not a Keras model or holds no `TransformerEncoder`.
    """
    if isinstance(backbone, keras_hub.models.Task):
        raise ValueError(
            f"Expected a backbone, got the task model {type(backbone).__name__}. Pass "
            "`task.backbone`, or build the task with `attention=` "
            "(keras_effattn.build_classifier / build_masked_lm)."
        )
    if not isinstance(backbone, keras.Model):
        raise ValueError(
            f"Expected a KerasHub backbone (a keras.Model), got {type(backbone).__name__}."
        )
    layers = getattr(backbone, "transformer_layers", None)
    if not layers:
        layers = [
            layer
            for layer in backbone.layers
            if isinstance(layer, keras_hub.layers.TransformerEncoder)
        ]
    layers = list(layers)
    if not layers or not all(isinstance(x, keras_hub.layers.TransformerEncoder) for x in layers):
        raise ValueError(
            f"{type(backbone).__name__} is not built from keras_hub.layers.TransformerEncoder "
            "layers, so its attention cannot be swapped. Supported: DistilBertBackbone, "
            "BertBackbone, RobertaBackbone and other TransformerEncoder stacks."
        )
    for layer in layers:
        if not isinstance(getattr(layer, _ATTENTION_ATTR, None), keras.layers.MultiHeadAttention):
            raise ValueError(
                f"Encoder layer {layer.name!r} has no built `{_ATTENTION_ATTR}` "
                f"MultiHeadAttention (keras-hub {check_keras_hub_version()}). keras_effattn was "
                "written against keras-hub 0.20-0.32; pin a version in that range."
            )
    return layers


def attention_layers(backbone):
    """The self-attention layer of each encoder layer, from bottom to top."""
    return [getattr(layer, _ATTENTION_ATTR) for layer in encoder_layers(backbone)]


def _replace_attention_layer(encoder, layer_spec):
    """Replaces one encoder's attention by a fresh, built layer of `layer_spec`'s kind."""
    old = getattr(encoder, _ATTENTION_ATTR)
    config = old.get_config()
    # Spec options win over the inherited constructor arguments (e.g. a FAVOR+ `seed`).
    mha_kwargs = {k: config[k] for k in _MHA_ARGS if k in config and k not in layer_spec.kwargs}
    new = spec_lib.make_attention(layer_spec, **mha_kwargs)
    hidden_dim = old.output_dense.kernel.shape[-1]  # never factorised, unlike query_dense
    new.build(query_shape=(None, None, hidden_dim), value_shape=(None, None, hidden_dim))
    # The encoder is built, so its tracker is locked: swap the tracked entry in place.
    encoder._tracker.replace_tracked_value("layers", old, new)
    setattr(encoder, _ATTENTION_ATTR, new)
    return new


def _copy_layer_weights(source, target, where):
    src, dst = source.weights, target.weights
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst)):
        raise ValueError(
            f"Cannot copy weights of {where}: shapes {[tuple(w.shape) for w in src]} vs "
            f"{[tuple(w.shape) for w in dst]}."
        )
    for a, b in zip(src, dst):
        b.assign(a)


def _copy_attention_weights(source, target, where):
    """Copies the query/key/value/output projections; extra state of same-kind layers too.

    A target with factorised Q/K/V (low-rank ``qkv_rank``) receives the truncated-SVD factors
    of the source's full kernels, through the layer's own `from_multi_head_attention`.
    """
    if getattr(source, "qkv_rank", None) is not None and type(source) is not type(target):
        raise ValueError(
            f"{where} has factorised Q/K/V (qkv_rank={source.qkv_rank}); a "
            f"{type(target).__name__} needs full projections. Swap from the backbone the "
            "low-rank one was made from instead."
        )
    donor = source
    if getattr(target, "qkv_rank", None) is not None and getattr(source, "qkv_rank", None) is None:
        hidden = source.query_dense.kernel.shape[0]
        donor = type(target).from_multi_head_attention(
            source, (None, None, hidden), **layer_spec_of(target).kwargs
        )
    for name in _PROJECTIONS:
        _copy_layer_weights(getattr(donor, name), getattr(target, name), f"{where}.{name}")
    if type(source) is type(target):
        projection_ids = {id(w) for name in _PROJECTIONS for w in getattr(source, name).weights}
        extra_src = [w for w in source.weights if id(w) not in projection_ids]
        projection_ids = {id(w) for name in _PROJECTIONS for w in getattr(target, name).weights}
        extra_dst = [w for w in target.weights if id(w) not in projection_ids]
        if [tuple(w.shape) for w in extra_src] == [tuple(w.shape) for w in extra_dst]:
            for a, b in zip(extra_src, extra_dst):
                b.assign(a)


def _copy_backbone_weights(source, target):
    """Copies every weight of `source` into `target`, attention by projection sublayer."""
    src_layers = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if layer.name not in src_layers:
            raise ValueError(f"Layer {layer.name!r} is missing from the source backbone.")
        old = src_layers[layer.name]
        if isinstance(layer, keras_hub.layers.TransformerEncoder):
            old_attention = getattr(old, _ATTENTION_ATTR)
            new_attention = getattr(layer, _ATTENTION_ATTR)
            old_subs = [s for s in old._layers if s is not old_attention]
            new_subs = [s for s in layer._layers if s is not new_attention]
            for a, b in zip(old_subs, new_subs, strict=True):
                _copy_layer_weights(a, b, f"{layer.name}/{b.name}")
            _copy_attention_weights(old_attention, new_attention, f"{layer.name}/attention")
        else:
            _copy_layer_weights(old, layer, layer.name)


class _AttentionSwapMixin:
    """Adds an ``attention`` spec to a KerasHub backbone's constructor and config."""

    def __init__(self, *args, attention=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.attention = None
        if attention is not None:
            check_keras_hub_version()
            encoders = encoder_layers(self)
            specs = spec_lib.parse_attention_spec(attention, len(encoders))
            for encoder, layer_spec in zip(encoders, specs):
                _replace_attention_layer(encoder, layer_spec)
            self.attention = spec_lib.format_attention_spec(specs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        check_sequence_length(self, inputs)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["attention"] = self.attention
        return config


_SWAPPABLE = {}


def swappable_class(backbone_cls):
    """The registered keras_effattn subclass of a KerasHub backbone class.

    The subclass takes one extra constructor argument, ``attention`` (a spec string, list or
    None for the stock layers), and saves it in its config. Classes for the KerasHub encoders
    below are created (and registered for `.keras` loading) when this module is imported;
    other `TransformerEncoder` backbones get theirs on first use, so a process that loads such
    a saved model must call `swappable_class(TheBackboneClass)` before `keras.saving.load_model`.

    Args:
        backbone_cls: a `keras_hub.models.Backbone` subclass.

    Returns:
        The subclass (or `backbone_cls` itself when it already is one).
    """
    if issubclass(backbone_cls, _AttentionSwapMixin):
        return backbone_cls
    if not (isinstance(backbone_cls, type) and issubclass(backbone_cls, keras_hub.models.Backbone)):
        raise ValueError(f"Expected a keras_hub.models.Backbone subclass, got {backbone_cls!r}.")
    if backbone_cls not in _SWAPPABLE:
        name = f"EffAttn{backbone_cls.__name__}"
        cls = type(
            name,
            (_AttentionSwapMixin, backbone_cls),
            {
                "__module__": __name__,
                "__doc__": (
                    f"A `keras_hub.models.{backbone_cls.__name__}` whose self-attention layers "
                    "follow a keras_effattn attention spec (`attention=`)."
                ),
            },
        )
        _SWAPPABLE[backbone_cls] = keras.saving.register_keras_serializable(
            package="keras_effattn", name=name
        )(cls)
    return _SWAPPABLE[backbone_cls]


for _cls in (
    keras_hub.models.DistilBertBackbone,
    keras_hub.models.BertBackbone,
    keras_hub.models.RobertaBackbone,
    keras_hub.models.XLMRobertaBackbone,
):
    swappable_class(_cls)
EffAttnDistilBertBackbone = _SWAPPABLE[keras_hub.models.DistilBertBackbone]
EffAttnBertBackbone = _SWAPPABLE[keras_hub.models.BertBackbone]


def check_sequence_length(backbone, inputs):
    """Raises ValueError when static `token_ids` are longer than the position table.

    Args:
        backbone: a KerasHub backbone with `max_sequence_length`.
        inputs: the backbone's input dict (or token id tensor).
    """
    limit = getattr(backbone, "max_sequence_length", None)
    token_ids = inputs.get("token_ids") if isinstance(inputs, dict) else inputs
    shape = getattr(token_ids, "shape", None)
    if limit is None or shape is None or len(shape) < 2 or shape[1] is None:
        return
    if int(shape[1]) > int(limit):
        raise ValueError(
            f"Input sequence length {int(shape[1])} exceeds the backbone's "
            f"max_sequence_length={limit} (its position-embedding table). Truncate the input "
            f"(preprocessor sequence_length <= {limit}) or build a backbone with a larger "
            "max_sequence_length from a config."
        )


def swap_attention(backbone, attention, options=None):
    """Returns a copy of a KerasHub encoder backbone with keras_effattn self-attention.

    Every encoder layer's `MultiHeadAttention` is replaced by the layer its spec entry names
    (`keras_effattn.layers.spec`), built with the same heads, sizes, dropout and initialisers;
    the pretrained query/key/value/output projections are copied by sublayer, every other
    weight by layer. Extra state of the new kinds (FAVOR+ random features, Linformer
    projections) keeps its fresh initialisation. With ``attention="exact"`` the result
    reproduces the original outputs (to float32 round-off). The input backbone is unchanged.

    Args:
        backbone: a KerasHub backbone built from `keras_hub.layers.TransformerEncoder`
            (`DistilBertBackbone`, `BertBackbone`, `RobertaBackbone`, ...), swapped or not.
        attention: an attention spec: one kind for every layer (``"favor"``), one entry per
            layer (``"exact*4,favor*2"``), ``"alternate:exact,favor"``, or a list of entries.
        options: optional dict of per-kind default options, e.g.
            ``{"favor": {"num_features": 128}, "lowrank": {"k": 64}}``; inline options win.

    Returns:
        A new backbone, an instance of `swappable_class(type(backbone))`, whose config carries
        the canonical spec; it saves to `.keras` and loads back with the same attention.

    Raises:
        ValueError: for a spec that is malformed, names an unknown kind, or does not match the
            number of encoder layers, and for a model that is not a TransformerEncoder stack.

    Example:
    ```python
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16)
    swapped = keras_effattn.swap_attention(backbone, "exact")
    describe_attention(swapped)  # "exact*2"
    ```
    """
    return rebuild_backbone(backbone, attention, options)


def rebuild_backbone(backbone, attention, options=None, **config_overrides):
    """`swap_attention` with optional constructor overrides that keep weight shapes.

    Args:
        backbone: see `swap_attention`.
        attention: see `swap_attention`.
        options: see `swap_attention`.
        **config_overrides: backbone constructor arguments to change, e.g. ``dropout=0.2``.

    Returns:
        A new backbone with every weight copied from `backbone`.
    """
    check_keras_hub_version()
    encoders = encoder_layers(backbone)
    specs = spec_lib.parse_attention_spec(attention, len(encoders), options)
    for layer_spec in specs:  # fail on a missing layer module before building anything
        spec_lib.attention_class(layer_spec.kind)
    config = backbone.get_config()
    unknown = sorted(set(config_overrides) - set(config))
    if unknown:
        raise ValueError(
            f"{type(backbone).__name__} has no constructor arguments {unknown} to override."
        )
    config.update(config_overrides)
    config["attention"] = spec_lib.format_attention_spec(specs)
    cls = swappable_class(type(backbone))
    swapped = cls.from_config(config)
    _copy_backbone_weights(backbone, swapped)
    return swapped


def _kind_of(layer):
    for kind in spec_lib.KINDS:
        try:
            cls = spec_lib.attention_class(kind)
        except ImportError:
            continue
        if type(layer) is cls:
            return kind
    raise ValueError(
        f"Attention layer {layer.name!r} is a {type(layer).__name__}, which is none of the "
        f"keras_effattn kinds {spec_lib.KINDS}."
    )


def layer_spec_of(layer):
    """The `LayerSpec` (kind and scalar non-MultiHeadAttention options) of an attention layer."""
    kind = _kind_of(layer)
    config = layer.get_config()
    base = set(keras.layers.MultiHeadAttention(num_heads=1, key_dim=1).get_config())
    # Spec strings hold scalars; structured options (initializer configs) are left out: the
    # state they create is saved with the weights.
    options = {
        k: v
        for k, v in config.items()
        if k not in base and (v is None or isinstance(v, (bool, int, float, str)))
    }
    return spec_lib.LayerSpec(kind, tuple(sorted(options.items())))


def describe_attention(model_or_backbone):
    """The canonical spec of the attention a model actually runs, layer by layer.

    Runs of identical layers are written ``kind*N``; the string parses back with
    `parse_attention_spec` to the same per-layer kinds and options.

    Args:
        model_or_backbone: a KerasHub backbone or a task model with a `.backbone`.

    Returns:
        A spec string such as ``"exact*6"`` or ``"exact*4,favor(num_features=128,...)*2"``.

    Example:
    ```python
    describe_attention(keras_effattn.load_backbone("minilm-l6"))  # "keras*6"
    ```
    """
    backbone = getattr(model_or_backbone, "backbone", None) or model_or_backbone
    specs = [str(layer_spec_of(layer)) for layer in attention_layers(backbone)]
    runs = []
    for entry in specs:
        if runs and runs[-1][0] == entry:
            runs[-1][1] += 1
        else:
            runs.append([entry, 1])
    return ",".join(entry if n == 1 else f"{entry}*{n}" for entry, n in runs)


def embedding_model(backbone):
    """A model from the backbone's inputs to the input of its first encoder layer.

    Attention maps are computed layer by layer from there.
    """
    node = encoder_layers(backbone)[0]._inbound_nodes[0]
    return keras.Model(backbone.input, node.arguments.args[0])
