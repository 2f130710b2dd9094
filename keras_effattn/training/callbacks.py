"""Training callbacks: per-epoch time/throughput/peak memory, resumable state, best checkpoint.

- `EpochStats` adds ``epoch_time_s``, ``train_samples_per_s``, ``host_peak_rss_mb``,
  ``device_peak_mb`` and ``learning_rate`` to each epoch's logs (so `History`, CSV and TensorBoard
  see them).
- `ResumableCheckpoint` saves the whole training state every epoch and every N steps: model and
  optimizer variables (``state.weights.h5``; Keras saves the optimizer's slots and iteration count
  with the model's weights), and ``state.json`` (epoch, step within it, global step, the finished
  epochs' logs, the state of early stopping / best checkpoint / `EpochStats`, the random state of
  every `keras.random.SeedGenerator` in the model (dropout), and mid-epoch the running sums of the
  epoch's metrics). Both files are replaced atomically, the weights first, so the JSON always
  describes weights that exist. A run resumed from it continues bit for bit: the same dropout
  masks, the same batches, and the resumed epoch's row averages all its steps.
- `BestCheckpoint` keeps the weights of the best epoch by a monitored metric (atomically).
- `DivergenceGuard` stops training at the first step whose training loss is NaN or infinite by
  raising `TrainingDiverged` (epoch, step, global step and the loss value), before any later
  callback can checkpoint the poisoned weights.

Example:

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
>>> model.compile("sgd", "mse")
>>> stats = EpochStats(samples_per_step=4)
>>> history = model.fit(np.zeros((8, 3)), np.zeros(8), batch_size=4, callbacks=[stats], verbose=0)
>>> "train_samples_per_s" in history.history
True
"""

import json
import math
import pathlib
import time

import keras
import numpy as np

from keras_effattn.utils import io
from keras_effattn.utils.memory import MemoryMeter


def current_learning_rate(optimizer):
    """The optimizer's learning rate at its current iteration, as a float."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    if isinstance(inner._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        lr = inner._learning_rate(inner.iterations)
    return float(keras.ops.convert_to_numpy(lr))


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite, so the run was stopped.

    Re-running the same settings repeats the same steps (the seed fixes the data order and the
    initial weights), so the fix is a lower learning rate or gradient clipping, in a new run.

    Args:
        epoch: int. The 1-based epoch in which the loss became non-finite (as in ``epochs.csv``).
        step: int. The 1-based step within that epoch.
        global_step: int. The 1-based training step over the whole run.
        loss: float or str. The non-finite loss (kept as text in `to_dict`: "nan", "inf").
    """

    def __init__(self, epoch, step, global_step, loss):
        self.epoch, self.step, self.global_step = int(epoch), int(step), int(global_step)
        self.loss = str(float(loss))
        super().__init__(
            f"Training diverged: the training loss became {self.loss} at epoch {self.epoch}, "
            f"step {self.step} (global step {self.global_step}). Lower the learning rate or "
            "clip gradients (clipnorm), then re-run in a new output_dir or with overwrite=True "
            "(--overwrite)."
        )

    def to_dict(self):
        """``{"epoch", "step", "global_step", "loss"}`` (JSON-safe: the loss is text)."""
        return {"epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                "loss": self.loss}

    @classmethod
    def from_dict(cls, record):
        """The exception described by a `to_dict` record (e.g. read back from status.json)."""
        return cls(record["epoch"], record["step"], record["global_step"], record["loss"])


class DivergenceGuard(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the first training step whose loss is NaN or infinite.

    Like `keras.callbacks.TerminateOnNaN`, but it records where: the epoch, the step within it
    and the global step, counting from where this `fit` call starts (a resumed run passes its
    saved position). Put it first in the callback list, so no later callback (a checkpoint)
    sees the step that diverged. Keras reports the epoch's running mean loss at each step, which
    turns non-finite at the first non-finite step.

    Args:
        steps_per_epoch: int. Steps in a full epoch.
        initial_epoch: int, default 0. The 0-based epoch this `fit` call starts in.
        initial_step: int, default 0. Steps already done in `initial_epoch` (mid-epoch resume).
        monitor: str, default "loss". The batch log to check.
    """

    def __init__(self, steps_per_epoch, initial_epoch=0, initial_step=0, monitor="loss"):
        super().__init__()
        if int(steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        self.steps_per_epoch = int(steps_per_epoch)
        self.epoch = int(initial_epoch)
        self.step = int(initial_step)
        self.monitor = monitor

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(np.asarray(keras.ops.convert_to_numpy(value)))
        if not math.isfinite(value):
            self.model.stop_training = True
            raise TrainingDiverged(self.epoch + 1, self.step,
                                   self.epoch * self.steps_per_epoch + self.step, value)


class EpochStats(keras.callbacks.Callback):
    """Records per-epoch wall time, training throughput, peak memory and the learning rate.

    The figures cover the whole epoch, also across a mid-epoch resume: `get_state` records the
    steps, seconds and host peak of the epoch so far, and `set_state` (with the saved state of
    a killed run) continues that epoch's count, so its row gives all its steps' samples over
    the time spent on them (the steps lost between the last save and the kill, and the
    restart, are not counted) and the higher host peak of both processes.

    Args:
        samples_per_step: int. Global batch size (samples per optimizer step).
    """

    def __init__(self, samples_per_step):
        super().__init__()
        if int(samples_per_step) < 1:
            raise ValueError(f"samples_per_step must be >= 1, got {samples_per_step}.")
        self.samples_per_step = int(samples_per_step)
        self._meter = MemoryMeter()
        self._epoch = None
        self._steps = 0
        self._start = time.perf_counter()
        self._carried = None
        self._carried_peak = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        carried = self._carried if self._carried and self._carried["epoch"] == epoch else {}
        self._carried = None
        self._epoch = epoch
        self._steps = int(carried.get("steps", 0))
        self._start = time.perf_counter() - float(carried.get("seconds", 0.0))
        self._carried_peak = float(carried.get("host_peak_rss_mb", 0.0))
        self._meter.start()

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        memory = self._meter.stop()
        if logs is not None:
            logs["epoch_time_s"] = elapsed
            logs["train_samples_per_s"] = self._steps * self.samples_per_step / max(elapsed, 1e-9)
            logs["host_peak_rss_mb"] = max(memory["host_peak_rss_mb"], self._carried_peak)
            if memory["device_peak_mb"] is not None:
                logs["device_peak_mb"] = memory["device_peak_mb"]
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)

    def on_train_end(self, logs=None):
        self._meter.stop()

    def get_state(self):
        """The current epoch's progress: ``{"epoch", "steps", "seconds", "host_peak_rss_mb"}``."""
        peak = max(self._meter.host_peak_mb(), self._carried_peak)
        return {"epoch": self._epoch, "steps": self._steps,
                "seconds": time.perf_counter() - self._start, "host_peak_rss_mb": peak}

    def set_state(self, state):
        """Continues the saved epoch's count when training begins in that epoch."""
        self._carried = dict(state) if state and state.get("steps") else None


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model weights whenever the monitored epoch metric improves.

    Args:
        path: str or path. A ``.weights.h5`` file, written atomically.
        monitor: str, default "val_loss". A key of the epoch logs.
        mode: str, default "auto". "min", "max", or "auto" ("max" for accuracy-like names).
    """

    def __init__(self, path, monitor="val_loss", mode="auto"):
        super().__init__()
        if not str(path).endswith(".weights.h5"):
            raise ValueError(f"BestCheckpoint path must end with '.weights.h5', got {path!r}.")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
        if mode == "auto":
            mode = "max" if any(k in monitor for k in ("acc", "f1", "auc", "corr")) else "min"
        self.path = pathlib.Path(path)
        self.monitor = monitor
        self.mode = mode
        self.best = None
        self.best_epoch = None

    def _improved(self, value):
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"BestCheckpoint monitors {self.monitor!r}, which is not in the epoch logs "
                f"({sorted(logs or {})}). Pass validation data or monitor a training metric."
            )
        value = float(value)
        if math.isfinite(value) and self._improved(value):
            self.best, self.best_epoch = value, epoch
            io.save_weights(self.model, self.path)

    def get_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state):
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")


def _early_stopping_state(callback):
    best = callback.best
    return {
        "wait": int(callback.wait),
        "best": None if best is None else float(best),
        "best_epoch": int(callback.best_epoch),
        "stopped_epoch": int(callback.stopped_epoch),
    }


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves the full training state every epoch and every `every_n_steps` steps.

    Use `ResumableCheckpoint.load_state(directory)` before training to learn where to restart,
    `restore(model)` to load the weights and optimizer state, and `resume_from(state)` on the new
    callback to continue the saved random state, callback states and running epoch metrics; the
    training loop in `keras_effattn.training.fit` does all three. What it saves and restores
    besides the weights:

    - the state of every `keras.random.SeedGenerator` of the model (dropout masks), in the
      order of ``model.variables``, restored when training begins;
    - mid-epoch, the values of ``model.metrics_variables`` (the running loss and metric sums
      and counts of the epoch so far), restored after Keras resets the metrics at the start
      of the resumed epoch, so that epoch's logs cover all its steps;
    - ``get_state()`` of each stateful callback (`EarlyStopping` is handled by its fields).

    Args:
        directory: str or path. Where ``state.weights.h5`` and ``state.json`` live.
        steps_per_epoch: int. Steps in a full epoch.
        every_n_steps: int or None. Also save every this many steps within an epoch.
        stateful_callbacks: list of callbacks whose state is saved and restored with the model:
            `BestCheckpoint`, `EpochStats` and `keras.callbacks.EarlyStopping` instances (any
            callback with ``get_state``/``set_state``).
        initial_epoch: int. The epoch this `fit` call starts in.
        initial_step: int. The step within `initial_epoch` the data starts from (mid-epoch
            resume; that epoch then runs only its remaining steps).
        history: list of dicts. Logs of the epochs finished before this `fit` call.
    """

    STATE_JSON = "state.json"
    STATE_WEIGHTS = "state.weights.h5"

    def __init__(
        self,
        directory,
        steps_per_epoch,
        every_n_steps=None,
        stateful_callbacks=(),
        initial_epoch=0,
        initial_step=0,
        history=(),
    ):
        super().__init__()
        if int(steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        if every_n_steps is not None and int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {every_n_steps}.")
        self.directory = pathlib.Path(directory)
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_n_steps = None if every_n_steps is None else int(every_n_steps)
        self.stateful_callbacks = list(stateful_callbacks)
        self.epoch = int(initial_epoch)
        self.step = int(initial_step)
        self.history = [dict(row) for row in history]
        self._pending_state = None
        self._pending_random = None
        self._pending_metrics = None

    @classmethod
    def load_state(cls, directory):
        """Returns the saved ``state.json`` dict, or None when there is no saved state."""
        path = pathlib.Path(directory) / cls.STATE_JSON
        weights = pathlib.Path(directory) / cls.STATE_WEIGHTS
        if not path.is_file() or not weights.is_file():
            return None
        return io.read_json(path)

    @classmethod
    def restore(cls, model, directory):
        """Loads the saved model and optimizer variables into `model` (built and compiled)."""
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        model.load_weights(pathlib.Path(directory) / cls.STATE_WEIGHTS)

    def set_callback_states(self, states):
        """Queues saved callback states, applied at `on_train_begin` (after theirs)."""
        self._pending_state = list(states)

    def resume_from(self, state):
        """Queues everything a saved ``state.json`` dict holds besides the weights.

        The callback states and the random state are applied at `on_train_begin`, the running
        metrics at the start of the saved epoch (after Keras resets them), when the state was
        saved mid-epoch.
        """
        self.set_callback_states(state.get("callbacks", []))
        self._pending_random = state.get("random_state")
        if state.get("step") and state.get("epoch_metrics") is not None:
            self._pending_metrics = list(state["epoch_metrics"])

    def on_train_begin(self, logs=None):
        if self._pending_random is not None:
            _assign_all(_random_state_variables(self.model), self._pending_random,
                        "random (SeedGenerator) state")
            self._pending_random = None
        if self._pending_state is None:
            return
        for callback, state in zip(self.stateful_callbacks, self._pending_state):
            if isinstance(callback, keras.callbacks.EarlyStopping):
                callback.wait = state["wait"]
                callback.best = state["best"] if state["best"] is not None else callback.best
                callback.best_epoch = state["best_epoch"]
                callback.stopped_epoch = state["stopped_epoch"]
            else:
                callback.set_state(state)
        self._pending_state = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0
            self._pending_metrics = None
        elif self._pending_metrics is not None:
            _assign_all(self.model.metrics_variables, self._pending_metrics,
                        "running epoch metrics")
            self._pending_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        every = self.every_n_steps
        if every and self.step % every == 0 and self.step < self.steps_per_epoch:
            self._save()  # the epoch end saves anyway

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({k: _scalar(v) for k, v in (logs or {}).items()})
        self.history.append(row)
        self.epoch, self.step = epoch + 1, 0
        self._save()

    def _callback_states(self):
        states = []
        for callback in self.stateful_callbacks:
            if isinstance(callback, keras.callbacks.EarlyStopping):
                states.append(_early_stopping_state(callback))
            else:
                states.append(callback.get_state())
        return states

    def _save(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        io.save_weights(self.model, self.directory / self.STATE_WEIGHTS)
        io.write_json(
            self.directory / self.STATE_JSON,
            {
                "epoch": self.epoch,
                "step": self.step,
                "global_step": self.epoch * self.steps_per_epoch + self.step,
                "optimizer_iterations": int(
                    keras.ops.convert_to_numpy(self.model.optimizer.iterations)
                ),
                "history": self.history,
                "callbacks": self._callback_states(),
                "stop_training": bool(self.model.stop_training),
                "random_state": _values(_random_state_variables(self.model)),
                "epoch_metrics": _values(self.model.metrics_variables) if self.step else None,
            },
        )


def build_metrics(model, element_spec):
    """Creates the compiled metrics' variables of `model` before its first training step.

    Keras creates them when it first traces the train step (or, under a `tf.distribute`
    strategy, in its symbolic build before `fit` starts); a mid-epoch resume needs them when
    the epoch begins, to load the saved running values. `element_spec` is the training
    dataset's ``(inputs, labels)`` spec; nothing runs on data and no random state is drawn.
    """
    unbuilt = [m for m in model.metrics if not getattr(m, "built", True)]
    if unbuilt or not model.metrics_variables:
        model._symbolic_build(data_batch=element_spec)


def _random_state_variables(model):
    """The model's `SeedGenerator` states: ``model.variables`` that are not weights."""
    weights = {id(v) for v in model.weights}
    seen, states = set(), []
    for variable in model.variables:
        if id(variable) not in weights and id(variable) not in seen:
            seen.add(id(variable))
            states.append(variable)
    return states


def _values(variables):
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in variables]


def _assign_all(variables, values, what):
    if len(variables) != len(values):
        raise ValueError(
            f"The saved training state holds {len(values)} {what} values but the model has "
            f"{len(variables)}: it was saved by a different model. Resume with the model that "
            "wrote it, or start over in a new output_dir."
        )
    for variable, value in zip(variables, values):
        variable.assign(np.asarray(value, dtype=variable.dtype).reshape(variable.shape))


def _scalar(value):
    value = np.asarray(keras.ops.convert_to_numpy(value)).item()
    return float(value) if isinstance(value, (float, int)) else value


def describe_state(state):
    """One line describing a saved state, for logs and reports."""
    return json.dumps({k: state[k] for k in ("epoch", "step", "global_step") if k in state})
