"""A training loss that turns NaN/inf stops the run (status "diverged", no DONE, no metrics), a
re-run of that folder is refused, and the energy tracker is stopped on every way out of a run."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from training_helpers import CrashAfter

from keras_effattn.training import (
    DivergenceGuard,
    TrainConfig,
    TrainingDiverged,
    train_and_evaluate,
)
from keras_effattn.utils import io

REPO = pathlib.Path(__file__).resolve().parents[1]


def _build():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def _data(n=32, seed=0):
    x = np.random.RandomState(seed).rand(n, 4).astype("float32")
    return x, (x[:, 0] > 0.5).astype("int32")


def _config(**overrides):
    settings = {"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "optimizer": "sgd",
                "energy": False, "jit_compile": False, "tensorboard": False,
                "save_model": False, "warmup_ratio": 0.0}
    settings.update(overrides)
    return TrainConfig(**settings)


class PoisonAfter(keras.callbacks.Callback):
    """Sets every trainable weight to NaN after `steps` steps, so the next step's loss is NaN.

    Extra callbacks run after the engine's own, so the engine's checkpoint of that step still
    holds finite weights."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            for variable in self.model.trainable_variables:
                variable.assign(np.full(variable.shape, np.nan, variable.dtype))


class Boom(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise RuntimeError("simulated crash inside fit")


def test_nan_loss_stops_the_run_marks_it_diverged_and_refuses_a_rerun(tmp_path):
    data, out = _data(), tmp_path / "run"
    config = _config(save_every_n_steps=1)
    # 4 steps per epoch; poisoned after global step 5, so step 6 (epoch 2, step 2) is NaN.
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 2, step 2 \(global step 6\)"
                       ) as caught:
        train_and_evaluate(config, _build, data, data, out, callbacks=[PoisonAfter(5)],
                           verbose=0)
    assert isinstance(caught.value, ValueError)  # scripts report it as one line
    assert "learning rate" in str(caught.value) and "overwrite" in str(caught.value)
    status = io.read_json(out / "status.json")
    assert status["status"] == "diverged"
    assert status["diverged"] == {"epoch": 2, "step": 2, "global_step": 6, "loss": "nan"}
    assert not (out / "DONE").exists()
    assert not (out / "metrics.json").exists()
    # The guard runs before the checkpoint: the last saved state is step 5, with finite weights.
    state = io.read_json(out / "checkpoint" / "state.json")
    assert state["global_step"] == 5
    model = _build()
    model.load_weights(out / "checkpoint" / "state.weights.h5")
    assert all(np.isfinite(w).all() for w in model.get_weights())

    # Same settings again: refused, nothing trained, nothing finished.
    with pytest.raises(TrainingDiverged, match="global step 6"):
        train_and_evaluate(config, _build, data, data, out, verbose=0)
    assert io.read_json(out / "status.json")["status"] == "diverged"
    assert not (out / "DONE").exists()

    # overwrite=True starts over and, without the poison, finishes.
    results = train_and_evaluate(config, _build, data, data, out, overwrite=True, verbose=0)
    assert (out / "DONE").is_file()
    assert np.isfinite(results["training"]["final_train_loss"])
    assert io.read_json(out / "status.json")["status"] == "finished"


def test_guard_counts_from_a_mid_epoch_resume_and_catches_inf():
    guard = DivergenceGuard(steps_per_epoch=4, initial_epoch=1, initial_step=2)
    guard.set_model(_build())
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(0, {"loss": 0.7})
    with pytest.raises(TrainingDiverged) as caught:
        guard.on_train_batch_end(1, {"loss": np.float32("inf")})
    assert caught.value.to_dict() == {"epoch": 2, "step": 4, "global_step": 8, "loss": "inf"}
    assert TrainingDiverged.from_dict(caught.value.to_dict()).to_dict() == caught.value.to_dict()
    guard.on_epoch_begin(2)  # a new epoch counts from its first step
    with pytest.raises(TrainingDiverged, match="epoch 3, step 1 "):
        guard.on_train_batch_end(0, {"loss": float("nan")})


class _FakeData:
    energy_consumed, emissions = 1e-6, 5e-8


class FakeTracker:
    """Stands in for codecarbon.OfflineEmissionsTracker and records start/stop calls."""

    instances = None  # a list, set by the fixture

    def __init__(self, **kwargs):
        self.started = self.stopped = 0
        self.final_emissions_data = None
        FakeTracker.instances.append(self)

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1
        self.final_emissions_data = _FakeData()
        return _FakeData.emissions


@pytest.fixture
def fake_tracker(monkeypatch):
    codecarbon = pytest.importorskip("codecarbon")
    FakeTracker.instances = []
    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", FakeTracker)
    return FakeTracker


@pytest.mark.parametrize("callback, error", [
    (Boom(), RuntimeError),
    (CrashAfter(2), KeyboardInterrupt),
    (PoisonAfter(2), TrainingDiverged),
], ids=["crash", "keyboard_interrupt", "diverged"])
def test_energy_tracker_is_stopped_on_every_failure(tmp_path, fake_tracker, callback, error):
    data = _data()
    with pytest.raises(error):
        train_and_evaluate(_config(energy=True), _build, data, data, tmp_path / "run",
                           callbacks=[callback], verbose=0)
    assert [(t.started, t.stopped) for t in fake_tracker.instances] == [(1, 1)]
    assert not (tmp_path / "run" / "DONE").exists()


def test_energy_tracker_is_stopped_once_on_success(tmp_path, fake_tracker):
    data = _data()
    results = train_and_evaluate(_config(energy=True, epochs=1), _build, data, data,
                                 tmp_path / "run", verbose=0)
    assert [(t.started, t.stopped) for t in fake_tracker.instances] == [(1, 1)]
    assert results["energy"]["available"] is True
    assert results["energy"]["energy_kwh"] == pytest.approx(1e-6)
    # The fake exposes no hardware: the figure is not passed off as measured.
    assert results["energy"]["measured"] is False
    assert results["energy"]["method"].startswith("estimated")


def _write_imdb(root, per_class=6):
    for split in ("train", "test"):
        for label, word in (("pos", "good great fine"), ("neg", "bad awful poor")):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{i}_{9 if label == 'pos' else 2}.txt").write_text(
                    f"A {word} film number {i}.", encoding="utf-8")
    return root / "aclImdb"


@pytest.mark.slow
def test_train_script_exits_non_zero_with_one_line_for_a_diverged_run(tmp_path):
    source, out = _write_imdb(tmp_path / "data"), tmp_path / "run"
    argv = [f"--data_source={source}", "--backbone=tiny", "--train_per_class=6",
            "--eval_per_class=2", "--max_length=16", "--batch_size=4", "--epochs=1",
            "--learning_rate=1e30", "--optimizer=sgd", "--schedule=constant",
            "--warmup_ratio=0", "--clipnorm=0", "--attention=exact", "--energy=false",
            f"--output_dir={out}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "experiments.train", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode != 0, done.stdout[-2000:]
    assert "Training diverged" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr  # one line naming the problem and the fix
    status = io.read_json(out / "status.json")
    assert status["status"] == "diverged" and status["diverged"]["global_step"] >= 1
    assert not (out / "DONE").exists() and not (out / "metrics.json").exists()
