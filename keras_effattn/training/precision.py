"""Mixed-precision policy scope: set a Keras dtype policy for one run, restore it afterwards.

Policies: ``"float32"``; ``"mixed_float16"`` (float16 compute, float32 variables; Keras wraps the
optimizer in a `keras.optimizers.LossScaleOptimizer` when a model is compiled under it, which
`wrap_loss_scale` also does explicitly); ``"mixed_bfloat16"`` (no loss scaling needed); ``"auto"``
picks ``mixed_float16`` on a GPU with compute capability >= 7.0, ``mixed_bfloat16`` on a TPU and on
a CPU with bfloat16 units (AMX-BF16 or AVX-512 BF16, e.g. Sapphire Rapids Xeons, where oneDNN runs
bf16 matmuls natively), and ``float32`` on other CPUs (AVX2-only ones such as the AMD EPYCs these
machines often are: bfloat16 is emulated there and slower than float32).

The policy is global state in Keras, so it is only ever changed inside `precision_scope`, never at
import time.

Example:

>>> import keras
>>> with precision_scope("mixed_bfloat16") as policy:
...     layer = keras.layers.Dense(2)
>>> layer.compute_dtype, policy, keras.mixed_precision.global_policy().name
('bfloat16', 'mixed_bfloat16', 'float32')

References:
    Micikevicius et al., "Mixed Precision Training", ICLR 2018.
"""

import contextlib

import keras

from keras_effattn.utils import metadata

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16", "auto")


def resolve_precision(policy):
    """Returns the concrete policy name for `policy` (resolving ``"auto"`` by device)."""
    if policy not in POLICIES:
        raise ValueError(f"precision must be one of {POLICIES}, got {policy!r}.")
    if policy != "auto":
        return policy
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and capability >= (7, 0):
            return "mixed_float16"
    if metadata.has_bf16_units():
        return "mixed_bfloat16"
    return "float32"


@contextlib.contextmanager
def precision_scope(policy="float32"):
    """Sets the global Keras dtype policy inside the block and restores the previous one.

    Args:
        policy: str, default "float32". One of `POLICIES`.

    Yields:
        The concrete policy name in force.
    """
    name = resolve_precision(policy)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def wrap_loss_scale(optimizer, policy):
    """Wraps `optimizer` in a dynamic `LossScaleOptimizer` for ``mixed_float16``.

    Other policies (and an already wrapped optimizer) are returned unchanged.
    """
    if policy == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
