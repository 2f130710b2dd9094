"""`tf.distribute` strategy factory: default, mirrored, multi-worker and TPU.

Keras 3 on TensorFlow trains under a `tf.distribute.Strategy`: build and compile the model inside
``strategy.scope()`` and `model.fit` splits each global batch across the replicas and all-reduces
the gradients. This module only chooses and constructs the strategy (after
``official/common/distribute_utils.py`` in tensorflow/models); the training path is the same for
every strategy.

Multi-worker training runs the same command on every machine, each with its own ``TF_CONFIG``
(`check_tf_config`); the global batch is split over all workers' replicas. Every worker runs
the whole training path (each collective op must run on every worker), but only the chief
(`is_chief`) writes the run folder; the others write a local copy (`worker_folder`), deleted
when the run finishes. `build_from_spec` works around two Keras 3 failures of `fit` under
several workers (tensorflow/tensorflow#72388, keras-team/keras#20329).

| name | strategy | where |
| --- | --- | --- |
| ``default`` | the default (no-op) strategy | one device |
| ``mirrored`` | `tf.distribute.MirroredStrategy` | all local GPUs (or given devices) |
| ``multi_worker`` | `tf.distribute.MultiWorkerMirroredStrategy` | several machines, ``TF_CONFIG`` set on each (`check_tf_config`) |
| ``tpu`` | `tf.distribute.TPUStrategy` | a TPU (``tpu_address``, "" for a local/Colab TPU) |

Example:

>>> strategy = get_strategy("default")
>>> strategy.num_replicas_in_sync
1
"""

import json
import os
import pathlib

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\' on host1 (index 1 on host2)'
)


def get_strategy(name="default", devices=None, tpu_address=""):
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: str, default "default". One of `STRATEGIES`.
        devices: list of device names for "mirrored" (e.g. ``["/cpu:0", "/cpu:1"]`` with two
            logical CPUs), or None for all local GPUs (all logical CPUs when there is no GPU).
        tpu_address: str, default "". The TPU name or grpc address for "tpu".

    Returns:
        The strategy. Build and compile the model inside ``strategy.scope()``.

    Raises:
        ValueError: an unknown name; "multi_worker" without a valid ``TF_CONFIG``, or made
            after TensorFlow initialised; "tpu" without a TPU.
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
        check_tf_config(os.environ.get("TF_CONFIG"))
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise ValueError(
                f"strategy='multi_worker' could not start ({error}). Create it first thing in "
                "the process, before any other TensorFlow op runs (experiments/train.py does)."
            ) from error
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


def check_tf_config(text):
    """Raises ValueError unless `text` (the ``TF_CONFIG`` variable) describes this task.

    ``TF_CONFIG`` is JSON with a ``cluster`` (task type -> list of ``host:port``, the same on
    every machine) and this process's ``task`` (``type`` and ``index`` into that list).

    Returns:
        The parsed dict.
    """
    if not text:
        raise ValueError(
            "strategy='multi_worker' needs the TF_CONFIG environment variable on every "
            f"machine, e.g. {TF_CONFIG_EXAMPLE}. For one machine use strategy='default' or "
            "'mirrored'."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text!r}. Use e.g. "
                         f"{TF_CONFIG_EXAMPLE}.") from error
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(hosts, list) and hosts for hosts in cluster.values()):
        raise ValueError(f"TF_CONFIG has no 'cluster' of task type -> list of 'host:port': "
                         f"{text!r}. Use e.g. {TF_CONFIG_EXAMPLE}.")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no 'task' with 'type' and 'index': {text!r}. Use "
                         f"e.g. {TF_CONFIG_EXAMPLE}.")
    hosts = cluster.get(task["type"])
    index = task["index"]
    if hosts is None or not isinstance(index, int) or not 0 <= index < len(hosts):
        raise ValueError(
            f"TF_CONFIG's task {task} is not in its cluster {cluster}: the task type must be "
            "a key of the cluster and the index a position in its list."
        )
    return config


def is_multi_worker(strategy):
    """True for a `tf.distribute.MultiWorkerMirroredStrategy` over more than one worker."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return bool(strategy.extended._in_multi_worker_mode())


def is_chief(strategy):
    """True unless `strategy` is multi-worker and this process is not its chief.

    The chief is the ``"chief"`` task of ``TF_CONFIG``, or worker 0 when the cluster has no
    chief (as in the TensorFlow multi-worker guide). Only the chief writes the run folder.
    """
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    return (task_type == "worker" and int(task_id) == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def worker_folder(strategy, fingerprint):
    """The local folder a non-chief worker writes its copy of a run into.

    Every worker runs the whole training path (each collective op must run on every worker),
    checkpoints included, but only the chief writes the real run folder; the others write
    here, in the system's temporary directory, one folder per run and task. The training
    engine deletes it when the run finishes; after a crash it holds the worker's own
    resumable state, saved at the same steps as the chief's.
    """
    import tempfile

    resolver = strategy.cluster_resolver
    name = f"keras_effattn_worker_{fingerprint}_{resolver.task_type}{resolver.task_id}"
    return pathlib.Path(tempfile.gettempdir()) / name


def build_from_spec(model, element_spec):
    """Makes `keras.Model.fit` work under a multi-worker strategy (a no-op for any other one).

    Keras 3's `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy` with several
    workers in two places, both in its TensorFlow trainer:

    - it builds the model's training state from the first batch after averaging that batch
      across the workers with `strategy.reduce`, which fails for a batch that is a nest (a dict
      of inputs with labels, as every KerasHub task gets; keras-team/keras#20329). Here the
      state (layers, compiled loss and metrics, optimizer) is built from `element_spec`
      instead (shapes and dtypes only: nothing runs on data, no random state is drawn), and
      `fit`'s own build step does the same on this model instance;
    - it averages each step's logs across the workers with ``strategy.reduce("MEAN", v,
      axis=0)``, which fails for the scalar losses and metrics ("Invalid reduction dimension
      0 for input with 0 dimensions", tensorflow/tensorflow#72388). Here the model's
      `train_step` and `test_step` return each scalar log as a one-element vector, whose
      mean over axis 0 and the replicas is the same scalar Keras expects.

    Args:
        model: a compiled Keras model, created in the strategy's scope.
        element_spec: the training dataset's ``(inputs, labels)`` spec.
    """
    import tensorflow as tf

    strategy = model.distribute_strategy
    if not is_multi_worker(strategy) or getattr(model, "_multi_worker_ready", False):
        return

    def build(iterator=None, data_batch=None):
        del iterator, data_batch
        with strategy.scope():
            model._symbolic_build(data_batch=element_spec)

    def vectors(logs):
        return tf.nest.map_structure(
            lambda t: tf.reshape(t, [1]) if tf.is_tensor(t) and t.shape.rank == 0 else t, logs)

    train_step, test_step = model.train_step, model.test_step
    build()
    model._maybe_symbolic_build = build
    model.train_step = lambda data: vectors(train_step(data))
    model.test_step = lambda data: vectors(test_step(data))
    model._multi_worker_ready = True


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
