"""Mask conventions for keras_effattn: the one place they live.

Shape letters: B batch, T query length, S key length, N heads.

Every mask here is a *keep* mask: ``True`` (or 1) means "may attend", ``False`` (or 0) means
"masked out". Three forms are accepted wherever a layer takes ``attention_mask``:

- a key-padding mask ``[B, S]`` (KerasHub's ``padding_mask``);
- ``[B, 1, S]``, the form KerasHub's ``TransformerEncoder`` passes (its padding mask with an axis
  added by ``merge_padding_and_attention_mask``);
- a full ``[B, T, S]`` mask, as ``keras.layers.MultiHeadAttention`` takes.

The layers keep masks factorised in a `MaskParts` (query padding, key padding, causal flag,
sliding window, optional dense part) so that linear-time attention never builds a T×S tensor
when only padding masks were given. A fully masked query row attends to nothing and its
attention output is zero (``keras.layers.MultiHeadAttention`` instead spreads such a row
uniformly over all keys, masked ones included), with finite gradients in every kind.
"""

from typing import NamedTuple

from keras import ops

# Large finite negative used instead of -inf so that (-big) - (-big) stays 0, never NaN.
NEG_INF = -1e30


class MaskParts(NamedTuple):
    """A factorised attention mask.

    Attributes:
        query: bool ``[B, T]`` query padding (False rows produce zero output) or None.
        key: bool ``[B, S]`` key padding or None.
        dense: bool ``[B, T, S]`` or ``[B, 1, S]`` explicit mask or None.
        causal: bool. Query i may only attend to keys j <= i.
        window: int or None. Query i may only attend to keys with |i - j| < window.
    """

    query: object = None
    key: object = None
    dense: object = None
    causal: bool = False
    window: object = None

    @property
    def is_padding_only(self):
        """True when the mask factorises into query and key padding (no dense/causal/window)."""
        return self.dense is None and not self.causal and self.window is None

    @property
    def is_empty(self):
        return self.is_padding_only and self.query is None and self.key is None


def _to_bool(mask):
    mask = ops.convert_to_tensor(mask)
    if mask.dtype == "bool":
        return mask
    return ops.greater(mask, ops.cast(0.5, mask.dtype)) if "float" in str(mask.dtype) else (
        ops.not_equal(mask, ops.cast(0, mask.dtype))
    )


def check_attention_mask(mask, query_len=None, key_len=None, batch=None, name="attention_mask"):
    """Checks a mask's static shape against ``[B, S]``, ``[B, 1, S]`` or ``[B, T, S]``.

    Raises:
        ValueError: naming the argument, the shape received and the shapes allowed.
    """
    shape = tuple(mask.shape)
    allowed = "[B, S] (key padding), [B, 1, S] or [B, T, S]"

    def bad(why):
        return ValueError(
            f"`{name}` has shape {shape}; {why}. Allowed shapes: {allowed} with "
            f"B={batch}, T={query_len}, S={key_len}."
        )

    if len(shape) not in (2, 3):
        raise bad(f"its rank is {len(shape)}, not 2 or 3")
    if shape[-1] is not None and key_len is not None and shape[-1] != key_len:
        raise bad(f"its last axis must equal the key length {key_len}")
    if len(shape) == 3 and shape[1] not in (None, 1) and query_len is not None:
        if shape[1] != query_len:
            raise bad(f"its axis 1 must be 1 or the query length {query_len}")
    if batch is not None and shape[0] not in (None, 1) and shape[0] != batch:
        raise bad(f"its batch axis must be 1 or {batch}")


def attention_mask_from_padding(padding_mask):
    """``[B, S]`` key padding -> ``[B, 1, S]`` bool attention mask (KerasHub's convention)."""
    return ops.expand_dims(_to_bool(padding_mask), axis=1)


def causal_mask(query_len, key_len, query_offset=0, key_offset=0):
    """Bool ``[T, S]``: True where key position <= query position (offsets shift the indices)."""
    rows = ops.arange(query_len) + query_offset
    cols = ops.arange(key_len) + key_offset
    return ops.greater_equal(ops.expand_dims(rows, 1), ops.expand_dims(cols, 0))


def window_mask(window, query_len, key_len, query_offset=0, key_offset=0):
    """Bool ``[T, S]``: True where |query position - key position| < window."""
    rows = ops.arange(query_len) + query_offset
    cols = ops.arange(key_len) + key_offset
    return ops.less(ops.abs(ops.expand_dims(rows, 1) - ops.expand_dims(cols, 0)), window)


def merge_mask_parts(
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    sliding_window=None,
    query_len=None,
    key_len=None,
):
    """Builds a `MaskParts` from the masks ``MultiHeadAttention.call`` gathers, without T×S.

    Args:
        query_mask: Keras mask of the query, ``[B, T]``, or None.
        value_mask: Keras mask of the value, ``[B, S]``, or None.
        key_mask: Keras mask of the key, ``[B, S]``, or None.
        attention_mask: ``[B, S]``, ``[B, 1, S]`` or ``[B, T, S]`` keep mask, or None.
        use_causal_mask: bool.
        sliding_window: int or None.
        query_len, key_len: static lengths for the shape check (None skips it).

    Returns:
        A `MaskParts`.
    """
    query = _to_bool(query_mask) if query_mask is not None else None
    key = None
    for m in (value_mask, key_mask):
        if m is not None:
            m = _to_bool(m)
            key = m if key is None else ops.logical_and(key, m)
    dense = None
    if attention_mask is not None:
        check_attention_mask(attention_mask, query_len, key_len)
        attention_mask = _to_bool(attention_mask)
        if len(attention_mask.shape) == 2:
            key = attention_mask if key is None else ops.logical_and(key, attention_mask)
        elif attention_mask.shape[1] == 1:
            key_part = attention_mask[:, 0, :]
            key = key_part if key is None else ops.logical_and(key, key_part)
        else:
            dense = attention_mask
    return MaskParts(query=query, key=key, dense=dense, causal=bool(use_causal_mask),
                     window=sliding_window)


def as_mask_parts(mask, query_len=None, key_len=None):
    """A `MaskParts` from a `MaskParts`, a tensor mask of an allowed shape, or None."""
    if mask is None:
        return MaskParts()
    if isinstance(mask, MaskParts):
        return mask
    return merge_mask_parts(attention_mask=mask, query_len=query_len, key_len=key_len)


def dense_keep(parts, query_len, key_len, query_offset=0, key_offset=0, key_slice=None):
    """The bool keep mask of `parts`, broadcastable to ``[B, T, S]``, or None if nothing masks.

    With `key_slice` = (start, size) only those key columns are built (for chunked attention);
    offsets shift the positions used by the causal and window parts.
    """
    keep = None

    def _and(a, b):
        return b if a is None else ops.logical_and(a, b)

    if parts.query is not None:
        keep = _and(keep, ops.expand_dims(parts.query, 2))
    if parts.key is not None:
        key = parts.key
        if key_slice is not None:
            key = ops.slice(key, (0, key_slice[0]), (ops.shape(key)[0], key_slice[1]))
        keep = _and(keep, ops.expand_dims(key, 1))
    if parts.dense is not None:
        dense = parts.dense
        if key_slice is not None:
            dense = ops.slice(dense, (0, 0, key_slice[0]),
                              (ops.shape(dense)[0], ops.shape(dense)[1], key_slice[1]))
        keep = _and(keep, dense)
    if parts.causal:
        keep = _and(keep, ops.expand_dims(
            causal_mask(query_len, key_len, query_offset, key_offset), 0))
    if parts.window is not None:
        keep = _and(keep, ops.expand_dims(
            window_mask(parts.window, query_len, key_len, query_offset, key_offset), 0))
    return keep


def reduce_to_padding(parts, what="this attention"):
    """Query and key padding ``([B, T] or None, [B, S] or None)`` for linear-time attention.

    A dense ``[B, T, S]`` part is reduced to its row and column "any" (a key is kept if some
    query may attend to it): exact for masks that are the outer product of a query and a key
    padding mask, which is what Keras' implicit masks and KerasHub's padding masks produce.

    Raises:
        ValueError: for causal or sliding-window parts, which a padding mask cannot express.
    """
    if parts.causal or parts.window is not None:
        raise ValueError(
            f"{what} reduces masks to key padding and cannot apply use_causal_mask or "
            "sliding_window; use FavorAttention(causal=True) for causal linear attention or "
            "FusedAttention for arbitrary masks."
        )
    query, key = parts.query, parts.key
    if parts.dense is not None:
        dense = parts.dense
        key_any = ops.any(dense, axis=1)
        key = key_any if key is None else ops.logical_and(key, key_any)
        if dense.shape[1] != 1:
            query_any = ops.any(dense, axis=2)
            query = query_any if query is None else ops.logical_and(query, query_any)
    return query, key
