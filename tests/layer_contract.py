"""The shared Keras contract check every keras_effattn attention layer must pass.

`run_layer_contract(cls, kwargs, tmp_path)` checks, in one call: config round trip, eager and
symbolic calls (KerasHub's [B, 1, S] padding mask), padded content never changing real outputs,
a fully padded row staying finite, batch 1 and a prime length, `.keras` save/load (also with
safe_mode=True) with identical outputs, `tf.function(jit_compile=True)`, one fit step with
`model.compile(jit_compile=True)`, and the float32 / mixed_float16 / mixed_bfloat16 sweep.
"""

import keras
import numpy as np
import tensorflow as tf

DIM = 8
HEADS = 2
KEY_DIM = 4


def _inputs(batch, length, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, DIM)).astype("float32")
    mask = np.ones((batch, 1, length), "int32")
    if batch > 1:
        mask[1, 0, length - 3:] = 0  # last three keys of row 1 are padding
    return x, mask


def _model(layer, length):
    x_in = keras.Input(shape=(length, DIM), name="x")
    m_in = keras.Input(shape=(1, length), dtype="int32", name="mask")
    y = layer(x_in, x_in, attention_mask=m_in)
    return keras.Model([x_in, m_in], y)


def run_layer_contract(cls, kwargs, tmp_path, length=7, atol=1e-5):
    """Runs the whole contract on a tiny configuration of `cls(**kwargs)`."""
    kwargs = dict(num_heads=HEADS, key_dim=KEY_DIM, **kwargs)
    x, mask = _inputs(2, length)

    # Config round trip.
    layer = cls(**kwargs)
    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    assert keras.saving.get_registered_object(
        keras.saving.get_registered_name(cls)) is cls

    # Eager and symbolic calls agree.
    model = _model(layer, length)
    eager = np.asarray(layer(x, x, attention_mask=mask))
    symbolic = np.asarray(model.predict([x, mask], verbose=0))
    assert eager.shape == (2, length, DIM)
    np.testing.assert_allclose(eager, symbolic, atol=atol)

    # Padded content never changes real outputs; a fully padded row stays finite.
    x2 = x.copy()
    x2[1, length - 3:] += 5.0
    changed = np.asarray(layer(x2, x2, attention_mask=mask))
    np.testing.assert_allclose(changed[1, : length - 3], eager[1, : length - 3], atol=atol)
    none = np.zeros_like(mask)
    assert np.all(np.isfinite(np.asarray(layer(x, x, attention_mask=none))))

    # Batch 1 and a prime length.
    x13, m13 = _inputs(1, 13, seed=3)
    out13 = np.asarray(layer(x13, x13, attention_mask=m13))
    assert out13.shape == (1, 13, DIM) and np.all(np.isfinite(out13))

    # XLA.
    jitted = tf.function(lambda a, m: layer(a, a, attention_mask=m), jit_compile=True)
    np.testing.assert_allclose(np.asarray(jitted(x, mask)), eager, atol=atol)

    # .keras save/load, also in safe mode.
    path = str(tmp_path / f"{cls.__name__}.keras")
    model.save(path)
    for safe in (False, True):
        loaded = keras.saving.load_model(path, safe_mode=safe)
        np.testing.assert_array_equal(np.asarray(loaded.predict([x, mask], verbose=0)), symbolic)

    # One fit step, compiled with XLA.
    fit_model = _model(cls(**kwargs), length)
    fit_model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    history = fit_model.fit([x, mask], np.zeros_like(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    # Precision sweep: outputs in the compute dtype, finite, close to float32.
    for policy in ("mixed_float16", "mixed_bfloat16"):
        mixed = cls(**kwargs, dtype=policy)
        out = mixed(x, x, attention_mask=mask)
        mixed.set_weights(layer.get_weights())
        out = mixed(x, x, attention_mask=mask)
        assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
        out = np.asarray(out, np.float32)
        assert np.all(np.isfinite(out))
        tol = 0.05 if policy == "mixed_float16" else 0.2
        np.testing.assert_allclose(out, eager, atol=tol, rtol=tol)
        assert np.all(np.isfinite(np.asarray(mixed(x, x, attention_mask=none), np.float32)))
    return layer


def readout_inputs(layer, length=32, batch=4, seed=0):
    """Makes `layer` (one head, value_dim = width = `length`) return its attention matrix.

    The value and output projections become identities with zero bias and the value input is
    the identity matrix, so ``layer(query, value)[b, t, s]`` is the (dropped-out) attention
    weight of query t on key s: dropout can be read off the layer's own output.

    Returns:
        ``(query [B, T, length], value [B, length, length])`` float32.
    """
    query = np.random.default_rng(seed).normal(size=(batch, length, length)).astype("float32")
    value = np.broadcast_to(np.eye(length, dtype="float32"), (batch, length, length)).copy()
    layer(query, value)  # builds
    eye = np.eye(length, dtype="float32")
    layer._value_dense.kernel.assign(eye.reshape(length, 1, length))
    layer._value_dense.bias.assign(np.zeros((1, length), "float32"))
    layer._output_dense.kernel.assign(eye.reshape(1, length, length))
    layer._output_dense.bias.assign(np.zeros((length,), "float32"))
    return query, value


def check_dropout_readout(layer, rate, query, value, mask=None):
    """Dropout on the attention weights, read through `readout_inputs`.

    Checks: two training calls differ; an inference call equals the undropped weights (the
    returned scores); each training weight is 0 or weight / (1 - rate); the dropped share is
    `rate` (± 0.03 over >= 3000 weights); the mean row sum is kept; masked keys stay 0.
    """
    probs = np.asarray(layer(query, value, attention_mask=mask,
                             return_attention_scores=True)[1])[:, 0]  # [B, T, S]
    inference = np.asarray(layer(query, value, attention_mask=mask, training=False))
    np.testing.assert_allclose(inference, probs, atol=1e-6)
    first = np.asarray(layer(query, value, attention_mask=mask, training=True))
    second = np.asarray(layer(query, value, attention_mask=mask, training=True))
    assert not np.allclose(first, second), "two training calls drew the same dropout mask"
    real = probs > 0.0
    assert real.sum() >= 3000
    for out in (first, second):
        dropped = out[real] == 0.0
        assert abs(dropped.mean() - rate) < 0.03, dropped.mean()
        np.testing.assert_allclose(out[real][~dropped], probs[real][~dropped] / (1.0 - rate),
                                   rtol=1e-4, atol=1e-7)
        assert np.all(out[~real] == 0.0)
        assert abs(out.sum(-1).mean() - probs.sum(-1).mean()) < 0.05  # expectation kept
    return probs, first
