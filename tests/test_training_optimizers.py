import keras
import numpy as np
import pytest
from training_helpers import tiny_classifier

from keras_effattn.training import optimizers


@pytest.mark.parametrize(
    "decay, step, expected",
    [
        ("linear", 0, 0.25),  # warmup: (0 + 1) / 4
        ("linear", 3, 1.0),
        ("linear", 4, 1.0),  # end of warmup
        ("linear", 7, 0.5),  # 3 of the 6 decay steps done
        ("linear", 10, 0.0),
        ("cosine", 7, 0.5),
        ("cosine", 10, 0.0),
        ("constant", 9, 1.0),
    ],
    ids=lambda v: str(v),
)
def test_warmup_decay_values(decay, step, expected):
    schedule = optimizers.WarmupDecay(1.0, total_steps=10, warmup_steps=4, decay=decay)
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)


def test_schedule_config_roundtrip():
    schedule = optimizers.WarmupDecay(2e-5, 100, 10, "cosine", 0.1)
    again = optimizers.WarmupDecay.from_config(schedule.get_config())
    for step in (0, 9, 50, 100):
        assert float(again(step)) == pytest.approx(float(schedule(step)))


def _one_sgd_step(optimizer, model):
    x = np.ones((2, 4), "float32")
    with np.errstate(all="ignore"):
        before = [v.numpy().copy() for v in model.trainable_variables]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.ops.sum(model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return [
        (v.numpy() - b, g.numpy())
        for v, b, g in zip(model.trainable_variables, before, grads)
    ]


def test_lr_multipliers_scale_each_variables_update_exactly():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    first = model.layers[0]
    multipliers = {v.path: 0.25 for v in first.weights}
    optimizer = optimizers.LayerwiseSGD(learning_rate=0.1, lr_multipliers=multipliers)
    deltas = _one_sgd_step(optimizer, model)
    scales = [0.25, 0.25, 1.0, 1.0]
    for (delta, grad), scale in zip(deltas, scales):
        np.testing.assert_allclose(delta, -0.1 * scale * grad, rtol=1e-5, atol=1e-7)


def test_layerwise_multipliers_for_an_encoder():
    model = tiny_classifier(num_layers=2)
    factors = optimizers.layerwise_lr_multipliers(model, 0.5)
    layers = model.backbone.transformer_layers
    assert {factors[v.path] for v in layers[0].weights} == {0.25}
    assert {factors[v.path] for v in layers[1].weights} == {0.5}
    embedding = model.backbone.token_embedding.weights[0]
    assert factors[embedding.path] == 0.125
    head = model.output_dense.weights[0]
    assert head.path not in factors
    optimizer = optimizers.build_optimizer("adamw", 1e-3, total_steps=10, layer_decay=0.5,
                                           model=model)
    config = optimizer.get_config()
    assert config["lr_multipliers"][embedding.path] == 0.125
    assert type(optimizer).from_config(config).lr_multipliers == optimizer.lr_multipliers


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_build_optimizer_kinds_train(name):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    optimizer = optimizers.build_optimizer(name, 1e-2, total_steps=20, warmup_ratio=0.1,
                                           schedule="cosine", clipnorm=1.0)
    model.compile(optimizer, "mse")
    x = np.random.rand(32, 4).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first
    assert optimizer.clipnorm == 1.0


def test_weight_decay_skips_layer_norm_and_bias():
    optimizer = optimizers.build_optimizer("adamw", 1e-3, total_steps=5, weight_decay=0.1)
    norm = keras.layers.LayerNormalization()
    norm.build((None, 4))
    dense = keras.layers.Dense(2)
    dense.build((None, 4))
    assert not optimizer._use_weight_decay(norm.gamma)
    assert not optimizer._use_weight_decay(dense.bias)
    assert optimizer._use_weight_decay(dense.kernel)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "lamb"}, "optimizer must be one of"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"schedule": "step"}, "decay must be one of"),
        ({"clipnorm": 0}, "clipnorm"),
        ({"layer_decay": 0.9}, "needs the `model`"),
        ({"layer_decay": 1.5, "model": keras.Sequential()}, "layer_decay must be in"),
    ],
    ids=["name", "lr", "warmup", "schedule", "clipnorm", "llrd-no-model", "llrd-range"],
)
def test_bad_optimizer_settings(kwargs, match):
    args = {"name": "adamw", "learning_rate": 1e-3, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        optimizers.build_optimizer(**args)


def test_llrd_without_backbone_is_a_clear_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="transformer_layers"):
        optimizers.layerwise_lr_multipliers(model, 0.9)
