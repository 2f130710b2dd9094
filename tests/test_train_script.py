"""Smoke tests: the real `experiments.train` entry point with tiny flags into tmp_path."""

import numpy as np
import pytest
from absl.testing import flagsaver

from keras_effattn.utils import io

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


def _run(argv):
    from experiments import train

    with flagsaver.flagsaver():
        train.FLAGS(["train", *argv])
        return train.main([])


@pytest.mark.slow
def test_train_script_tiny_end_to_end(tmp_path, capsys):
    source = _write_imdb(tmp_path / "data")
    out = tmp_path / "run"
    argv = [
        f"--data_source={source}", f"--data_dir={tmp_path / 'data'}", "--backbone=tiny",
        "--train_per_class=6", "--eval_per_class=6", "--max_length=32", "--batch_size=4",
        "--epochs=2", "--learning_rate=1e-3", "--attention=exact", "--xla=false",
        "--energy=false", f"--output_dir={out}",
    ]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and str(out.name) in printed
    for name in ("DONE", "config.json", "metrics.json", "epochs.csv", "training_curves.png",
                 "confusion_matrix.png", "report.md", "model.keras"):
        assert (out / name).is_file(), name
    config = io.read_json(out / "config.json")
    assert config["config"]["extra"]["attention"] == "exact"
    assert config["config"]["extra"]["backbone"] == "tiny"
    metrics = io.read_json(out / "metrics.json")
    assert metrics["evaluation"]["num_examples"] == 12
    assert np.isfinite(metrics["evaluation"]["loss"])
    # The same folder with a different config is another run's folder: a clear error.
    with pytest.raises(ValueError, match="another run's results"):
        _run([*argv[:-1], "--learning_rate=5e-4", f"--output_dir={out}"])
    assert io.read_json(out / "metrics.json") == metrics


def test_bad_flags_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--dataset='squad' is not supported"):
        _run([f"--data_dir={tmp_path}", "--dataset=squad", f"--output_dir={tmp_path / 'r'}"])
    with pytest.raises(FileNotFoundError, match="Data folder"):
        _run([f"--data_dir={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'r'}"])
