"""Smoke tests: the real `experiments.train` / `experiments.train_benchmark` entry points with tiny
flags into tmp_path. Each runs in its own subprocess, as a user runs it (absl flags are global to
a process, and every script defines its own)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from keras_effattn.utils import io

REPO = pathlib.Path(__file__).resolve().parents[1]
REVIEWS = {
    "pos": ["A good film.<br />Great plot.", "Fine acting, a great story.", "Good, good film.",
            "Great fun!", "A fine and good movie.", "The best, great."],
    "neg": ["A bad film.<br />Awful plot.", "Poor acting, an awful story.", "Bad, bad film.",
            "Awful mess!", "A poor and bad movie.", "The worst, awful."],
}


def _write_imdb(root):
    for split in ("train", "test"):
        for label, texts in REVIEWS.items():
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i, text in enumerate(texts):
                rating = 9 if label == "pos" else 2
                (folder / f"{i}_{rating}.txt").write_text(text, encoding="utf-8")
    return root / "aclImdb"


def _run(module, argv):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)


@pytest.mark.slow
def test_train_script_tiny_end_to_end(tmp_path):
    source = _write_imdb(tmp_path / "data")
    out = tmp_path / "run"
    argv = [
        f"--data_source={source}", f"--data_dir={tmp_path / 'data'}", "--backbone=tiny",
        "--train_per_class=6", "--eval_per_class=6", "--max_length=32", "--batch_size=4",
        "--epochs=2", "--learning_rate=1e-3", "--attention=exact", "--energy=false",
        f"--output_dir={out}",
    ]
    done = _run("experiments.train", argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout and "results" in done.stdout
    for name in ("DONE", "config.json", "metrics.json", "epochs.csv", "training_curves.png",
                 "confusion_matrix.png", "report.md", "model.keras"):
        assert (out / name).is_file(), name
    config = io.read_json(out / "config.json")
    assert config["config"]["extra"]["attention"] == "exact"
    assert config["config"]["extra"]["backbone"] == "tiny"
    assert config["config"]["jit_compile"] is False
    metrics = io.read_json(out / "metrics.json")
    assert metrics["evaluation"]["num_examples"] == 12
    assert np.isfinite(metrics["evaluation"]["loss"])
    assert len(io.read_csv(out / "epochs.csv")) == 2
    # The same folder with a different config is another run's folder: a clear error.
    again = _run("experiments.train", [*argv[:-1], "--learning_rate=5e-4", f"--output_dir={out}"])
    assert again.returncode != 0
    assert "another run's results" in again.stderr
    assert io.read_json(out / "metrics.json") == metrics


def test_bad_flags_are_clear_errors(tmp_path):
    done = _run("experiments.train", [f"--data_dir={tmp_path}", "--dataset=squad",
                                      f"--output_dir={tmp_path / 'r'}"])
    assert done.returncode != 0
    assert "--dataset='squad' is not supported" in done.stderr
    assert not (tmp_path / "r" / "DONE").exists()


@pytest.mark.slow
def test_train_benchmark_script_tiny(tmp_path):
    out = tmp_path / "bench"
    done = _run("experiments.train_benchmark", [
        "--sizes=tiny", "--steps=1", "--repeats=1", "--variants=stock,engine_graph,torch",
        f"--output_dir={out}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "matmul peak" in done.stdout and "× torch" in done.stdout
    rows = io.read_json(out / "results.json")["rows"]
    assert [r["variant"] for r in rows] == ["stock", "engine_graph", "torch"]
    assert rows[0]["ratio_to_stock"] == 1.0 and rows[2]["ratio_to_torch"] == 1.0
    assert rows[2]["torch_version"] and not rows[2]["jit_compile"]
    assert rows[0]["ratio_to_torch"] == pytest.approx(
        rows[0]["samples_per_s"] / rows[2]["samples_per_s"])
    assert all(r["samples_per_s"] > 0 and 0 < r["fraction_of_peak"] for r in rows)
    assert io.read_csv(out / "results.csv")[1]["variant"] == "engine_graph"
