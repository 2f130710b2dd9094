"""Gradient checkpointing (rematerialisation) of a backbone's encoder layers with Keras' remat.

Keras decides per layer, at call time, whether to recompute its forward pass in the backward pass:
a layer created inside ``keras.RematScope(mode="full")`` is wrapped with ``keras.remat``
(``tf.recompute_grad`` on TensorFlow). Our models are usually built (or loaded from a preset)
before the training options are known, so `enable_remat` gives already-built encoder layers the
same remat mode that `keras.RematScope` would have given them at construction. Activation memory
then grows with one layer's activations plus the layer boundaries instead of all layers', for
about one extra forward pass of compute. The maths is unchanged: gradients are equal up to
floating-point reordering.

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


def enable_remat(model, enabled=True):
    """Turns rematerialisation of every encoder layer of `model` on (or off).

    Args:
        model: a Keras model or backbone holding a `transformer_layers` list.
        enabled: bool, default True. False restores normal (stored-activation) layers.

    Returns:
        The number of layers changed.
    """
    layers = remat_layers(model)
    mode = keras.RematScope(mode="full") if enabled else None
    for layer in layers:
        # The same attribute keras.RematScope sets when a layer is constructed inside it.
        layer._remat_mode = mode
    return len(layers)


def is_remat_enabled(model):
    """True when every encoder layer of `model` is rematerialised."""
    return all(getattr(layer, "_remat_mode", None) is not None for layer in remat_layers(model))
