"""`tf.distribute` strategy factory: default, mirrored, multi-worker and TPU.

Keras 3 on TensorFlow trains under a `tf.distribute.Strategy`: build and compile the model inside
``strategy.scope()`` and `model.fit` splits each global batch across the replicas and all-reduces
the gradients. This module only chooses and constructs the strategy (after
``official/common/distribute_utils.py`` in tensorflow/models); the training path is the same for
every strategy.

| name | strategy | where |
| --- | --- | --- |
| ``default`` | the default (no-op) strategy | one device |
| ``mirrored`` | `tf.distribute.MirroredStrategy` | all local GPUs (or given devices) |
| ``multi_worker`` | `tf.distribute.MultiWorkerMirroredStrategy` | several machines, ``TF_CONFIG`` set by the launcher |
| ``tpu`` | `tf.distribute.TPUStrategy` | a TPU (``tpu_address``, "" for a local/Colab TPU) |

Example:

>>> strategy = get_strategy("default")
>>> strategy.num_replicas_in_sync
1
"""

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def get_strategy(name="default", devices=None, tpu_address=""):
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: str, default "default". One of `STRATEGIES`.
        devices: list of device names for "mirrored" (e.g. ``["/cpu:0", "/cpu:1"]`` with two
            logical CPUs), or None for all local GPUs (all logical CPUs when there is no GPU).
        tpu_address: str, default "". The TPU name or grpc address for "tpu".

    Returns:
        The strategy. Build and compile the model inside ``strategy.scope()``.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            cpus = tf.config.list_logical_devices("CPU")
            if len(cpus) > 1:  # logical CPUs made by split_cpu: mirror over all of them
                devices = [cpu.name for cpu in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as error:
        raise ValueError(
            f"No TPU found at tpu_address={tpu_address!r} ({error}). Use strategy='default' or "
            "'mirrored' on CPU/GPU machines, or pass the TPU's name/address."
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def split_cpu(num_devices):
    """Splits the host CPU into `num_devices` logical devices (for testing data parallelism).

    Must run before TensorFlow initialises its devices (i.e. before any op runs).

    Returns:
        The logical device names, e.g. ``["/cpu:0", "/cpu:1"]``.
    """
    import tensorflow as tf

    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as error:
        raise ValueError(
            "split_cpu must be called before TensorFlow initialises its devices; call it first "
            f"thing in the process ({error})."
        ) from error
    return [f"/cpu:{i}" for i in range(num_devices)]
