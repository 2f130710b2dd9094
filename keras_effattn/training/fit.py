"""The one training path: `train_and_evaluate(config, build_model, train, evaluation, output_dir)`.

Scripts (`experiments/train.py`), notebooks and tests all call this function. It

1. claims `output_dir` for this run: a folder holding another run's results (a different config
   or data fingerprint) is a `ValueError`; a finished folder of the same run is returned as is;
   an unfinished one is resumed. Under a multi-worker strategy every worker runs this whole
   path, but only the chief writes `output_dir`; the others write a local copy
   (`keras_effattn.training.distribute.worker_folder`), deleted when the run finishes;
2. builds the model inside the precision scope and the distribution strategy's scope, applies
   freezing and remat, builds the optimiser (warmup schedule, clipping, weight decay, LLRD) and
   compiles (XLA on or off);
3. restores the saved training state when there is one (model and optimizer variables, epoch,
   step, early-stopping and best-checkpoint state) and feeds the data from exactly the batch
   where the saved state ends: each epoch's order is a seeded permutation of the training set
   (``seed + epoch``), so a resumed run sees the same batches as an uninterrupted one;
4. trains with `model.fit` (Keras progress bars), saving state every epoch and every N steps;
5. evaluates (accuracy, macro/per-class P/R/F1, confusion matrix, loss, latency, throughput,
   inference peak memory) and writes the run folder atomically: ``config.json``,
   ``metrics.json``, ``epochs.csv``, ``training_curves.png``, ``confusion_matrix.png``,
   ``report.md``, ``model.keras``, ``tensorboard/``, and ``DONE`` last. ``status.json`` says
   "running", "failed" (with the error), "diverged" or "finished"; only a folder with ``DONE``
   is finished. The energy tracker is stopped on every path out, failures included.

A training loss that becomes NaN or infinite stops the run at that step (`DivergenceGuard`):
``status.json`` says "diverged" with the epoch, step, global step and loss, no ``metrics.json``
or ``DONE`` is written, and `TrainingDiverged` (a ValueError) is raised. Running the same
settings into that folder again raises it again instead of resuming: the seed fixes the data
order and the initial weights, so a resume would diverge at the same step. Lower the learning
rate or clip gradients (a new run: a new folder, or ``overwrite=True``).

Classification or regression is decided by the data: float labels without class names (a
regression `TextDataset` such as STS-B, or a float ``y``) make a regression run, which needs a
model with one output (``build_classifier(num_classes=1)``), trains on mean squared error and
evaluates Pearson/Spearman correlation, MSE, RMSE and MAE (``predictions.png``, a scatter of
predicted against true scores, replaces the confusion matrix).

The data are anything with ``.texts``/``.labels`` (a `keras_effattn.data.TextDataset`, single
texts or text pairs) or a tuple ``(x, y)`` of arrays (``x`` may be a dict of arrays, or a tuple
``(texts_a, texts_b)`` of pairs). A KerasHub task model's ``preprocessor`` is applied inside the
tf.data pipeline (`model_inputs_fn`), to single texts and to pairs alike.

Example:

>>> import keras, numpy as np, tempfile
>>> def build():
...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> x = np.random.rand(32, 4).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
>>> results = train_and_evaluate(
...     TrainConfig(epochs=2, batch_size=8, learning_rate=1e-2, energy=False, jit_compile=False),
...     build, (x, y), (x, y), tempfile.mkdtemp(), verbose=0)
>>> sorted(results)[:3]
['config_fingerprint', 'energy', 'evaluation']
"""

import dataclasses
import hashlib
import importlib.util
import json
import pathlib
import shutil
import time
import traceback

import keras
import numpy as np

from keras_effattn.data.pipeline import without_autotune
from keras_effattn.training import callbacks as cb
from keras_effattn.training import evaluate as ev
from keras_effattn.training import report
from keras_effattn.training.distribute import (
    build_from_spec,
    get_strategy,
    is_chief,
    worker_folder,
)
from keras_effattn.training.energy import EnergyMeter
from keras_effattn.training.optimizers import build_optimizer, find_backbone
from keras_effattn.training.precision import precision_scope
from keras_effattn.training.remat import enable_remat
from keras_effattn.utils import io
from keras_effattn.utils.memory import peak_rss_bytes
from keras_effattn.utils.metadata import run_metadata

DONE = "DONE"
STATUS = "status.json"
CHECKPOINT_DIR = "checkpoint"
# Settings that change how a run is observed, not what it computes: a folder may be resumed
# with different values.
RUNTIME_FIELDS = ("energy", "country_iso_code", "save_every_n_steps", "tensorboard", "save_model")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything the engine needs besides the model builder and the data.

    Args:
        epochs: int, default 1.
        batch_size: int, default 16. Global batch (split across replicas under a strategy).
        eval_batch_size: int, default 64.
        learning_rate: float, default 5e-5. Peak learning rate.
        optimizer: str, default "adamw". "adamw", "adam" or "sgd" (momentum `momentum`).
        schedule: str, default "linear". "linear", "cosine" or "constant" after warmup.
        warmup_ratio: float, default 0.1. Warmup as a fraction of all steps.
        weight_decay: float, default 0.01.
        clipnorm: float or None, default 1.0. Global gradient-norm clipping.
        momentum: float, default 0.9 (SGD).
        layer_decay: float, default 1.0. Layer-wise LR decay (e.g. 0.95); 1.0 turns it off.
        label_smoothing: float, default 0.0.
        freeze_embeddings: bool, default False. Freeze the backbone's token embedding.
        freeze_layers: int, default 0. Freeze the bottom N encoder layers (and the embeddings).
        precision: str, default "float32". "float32", "mixed_float16", "mixed_bfloat16", "auto".
        remat: bool, default False. Rematerialise the encoder layers (gradient checkpointing).
        jit_compile: bool or "auto", default True. XLA for the train/predict steps.
        strategy: str, default "default". "default", "mirrored", "multi_worker" or "tpu".
        seed: int, default 0. Seeds weights' init (via Keras), dropout and the data order.
        save_every_n_steps: int or None, default None. Save resumable state this often
            (always at each epoch end).
        early_stopping_patience: int or None. Stop after this many epochs without improvement
            of `monitor` (needs validation data for "val_*").
        monitor: str, default "val_loss". Metric for early stopping and the best checkpoint.
        restore_best: bool, default False. Evaluate the best checkpoint instead of the last
            weights (needs validation data).
        energy: bool, default True. Track energy with CodeCarbon's offline tracker.
        country_iso_code: str, default "USA". Grid carbon intensity for the energy estimate.
        tensorboard: bool, default True. Write TensorBoard logs (skipped, and recorded as
            false in the results, when the `tensorboard` package is not installed).
        save_model: bool, default True. Save the trained model as ``model.keras``.
        name: str, default "". A label for reports.
        extra: dict, default {}. Caller's settings (dataset, backbone, attention spec, ...),
            recorded in ``config.json`` and part of the run's fingerprint.
    """

    epochs: int = 1
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    optimizer: str = "adamw"
    schedule: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    clipnorm: float | None = 1.0
    momentum: float = 0.9
    layer_decay: float = 1.0
    label_smoothing: float = 0.0
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    precision: str = "float32"
    remat: bool = False
    jit_compile: bool | str = True
    strategy: str = "default"
    seed: int = 0
    save_every_n_steps: int | None = None
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"
    restore_best: bool = False
    energy: bool = True
    country_iso_code: str = "USA"
    tensorboard: bool = True
    save_model: bool = True
    name: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        positive = ("epochs", "batch_size", "eval_batch_size")
        for field in positive:
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0, got {self.freeze_layers}.")
        if self.save_every_n_steps is not None and self.save_every_n_steps < 1:
            raise ValueError(
                f"save_every_n_steps must be >= 1 or None, got {self.save_every_n_steps}."
            )
        if self.early_stopping_patience is not None and self.early_stopping_patience < 0:
            raise ValueError(
                f"early_stopping_patience must be >= 0 or None, got "
                f"{self.early_stopping_patience}."
            )
        if self.jit_compile not in (True, False, "auto"):
            raise ValueError(f"jit_compile must be True, False or 'auto', got {self.jit_compile!r}.")

    def to_dict(self):
        return dataclasses.asdict(self)

    def fingerprint(self, data_fingerprint=""):
        """A hash of the settings that determine the results (not `RUNTIME_FIELDS`)."""
        settings = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        text = json.dumps(io.to_jsonable(settings), sort_keys=True) + data_fingerprint
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass
class _Split:
    x: object  # list of str, array, or dict of arrays
    y: np.ndarray
    class_names: tuple
    name: str

    def __len__(self):
        return len(self.y)

    @property
    def is_regression(self):
        """Float labels and no class names: scores to regress (e.g. STS-B)."""
        return not self.class_names and self.y.dtype.kind == "f"


def _as_split(data, name):
    if data is None:
        return None
    if hasattr(data, "texts") and hasattr(data, "labels"):
        if getattr(data, "text_pairs", None) is not None:
            x = (list(data.texts), list(data.text_pairs))
        else:
            x = list(data.texts)
        return _Split(x, np.asarray(data.labels), tuple(getattr(data, "class_names", ())), name)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        y = np.asarray(y)
        parts = x.values() if isinstance(x, dict) else (x if isinstance(x, tuple) else [x])
        lengths = {len(v) for v in parts}
        if lengths != {len(y)}:
            raise ValueError(
                f"{name}: inputs have {sorted(lengths)} rows for {len(y)} labels; give one "
                "label per example."
            )
        if len(y) == 0:
            raise ValueError(f"{name} is empty; give at least one example.")
        return _Split(x, y, (), name)
    raise ValueError(
        f"{name} must be a TextDataset (with .texts and .labels) or a tuple (x, y) of arrays, "
        f"got {type(data).__name__}."
    )


def _data_fingerprint(*splits):
    digest = hashlib.sha256()
    for split in splits:
        if split is None:
            digest.update(b"none")
            continue
        digest.update(np.ascontiguousarray(split.y).tobytes())
        x = split.x
        parts = x if isinstance(x, tuple) else (x,)
        for part in parts:
            if isinstance(part, dict):
                for key in sorted(part):
                    digest.update(key.encode())
                    digest.update(np.ascontiguousarray(part[key]).tobytes())
            elif isinstance(part, list) and part and isinstance(part[0], str):
                for text in part:
                    digest.update(text.encode("utf-8", "surrogatepass"))
                    digest.update(b"\0")
            else:
                digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()[:16]


def _num_outputs(model):
    outputs = getattr(model, "outputs", None)
    if outputs:
        return outputs[0].shape[-1]
    return None


def _check_task(splits, num_outputs):
    """Raises ValueError unless the splits agree on the task and the model's outputs fit it."""
    kinds = {split.name: split.is_regression for split in splits if split is not None}
    if len(set(kinds.values())) > 1:
        raise ValueError(
            "The data mix classification and regression labels: "
            + ", ".join(f"{name}: {'float scores' if r else 'class ids'}"
                        for name, r in kinds.items())
            + ". Give every split the same kind of labels (int class ids or float scores)."
        )
    regression = next(iter(kinds.values()))
    if regression and num_outputs != 1:
        raise ValueError(
            f"The labels are float scores without class names (a regression task), but the model "
            f"has {num_outputs} outputs. Build a one-output regressor "
            "(build_classifier(..., num_classes=1)), or, for classification, give int class ids."
        )
    if not regression and num_outputs == 1:
        raise ValueError(
            "The model has one output (a regressor), but the labels are class ids. Build the "
            "model with num_classes >= 2 for classification, or give float scores (a "
            "TextDataset with class_names=()) for regression."
        )
    return regression


def _check_labels(split, num_classes):
    y = split.y
    if y.dtype.kind == "f" and np.any(y != np.round(y)):
        raise ValueError(
            f"{split.name}: labels must be whole class ids for classification, got e.g. "
            f"{y[y != np.round(y)][:3].tolist()}."
        )
    bad = (y < 0) | (y >= num_classes)
    if np.any(bad):
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{split.name}: label {y[first]!r} at index {first} is outside the class range "
            f"[0, {num_classes}) of the model's {num_classes} outputs; fix the labels or build "
            "the model with num_classes covering them."
        )


def _x_constants(x):
    import tensorflow as tf

    if isinstance(x, dict):
        return {k: tf.constant(np.asarray(v)) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(tf.constant(part) for part in x)
    return tf.constant(x if isinstance(x, list) else np.asarray(x))


def _gather(constants, index):
    import tensorflow as tf

    if isinstance(constants, dict):
        return {k: tf.gather(v, index) for k, v in constants.items()}
    if isinstance(constants, tuple):
        return tuple(tf.gather(v, index) for v in constants)
    return tf.gather(constants, index)


def _labels_constant(split):
    """Labels as a tensor: int32 class ids, or float32 scores shaped [N, 1] like the output."""
    import tensorflow as tf

    if split.is_regression:
        return tf.constant(split.y.astype(np.float32)[:, None])
    return tf.constant(split.y.astype(np.int32))


def epoch_order(num_examples, batch_size, seed, epoch):
    """The example indices epoch `epoch` trains on, in order (full batches only)."""
    permutation = np.random.RandomState((seed * 100_003 + epoch) % 2**32).permutation(num_examples)
    return permutation[: (num_examples // batch_size) * batch_size]


def model_inputs_fn(model):
    """The function that turns a batch of raw inputs into `model`'s inputs inside tf.data.

    A KerasHub task's ``preprocessor`` is applied here (not inside `fit`/`predict`) by
    `keras_effattn.training.evaluate.apply_preprocessor`, to a string tensor or to a tuple
    ``(texts_a, texts_b)`` of text pairs (packed into one sequence), and boolean
    tensors (padding masks) become int32: under a `tf.distribute` strategy Keras averages the
    first batch across replicas to build the model, which fails for booleans.
    """
    import tensorflow as tf

    preprocessor = getattr(model, "preprocessor", None)

    def to_inputs(x):
        if preprocessor is not None:
            x = ev.apply_preprocessor(preprocessor, x)
        return tf.nest.map_structure(
            lambda t: tf.cast(t, tf.int32) if t.dtype == tf.bool else t, x)

    return to_inputs


def train_stream(split, batch_size, seed, epochs, start_step, num_classes, one_hot,
                 to_inputs=None):
    """A `tf.data` pipeline of training batches from global step `start_step` to the end.

    `to_inputs` (see `model_inputs_fn`) is mapped over each batch of raw inputs.
    """
    import tensorflow as tf

    steps_per_epoch = len(split) // batch_size
    first_epoch = start_step // steps_per_epoch
    orders = [epoch_order(len(split), batch_size, seed, e) for e in range(first_epoch, epochs)]
    indices = np.concatenate(orders)[(start_step - first_epoch * steps_per_epoch) * batch_size:]
    constants = _x_constants(split.x)
    labels = _labels_constant(split)

    def lookup(index):
        y = tf.gather(labels, index)
        if one_hot:
            y = tf.one_hot(y, num_classes)
        return _gather(constants, index), y

    def lookup_inputs(index):
        x, y = lookup(index)
        return (to_inputs(x) if to_inputs else x), y

    ds = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lookup_inputs, num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune(ds.prefetch(tf.data.AUTOTUNE))


def _evaluate(model, split, batch_size, to_inputs, regression):
    features = feature_stream(split, batch_size, to_inputs)
    if regression:
        return ev.evaluate_regressor(model, features, split.y, preprocess=False)
    return ev.evaluate_classifier(
        model, features, split.y, split.class_names or None, preprocess=False)


def evaluate_model(model, evaluation, batch_size=64):
    """Evaluates a trained model on held-out data exactly as `train_and_evaluate` ends.

    Args:
        model: a Keras classifier (logits per class) or regressor (one output), with its
            ``preprocessor`` when it takes raw text.
        evaluation: a `TextDataset` (or ``(x, y)``), as for `train_and_evaluate`.
        batch_size: int, default 64.

    Returns:
        `keras_effattn.training.evaluate.evaluate_classifier`'s (or `evaluate_regressor`'s)
        dict: metrics, ``inference`` and ``predictions``.
    """
    split = _as_split(evaluation, "evaluation")
    return _evaluate(model, split, batch_size, model_inputs_fn(model),
                     regression=_num_outputs(model) == 1)


def feature_stream(split, batch_size, to_inputs=None):
    """Batched model inputs of `split`, in order, without labels."""
    import tensorflow as tf

    constants = _x_constants(split.x)

    def lookup(index):
        x = _gather(constants, index)
        return to_inputs(x) if to_inputs else x

    ds = tf.data.Dataset.range(len(split)).batch(batch_size)
    return without_autotune(
        ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def labelled_stream(split, batch_size, num_classes, one_hot, to_inputs=None):
    """Batched ``(inputs, labels)`` of `split`, in order (validation)."""
    import tensorflow as tf

    constants = _x_constants(split.x)
    labels = _labels_constant(split)

    def lookup(index):
        y = tf.gather(labels, index)
        x = _gather(constants, index)
        return (to_inputs(x) if to_inputs else x), (tf.one_hot(y, num_classes) if one_hot else y)

    ds = tf.data.Dataset.range(len(split)).batch(batch_size)
    return without_autotune(ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))


def apply_freezing(model, freeze_embeddings=False, freeze_layers=0):
    """Freezes the backbone's token embedding and/or its bottom `freeze_layers` encoder layers.

    Freezing any encoder layer also freezes the embeddings below it. Returns the number of
    variables made non-trainable.
    """
    if not freeze_embeddings and not freeze_layers:
        return 0
    backbone = find_backbone(model)
    if backbone is None:
        raise ValueError(
            "Freezing needs a backbone with `transformer_layers` (a KerasHub encoder); none "
            f"found in {model.name!r}. Set freeze_embeddings=False and freeze_layers=0."
        )
    layers = list(backbone.transformer_layers)
    if freeze_layers > len(layers):
        raise ValueError(
            f"freeze_layers={freeze_layers} exceeds the backbone's {len(layers)} encoder layers."
        )
    frozen = []
    embedding = getattr(backbone, "token_embedding", None)
    if embedding is None:
        embedding = getattr(backbone, "embeddings_layer", None)
    if freeze_layers:
        frozen += [layer for layer in backbone.layers if layer not in layers
                   and layer.weights and "embed" in layer.name]
        frozen += layers[:freeze_layers]
    elif embedding is not None:
        frozen.append(embedding)
    else:
        raise ValueError(f"No token embedding found on backbone {backbone.name!r} to freeze.")
    count = 0
    for layer in frozen:
        count += len(layer.trainable_weights)
        layer.trainable = False
    return count


class _EpochCsv(keras.callbacks.Callback):
    """Writes the resumable checkpoint's epoch rows to ``epochs.csv`` after each epoch."""

    def __init__(self, checkpoint, path):
        super().__init__()
        self.checkpoint, self.path = checkpoint, path

    def on_epoch_end(self, epoch, logs=None):
        io.write_csv(self.path, self.checkpoint.history)


def prepare_output_dir(output_dir, fingerprint, overwrite=False):
    """Claims `output_dir` for the run with `fingerprint`.

    A new (missing or empty) folder is created and marked as a run folder
    (`keras_effattn.utils.io.claim_folder`). With `overwrite`, an existing folder is deleted
    first, but only when it is a run folder this library marked (or empty): any other folder,
    e.g. ``"."`` or a folder of the user's files, is refused and left untouched.

    Returns:
        "new", "resume" or "finished".

    Raises:
        ValueError: when the folder holds another run's results or files that are not a run,
            or `overwrite` is asked for a folder that is not a keras_effattn run folder.
    """
    folder = pathlib.Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output_dir {folder} is a file; give a folder path.")
    if overwrite:
        io.remove_owned_folder(folder, kinds=("run",))
    if not io.folder_contents(folder):
        io.claim_folder(folder, "run", fingerprint)
        return "new"
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"output_dir {folder} is not empty and holds no config.json, so it is not a "
            "keras_effattn run folder; choose a new or empty output_dir."
        )
    previous = io.read_json(config_path).get("fingerprint")
    if previous != fingerprint:
        raise ValueError(
            f"output_dir {folder} holds another run's results (fingerprint {previous}, this run "
            f"{fingerprint}: a different config or data). Choose a new output_dir, or pass "
            "overwrite=True (--overwrite) to replace it."
        )
    return "finished" if (folder / DONE).is_file() else "resume"


def tensorboard_available():
    """True when the `tensorboard` package (needed for TensorBoard logs) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def _loss_and_metrics(one_hot, label_smoothing, regression=False):
    if regression:
        return keras.losses.MeanSquaredError(), [
            keras.metrics.MeanAbsoluteError(name="mae"),
            keras.metrics.RootMeanSquaredError(name="rmse"),
        ]
    if one_hot:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        return loss, [keras.metrics.CategoricalAccuracy(name="accuracy")]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def train_and_evaluate(
    config,
    build_model,
    train,
    evaluation,
    output_dir,
    validation=None,
    callbacks=(),
    overwrite=False,
    verbose="auto",
    strategy=None,
    task_metrics=None,
):
    """Trains a classifier (or regressor), evaluates it, and writes a resumable run folder.

    Args:
        config: `TrainConfig`.
        build_model: callable taking no arguments and returning an uncompiled Keras model whose
            first output is [batch, num_classes] logits (e.g. a KerasHub `TextClassifier` with
            ``activation=None``), or [batch, 1] scores for regression data (float labels, no
            class names; e.g. ``build_classifier(num_classes=1)``). It is called inside the
            precision and strategy scopes.
        train: training data (a `TextDataset` or a tuple ``(x, y)``).
        evaluation: held-out data evaluated after training (same forms).
        output_dir: str or path. The run folder (see the module docstring).
        validation: optional data evaluated after each epoch (early stopping, best checkpoint).
        callbacks: extra Keras callbacks for `fit` (e.g. a test's crash injector).
        overwrite: bool, default False. Delete an existing run folder first (only a folder
            this library marked as a run folder, or an empty one; anything else is refused).
        verbose: Keras `fit` verbosity ("auto", 0, 1, 2).
        strategy: a `tf.distribute.Strategy` or None to build one from ``config.strategy``.
        task_metrics: optional callable ``(y_true, y_pred) -> dict`` of extra metrics stored as
            ``evaluation["task_metrics"]``, e.g. ``functools.partial(glue_metrics, "cola")``.

    Returns:
        The results dict also written to ``metrics.json``.

    Raises:
        ValueError: bad settings or data (labels outside the class range, regression labels
            for a many-output model or class ids for a one-output model, label smoothing on a
            regression task, a batch larger than the training set, an output folder holding
            another run's results).
        TrainingDiverged: the training loss became NaN or infinite (status.json says
            "diverged", no DONE), or `output_dir` holds a run of these settings that diverged.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}.")
    wall_start = time.perf_counter()
    train_split = _as_split(train, "train")
    eval_split = _as_split(evaluation, "evaluation")
    val_split = _as_split(validation, "validation")
    if train_split is None or eval_split is None:
        raise ValueError("train and evaluation data are both required.")
    if train_split.is_regression and config.label_smoothing > 0:
        raise ValueError(
            f"label_smoothing={config.label_smoothing} applies to class labels, but the training "
            "data are float scores (regression); set label_smoothing=0."
        )
    if config.batch_size > len(train_split):
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the training set "
            f"({len(train_split)} examples); lower batch_size or use more training data."
        )
    uses_monitor = config.restore_best or config.early_stopping_patience is not None
    if uses_monitor and val_split is None and config.monitor.startswith("val_"):
        raise ValueError(
            f"monitor={config.monitor!r} (early stopping / restore_best) needs validation "
            "data; pass validation=... or monitor a training metric such as 'loss'."
        )
    fingerprint = config.fingerprint(_data_fingerprint(train_split, eval_split, val_split))
    folder = pathlib.Path(output_dir)
    strategy = strategy or get_strategy(config.strategy)
    worker = not is_chief(strategy)
    if worker:  # trains in step with the chief; writes a local copy of the run, not output_dir
        if (folder / DONE).is_file() and prepare_output_dir(folder, fingerprint) == "finished":
            return io.read_json(folder / "metrics.json")  # the chief will not train either
        folder = worker_folder(strategy, fingerprint)
    state_of_folder = prepare_output_dir(folder, fingerprint, overwrite)
    if state_of_folder == "finished":
        return io.read_json(folder / "metrics.json")
    if state_of_folder == "resume":
        _refuse_diverged(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = folder / CHECKPOINT_DIR
    if state_of_folder == "new":
        io.write_json(
            folder / "config.json",
            {
                "fingerprint": fingerprint,
                "config": config.to_dict(),
                "data": {
                    "train_examples": len(train_split),
                    "evaluation_examples": len(eval_split),
                    "validation_examples": 0 if val_split is None else len(val_split),
                    "class_names": list(train_split.class_names),
                },
                "metadata": run_metadata(),
            },
        )
    io.write_json(folder / STATUS, {"status": "running", "fingerprint": fingerprint})
    energy = EnergyMeter(enabled=config.energy, country_iso_code=config.country_iso_code)
    try:
        results = _run(
            config, build_model, train_split, eval_split, val_split, folder, checkpoint_dir,
            callbacks, verbose, strategy, fingerprint, wall_start, task_metrics, energy,
        )
    except cb.TrainingDiverged as error:
        io.write_json(folder / STATUS, {"status": "diverged", "fingerprint": fingerprint,
                                        "error": str(error), "diverged": error.to_dict()})
        raise
    except BaseException as error:
        io.write_json(
            folder / STATUS,
            {
                "status": "failed",
                "fingerprint": fingerprint,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=20),
                "resumable": cb.ResumableCheckpoint.load_state(checkpoint_dir) is not None,
            },
        )
        raise
    finally:
        energy.stop()  # on every failure path too (a no-op when `_run` stopped it)
    if worker:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def _refuse_diverged(folder):
    """Raises `TrainingDiverged` again for a run folder whose status is "diverged".

    The seed fixes the data order and the initial weights, so resuming the same settings from
    the last finite checkpoint repeats the divergence: the user changes the learning rate or
    clipping (a new run) or starts over with overwrite.
    """
    status_path = folder / STATUS
    status = io.read_json(status_path) if status_path.is_file() else {}
    if status.get("status") == "diverged" and status.get("diverged"):
        raise cb.TrainingDiverged.from_dict(status["diverged"])


def _run(config, build_model, train_split, eval_split, val_split, folder, checkpoint_dir,
         callbacks, verbose, strategy, fingerprint, wall_start, task_metrics, energy):
    keras.utils.set_random_seed(config.seed)
    state = cb.ResumableCheckpoint.load_state(checkpoint_dir)
    steps_per_epoch = len(train_split) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    one_hot = config.label_smoothing > 0
    with precision_scope(config.precision) as policy, strategy.scope():
        model = build_model()
        num_classes = _num_outputs(model) or (
            len(train_split.class_names) or (1 if train_split.is_regression else None))
        if num_classes is None:
            raise ValueError(
                "Cannot tell the number of classes: the model has no symbolic outputs and the "
                "data no class_names. Use a functional model or a TextDataset."
            )
        regression = _check_task((train_split, eval_split, val_split), num_classes)
        for split in (train_split, eval_split, val_split):
            if split is not None and not regression:
                _check_labels(split, num_classes)
        apply_freezing(model, config.freeze_embeddings, config.freeze_layers)
        if config.remat:
            enable_remat(model)
        optimizer = build_optimizer(
            config.optimizer,
            config.learning_rate,
            total_steps=total_steps,
            warmup_ratio=config.warmup_ratio,
            schedule=config.schedule,
            weight_decay=config.weight_decay,
            clipnorm=config.clipnorm,
            momentum=config.momentum,
            layer_decay=config.layer_decay,
            model=model,
        )
        loss, metrics = _loss_and_metrics(one_hot, config.label_smoothing, regression)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                      jit_compile=config.jit_compile)
        if state is not None:
            cb.ResumableCheckpoint.restore(model, checkpoint_dir)

    start_epoch = state["epoch"] if state else 0
    start_step = state["step"] if state else 0
    resumed_from = start_epoch * steps_per_epoch + start_step
    history = state["history"] if state else []
    stopped = bool(state and state.get("stop_training"))

    stateful = []
    if config.early_stopping_patience is not None:
        stateful.append(keras.callbacks.EarlyStopping(
            monitor=config.monitor, patience=config.early_stopping_patience, verbose=0))
    best = None
    if config.restore_best:
        best = cb.BestCheckpoint(checkpoint_dir / "best.weights.h5", monitor=config.monitor)
        stateful.append(best)
    stats = cb.EpochStats(config.batch_size)
    checkpoint = cb.ResumableCheckpoint(
        checkpoint_dir, steps_per_epoch, config.save_every_n_steps, [*stateful, stats],
        initial_epoch=start_epoch, initial_step=start_step, history=history,
    )
    if state is not None:  # dropout random state, callback states, the epoch's running metrics
        checkpoint.resume_from(state)
    guard = cb.DivergenceGuard(steps_per_epoch, initial_epoch=start_epoch, initial_step=start_step)
    fit_callbacks = [guard, stats, *stateful]
    if config.tensorboard and tensorboard_available():
        fit_callbacks.append(keras.callbacks.TensorBoard(
            str(folder / "tensorboard"), write_graph=False, profile_batch=0))
    fit_callbacks += [checkpoint, _EpochCsv(checkpoint, folder / "epochs.csv"), *callbacks]
    to_inputs = model_inputs_fn(model)
    validation_data = None
    if val_split is not None:
        validation_data = labelled_stream(val_split, config.eval_batch_size, num_classes, one_hot,
                                          to_inputs)

    energy.start()
    train_start = time.perf_counter()
    steps_run = 0
    epoch, step = start_epoch, start_step
    while epoch < config.epochs and not stopped:
        remaining = steps_per_epoch - step
        last_epoch = config.epochs if step == 0 else epoch + 1
        data = train_stream(train_split, config.batch_size, config.seed, config.epochs,
                            epoch * steps_per_epoch + step, num_classes, one_hot, to_inputs)
        if step:  # mid-epoch: the saved running metrics need the metrics' variables now
            cb.build_metrics(model, data.element_spec)
        build_from_spec(model, data.element_spec)  # a no-op unless multi-worker
        # keras.Model.fit, not a KerasHub task's own fit: the pipeline above already applied
        # the task's preprocessor.
        keras.Model.fit(
            model,
            data,
            epochs=last_epoch,
            initial_epoch=epoch,
            steps_per_epoch=remaining if step else steps_per_epoch,
            validation_data=validation_data,
            callbacks=fit_callbacks,
            shuffle=False,  # the order is fixed by `train_stream`
            verbose=verbose,
        )
        steps_run += checkpoint.epoch * steps_per_epoch + checkpoint.step - (
            epoch * steps_per_epoch + step)
        epoch, step = checkpoint.epoch, checkpoint.step
        stopped = bool(model.stop_training)
        if epoch < last_epoch and not stopped:
            raise ValueError(
                f"Training stopped at epoch {epoch}, step {step} before epoch {last_epoch}: the "
                "data ran out. This is a bug in the data pipeline; please report it."
            )
    train_seconds = time.perf_counter() - train_start

    if config.restore_best and best is not None and best.path.is_file():
        model.load_weights(best.path)
    evaluation = _evaluate(model, eval_split, config.eval_batch_size, to_inputs, regression)
    if task_metrics is not None:
        evaluation["task_metrics"] = task_metrics(
            eval_split.y, np.asarray(evaluation["predictions"]))
    energy_result = energy.stop()

    rows = checkpoint.history
    results = {
        "config_fingerprint": fingerprint,
        "precision": policy,
        "task": "regression" if regression else "classification",
        "evaluation": evaluation,
        "training": {
            "num_examples": len(train_split),
            "steps_per_epoch": steps_per_epoch,
            "epochs_run": len(rows),
            "steps_run_this_attempt": steps_run,
            "resumed_from_step": resumed_from,
            "train_seconds": train_seconds,
            "epoch_seconds": [row.get("epoch_time_s") for row in rows],
            "train_samples_per_s": steps_run * config.batch_size / max(train_seconds, 1e-9),
            "final_train_loss": rows[-1].get("loss") if rows else None,
            "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
            "total_params": int(model.count_params()),
            "replicas": strategy.num_replicas_in_sync,
        },
        "energy": energy_result,
        "tensorboard": bool(config.tensorboard and tensorboard_available()),
        "peak_host_rss_mb": peak_rss_bytes() / 2**20,
        "wall_seconds": time.perf_counter() - wall_start,
    }
    _write_artefacts(folder, config, model, results, rows)
    return results


def _write_artefacts(folder, config, model, results, rows):
    io.write_csv(folder / "epochs.csv", rows)
    if rows:
        report.plot_training_curves(rows, folder / "training_curves.png")
    evaluation = results["evaluation"]
    if "confusion_matrix" in evaluation:
        report.plot_confusion_matrix(evaluation["confusion_matrix"], list(evaluation["per_class"]),
                                     folder / "confusion_matrix.png")
    else:
        report.plot_predicted_scores(evaluation["labels"], evaluation["predictions"],
                                     folder / "predictions.png")
    if config.save_model:
        io.save_keras_model(model, folder / "model.keras")
    io.write_json(folder / "metrics.json", results)
    io.write_text(folder / "report.md", report.markdown_report(results, config.to_dict()))
    io.write_json(folder / STATUS, {"status": "finished",
                                    "fingerprint": results["config_fingerprint"]})
    io.write_text(folder / DONE, "finished\n")
    shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
