"""A run killed with SIGKILL in the middle of an epoch and restarted with the same command loses
nothing: every epoch row, the final train loss, the evaluation and the trained weights equal an
uninterrupted run's.

The run is the real `python -m experiments.train` on the tiny backbone with FusedAttention
(``--attention=exact``) and dropout in the backbone and the head, so the resume must restore the
dropout random state, the epoch's running metrics and the data position, not just the weights.
The data are a synthetic IMDB folder written into tmp_path (no shared data needed).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_effattn.utils import io
from keras_effattn.utils.saving import load_for_inference

REPO = pathlib.Path(__file__).resolve().parents[1]
POSITIVE = ["good", "great", "fine", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "film", "was", "plot", "a", "it", "acting", "story", "and", "movie"]
BATCH, PER_CLASS, EPOCHS, EVERY = 4, 12, 3, 2
STEPS_PER_EPOCH = 2 * PER_CLASS // BATCH  # 6
# Columns that time or measure the machine, not the training: they differ between any two runs.
MACHINE_COLUMNS = ("epoch_time_s", "train_samples_per_s", "host_peak_rss_mb", "device_peak_mb")


def _write_imdb(root, per_class=PER_CLASS + 8):
    rng = np.random.RandomState(0)
    for split in ("train", "test"):
        for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                text = list(rng.choice(FILLER, size=int(rng.randint(4, 12))))
                text.insert(int(rng.randint(len(text))), str(rng.choice(words)))
                rating = 9 if label == "pos" else 2
                (folder / f"{i}_{rating}.txt").write_text(" ".join(text) + ".", "utf-8")
    return root / "aclImdb"


def _command(source, out):
    return [
        sys.executable, "-m", "experiments.train", f"--data_source={source}",
        f"--data_dir={source.parent}", "--backbone=tiny", "--attention=exact",
        "--dropout=0.2", "--backbone_dropout=0.2", f"--train_per_class={PER_CLASS}",
        "--eval_per_class=8", "--max_length=24", f"--batch_size={BATCH}",
        f"--epochs={EPOCHS}", "--learning_rate=2e-3", "--warmup_ratio=0.2",
        f"--save_every_n_steps={EVERY}", "--energy=false", "--seed=3", f"--output_dir={out}",
    ]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}


def _start(source, out):
    return subprocess.Popen(_command(source, out), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc, out, timeout=300):
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    return io.read_json(out / "metrics.json")


def _state(folder):
    try:
        return json.loads((folder / "checkpoint" / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _kill_mid_epoch(source, out, epoch, timeout=240):
    """Starts the run and SIGKILLs it once a checkpoint inside `epoch` (step > 0) is on disk."""
    proc = _start(source, out)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            state = _state(out)
            if state and (state["epoch"], state["step"] > 0) == (epoch, True):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        else:
            raise AssertionError(f"no mid-epoch checkpoint in epoch {epoch} before the run "
                                 f"ended or timed out; stderr: {proc.stderr.read()[-2000:]}")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return _state(out)


def _machine_free(row):
    return {k: v for k, v in row.items() if k not in MACHINE_COLUMNS}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_equals_an_uninterrupted_run(tmp_path):
    source = _write_imdb(tmp_path / "data")
    uninterrupted = _start(source, tmp_path / "full")  # alongside the killed run (wall time)
    try:
        killed_dir = tmp_path / "killed"
        state = _kill_mid_epoch(source, killed_dir, epoch=1)
    finally:
        full = _finish(uninterrupted, tmp_path / "full")
    # Killed inside epoch 1 (of 0..2) after a mid-epoch save: nothing finished, state mid-epoch.
    assert state["epoch"] == 1 and 0 < state["step"] < STEPS_PER_EPOCH, state
    assert len(state["history"]) == 1
    assert not (killed_dir / "DONE").exists() and not (killed_dir / "metrics.json").exists()

    resumed = _finish(_start(source, killed_dir), killed_dir)
    training = resumed["training"]
    assert training["resumed_from_step"] == STEPS_PER_EPOCH + state["step"]
    assert training["steps_run_this_attempt"] == EPOCHS * STEPS_PER_EPOCH - (
        STEPS_PER_EPOCH + state["step"])

    rows = io.read_csv(killed_dir / "epochs.csv")
    full_rows = io.read_csv(tmp_path / "full" / "epochs.csv")
    assert len(rows) == len(full_rows) == EPOCHS
    for row, full_row in zip(rows, full_rows):
        assert _machine_free(row) == _machine_free(full_row), (row, full_row)
        # Each row covers its whole epoch: its throughput and time give all its samples.
        samples = float(row["train_samples_per_s"]) * float(row["epoch_time_s"])
        assert samples == pytest.approx(STEPS_PER_EPOCH * BATCH, rel=1e-6)
    assert training["final_train_loss"] == full["training"]["final_train_loss"]
    assert training["epochs_run"] == full["training"]["epochs_run"] == EPOCHS

    evaluation, full_evaluation = resumed["evaluation"], full["evaluation"]
    assert evaluation["predictions"] == full_evaluation["predictions"]
    for key in ("accuracy", "macro_f1", "loss", "confusion_matrix", "per_class"):
        assert evaluation[key] == full_evaluation[key], key

    model = load_for_inference(killed_dir / "model.keras")
    full_model = load_for_inference(tmp_path / "full" / "model.keras")
    for weight, full_weight in zip(model.weights, full_model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), np.asarray(full_weight),
                                      err_msg=weight.path)
