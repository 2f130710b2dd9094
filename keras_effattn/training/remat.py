"""Gradient checkpointing (rematerialisation) of a backbone's encoder layers with `keras.remat`.

`enable_remat` makes each encoder layer's forward pass run under ``keras.remat`` (on TensorFlow
``tf.recompute_grad``): its activations are dropped after the forward pass and recomputed in the
backward pass. Activation memory then grows with one layer's activations plus the layer
boundaries instead of all layers', for about one extra forward pass of compute. The maths is
unchanged: gradients equal the stored-activation ones up to floating-point reordering.

Why not ``keras.RematScope``: Keras applies remat to ``layer.call`` with all its arguments, and
``tf.recompute_grad`` accepts keyword arguments only eagerly, so encoder layers called as
``layer(x, padding_mask=mask)`` fail inside a compiled train step. We remat a closure over the
keyword arguments instead: the hidden states are the only differentiated input (masks are not
differentiable), which is what an encoder layer takes.

Example:

>>> import keras, keras_hub
>>> backbone = keras_hub.models.DistilBertBackbone(
...     vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
...     max_sequence_length=16)
>>> enable_remat(backbone)
2

References:
    Chen et al., "Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174, 2016.
"""

import keras

from keras_effattn.training.optimizers import find_backbone


def remat_layers(model):
    """The layers `enable_remat` would checkpoint: the backbone's `transformer_layers`."""
    backbone = find_backbone(model)
    if backbone is None:
        raise ValueError(
            f"remat needs a backbone with a `transformer_layers` list; none found in "
            f"{model.name!r}. Build the model inside keras.RematScope(...) instead, or "
            "turn remat off."
        )
    return list(backbone.transformer_layers)


def _remat_call(original):
    def call(inputs, *args, **kwargs):
        def forward(hidden):
            return original(hidden, *args, **kwargs)

        return keras.remat(forward)(inputs)

    call.original_call = original
    return call


def enable_remat(model, enabled=True):
    """Turns rematerialisation of every encoder layer of `model` on (or off).

    Args:
        model: a Keras model or backbone holding a `transformer_layers` list.
        enabled: bool, default True. False restores normal (stored-activation) layers.

    Returns:
        The number of encoder layers.
    """
    layers = remat_layers(model)
    for layer in layers:
        current = layer.call
        original = getattr(current, "original_call", current)
        # Instance attribute over the class method; bypasses Keras attribute tracking.
        object.__setattr__(layer, "call", _remat_call(original) if enabled else original)
        if not enabled:
            object.__delattr__(layer, "call")
    return len(layers)


def is_remat_enabled(model):
    """True when every encoder layer of `model` is rematerialised."""
    return all(hasattr(layer.call, "original_call") for layer in remat_layers(model))
