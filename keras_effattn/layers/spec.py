"""Attention specs: which attention kind (and options) each encoder layer uses.

A spec is a small string, or a list, that names a kind per layer:

- ``"exact"``: one kind for every layer;
- ``"exact,favor,exact,favor,exact,favor"``: one entry per layer (the count must match);
- ``"exact*2,favor*4"``: an entry repeated N times;
- ``"alternate:exact,favor"``: the pattern repeated (and cut) to the number of layers;
- inline options in parentheses: ``"favor(num_features=128,redraw_every=100)"``,
  ``"exact(chunk_size=256)"``, ``"lowrank(k=64,share_kv=true)"``.

Kinds (aliases in brackets):

| kind | layer |
| --- | --- |
| ``keras`` [``mha``] | stock ``keras.layers.MultiHeadAttention`` (the baseline) |
| ``exact`` [``fused``] | ``keras_effattn.FusedAttention`` (``chunk_size=`` for the chunked mode) |
| ``favor`` [``performer``] | ``keras_effattn.FavorAttention`` |
| ``lowrank`` [``linformer``] | ``keras_effattn.LowRankAttention`` |

Options are checked by the layer constructors; the parser checks the syntax and the kind names.
"""

import dataclasses
import importlib
import re

import keras

KINDS = ("keras", "exact", "favor", "lowrank")
ALIASES = {"mha": "keras", "fused": "exact", "performer": "favor", "linformer": "lowrank"}
_CLASSES = {
    "exact": ("keras_effattn.layers.fused_attention", "FusedAttention"),
    "favor": ("keras_effattn.layers.favor_attention", "FavorAttention"),
    "lowrank": ("keras_effattn.layers.low_rank_attention", "LowRankAttention"),
}
_ENTRY = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:\((.*)\))?\s*(?:\*\s*(\d+))?\s*$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer's attention: a kind from `KINDS` and its constructor options."""

    kind: str
    options: tuple = ()  # sorted (name, value) pairs, so the spec is hashable

    @property
    def kwargs(self):
        return dict(self.options)

    def __str__(self):
        if not self.options:
            return self.kind
        inner = ",".join(f"{k}={_format_value(v)}" for k, v in self.options)
        return f"{self.kind}({inner})"


def _format_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def _parse_value(text):
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text.strip())
        except ValueError:
            pass
    return text.strip()


def _canonical_kind(name, where):
    kind = ALIASES.get(name.lower(), name.lower())
    if kind not in KINDS:
        allowed = ", ".join(KINDS) + " (aliases: " + ", ".join(sorted(ALIASES)) + ")"
        raise ValueError(
            f"Unknown attention kind {name!r} in {where!r}. Allowed kinds: {allowed}."
        )
    return kind


def _split_top_level(text):
    """Splits on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Unbalanced ')' in attention spec {text!r}.")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ValueError(f"Unbalanced '(' in attention spec {text!r}.")
    parts.append("".join(current))
    return parts


def _parse_entry(text, spec_text):
    match = _ENTRY.match(text)
    if not match or not text.strip():
        raise ValueError(
            f"Cannot parse attention spec entry {text!r} in {spec_text!r}. Expected "
            "'kind', 'kind*N' or 'kind(option=value,...)', e.g. 'favor(num_features=128)*2'."
        )
    name, inner, repeat = match.groups()
    kind = _canonical_kind(name, spec_text)
    options = {}
    if inner is not None and inner.strip():
        for item in _split_top_level(inner):
            if "=" not in item:
                raise ValueError(
                    f"Option {item.strip()!r} in {spec_text!r} must be written 'name=value'."
                )
            key, value = item.split("=", 1)
            key = key.strip()
            if not key.isidentifier():
                raise ValueError(f"Option name {key!r} in {spec_text!r} is not a valid name.")
            options[key] = _parse_value(value)
    if kind == "keras" and options.get("chunk_size") is not None:
        raise ValueError("chunk_size applies to 'exact' attention, not to 'keras'.")
    count = int(repeat) if repeat is not None else 1
    if count <= 0:
        raise ValueError(f"Repeat count in {text!r} must be at least 1.")
    return [(kind, options)] * count


def parse_attention_spec(spec, num_layers=None, options=None):
    """Parses an attention spec into one `LayerSpec` per layer.

    Args:
        spec: a spec string (see the module docstring), a `LayerSpec`, or a list of strings,
            `LayerSpec`s or ``{"kind": ..., **options}`` dicts, one per layer.
        num_layers: int or None. The number of encoder layers. With None, the spec is returned
            as written (``alternate:`` then needs `num_layers`).
        options: optional dict mapping a kind to default options for every layer of that kind,
            e.g. ``{"favor": {"num_features": 128}}``. Inline options win over these.

    Returns:
        A list of `LayerSpec`, of length `num_layers` when it is given.

    Raises:
        ValueError: for an unknown kind, bad syntax, or a layer count that does not match.
    """
    if num_layers is not None and (not isinstance(num_layers, int) or num_layers <= 0):
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}.")
    defaults = {}
    for name, opts in (options or {}).items():
        defaults[_canonical_kind(name, f"options[{name!r}]")] = dict(opts or {})

    alternate = False
    if isinstance(spec, LayerSpec):
        entries = [(spec.kind, spec.kwargs)]
        spec_text = str(spec)
    elif isinstance(spec, str):
        spec_text = spec.strip()
        if not spec_text:
            raise ValueError("The attention spec is empty. Use e.g. 'exact' or 'alternate:exact,favor'.")
        if spec_text.lower().startswith("alternate:"):
            alternate = True
            spec_text_body = spec_text.split(":", 1)[1]
        else:
            spec_text_body = spec_text
        entries = []
        for part in _split_top_level(spec_text_body):
            entries.extend(_parse_entry(part, spec_text))
    elif isinstance(spec, (list, tuple)):
        spec_text = repr(spec)
        if not spec:
            raise ValueError("The attention spec list is empty; give one entry per layer.")
        entries = []
        for item in spec:
            if isinstance(item, LayerSpec):
                entries.append((item.kind, item.kwargs))
            elif isinstance(item, str):
                entries.extend(_parse_entry(item, spec_text))
            elif isinstance(item, dict):
                item = dict(item)
                if "kind" not in item:
                    raise ValueError(f"Spec dict {item!r} needs a 'kind' key.")
                kind = _canonical_kind(str(item.pop("kind")), spec_text)
                entries.append((kind, item))
            else:
                raise ValueError(
                    f"Spec entries must be strings, dicts or LayerSpec, got {type(item).__name__}."
                )
    else:
        raise ValueError(
            f"An attention spec must be a string or a list, got {type(spec).__name__}: {spec!r}."
        )

    if alternate:
        if num_layers is None:
            raise ValueError("An 'alternate:' spec needs num_layers to expand.")
        entries = [entries[i % len(entries)] for i in range(num_layers)]
    elif num_layers is not None and len(entries) == 1:
        entries = entries * num_layers
    elif num_layers is not None and len(entries) != num_layers:
        raise ValueError(
            f"The attention spec {spec_text!r} names {len(entries)} layers but the model has "
            f"{num_layers}. Give one kind for all layers, exactly {num_layers} entries, or use "
            "'alternate:kind1,kind2'."
        )
    result = []
    for kind, opts in entries:
        merged = {**defaults.get(kind, {}), **opts}
        result.append(LayerSpec(kind, tuple(sorted(merged.items()))))
    return result


def format_attention_spec(layer_specs):
    """The canonical string of a list of `LayerSpec` (round-trips through the parser)."""
    return ",".join(str(s) for s in layer_specs)


def attention_class(kind):
    """The layer class for a kind name (or alias)."""
    kind = _canonical_kind(kind, kind)
    if kind == "keras":
        return keras.layers.MultiHeadAttention
    module, name = _CLASSES[kind]
    return getattr(importlib.import_module(module), name)


def make_attention(layer_spec, **mha_kwargs):
    """Builds the attention layer for one `LayerSpec` (or spec string of one kind).

    Args:
        layer_spec: a `LayerSpec` or a one-entry spec string such as ``"favor(num_features=64)"``.
        **mha_kwargs: the `keras.layers.MultiHeadAttention` constructor arguments (num_heads,
            key_dim, dropout, kernel_initializer, dtype, name, ...).
    """
    if not isinstance(layer_spec, LayerSpec):
        specs = parse_attention_spec(layer_spec)
        if len(specs) != 1:
            raise ValueError(f"make_attention takes one layer's spec, got {layer_spec!r}.")
        layer_spec = specs[0]
    return attention_class(layer_spec.kind)(**mha_kwargs, **layer_spec.kwargs)
