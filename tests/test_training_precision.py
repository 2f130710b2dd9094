import keras
import numpy as np
import pytest

from keras_effattn.training import precision


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_scope_sets_and_restores(policy):
    keras.mixed_precision.set_global_policy("float32")
    with precision.precision_scope(policy) as name:
        assert keras.mixed_precision.global_policy().name == policy == name
        layer = keras.layers.Dense(2)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert layer.variable_dtype == "float32"


def test_scope_restores_after_an_exception():
    with pytest.raises(RuntimeError), precision.precision_scope("mixed_bfloat16"):
        raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("flags, expected", [
    ({"avx", "avx2", "fma"}, "float32"),  # AVX2-only (e.g. AMD EPYC): bf16 is emulated, slower
    ({"avx2", "avx512f", "avx512_vnni"}, "float32"),
    ({"avx2", "avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ({"avx2", "avx512f", "amx_bf16", "amx_int8", "amx_tile"}, "mixed_bfloat16"),
], ids=["avx2", "avx512-vnni", "avx512-bf16", "amx"])
def test_auto_on_cpu_uses_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, flags, expected):
    import tensorflow as tf

    from keras_effattn.utils import metadata

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("CPU-only expectation")
    monkeypatch.setattr(metadata, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve_precision("auto") == expected


def test_mixed_float16_trains_with_loss_scaling():
    x = np.random.rand(16, 4).astype("float32")
    y = (x[:, :1] > 0.5).astype("float32")
    with precision.precision_scope("mixed_float16"):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        optimizer = precision.wrap_loss_scale(keras.optimizers.Adam(1e-2), "mixed_float16")
        model.compile(optimizer, "mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert precision.wrap_loss_scale(optimizer, "mixed_float16") is optimizer
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.layers[0].compute_dtype == "float16"


def test_unknown_policy():
    with pytest.raises(ValueError, match="precision must be one of"):
        with precision.precision_scope("float8"):
            pass
