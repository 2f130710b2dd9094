import keras
import numpy as np
import pytest
import tensorflow as tf
from training_helpers import tiny_classifier

from keras_effattn.training import remat


def _grads(model, inputs, labels, jit):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs, training=False))
        return tape.gradient(loss, model.trainable_variables)

    return [tf.convert_to_tensor(g).numpy() for g in tf.function(step, jit_compile=jit)()]


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_remat_gives_the_same_gradients(jit):
    model = tiny_classifier(num_layers=2)
    inputs = model.preprocessor(tf.constant(["good film", "the plot was awful", "a"]))
    labels = tf.constant([1, 0, 1])
    reference = _grads(model, inputs, labels, jit)
    assert remat.enable_remat(model) == 2
    assert remat.is_remat_enabled(model)
    rematerialised = _grads(model, inputs, labels, jit)
    for a, b in zip(reference, rematerialised):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    remat.enable_remat(model, enabled=False)
    assert not remat.is_remat_enabled(model)
    assert "call" not in vars(model.backbone.transformer_layers[0])


def test_enable_twice_does_not_nest():
    model = tiny_classifier(num_layers=1)
    remat.enable_remat(model)
    remat.enable_remat(model)
    call = model.backbone.transformer_layers[0].call
    assert not hasattr(call.original_call, "original_call")


def test_needs_an_encoder():
    with pytest.raises(ValueError, match="transformer_layers"):
        remat.enable_remat(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


def test_backward_pass_recomputes_the_forward():
    model = tiny_classifier(num_layers=1)
    layer = model.backbone.transformer_layers[0]
    calls = []
    original = layer.call

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    object.__setattr__(layer, "call", counting)
    inputs = model.preprocessor(tf.constant(["good film", "awful"]))
    labels = tf.constant([1, 0])
    _grads(model, inputs, labels, jit=False)
    plain = len(calls)
    calls.clear()
    remat.enable_remat(model)
    _grads(model, inputs, labels, jit=False)
    assert plain == 1
    assert len(calls) == 2  # traced once forward, once more inside the recomputing gradient
