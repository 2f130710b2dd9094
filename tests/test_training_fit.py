import functools
import json
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from training_helpers import CrashAfter, TinyData, pair_data, tiny_classifier, tiny_regressor

from keras_effattn.training import TrainConfig, glue_metrics, train_and_evaluate
from keras_effattn.utils import io

ARTEFACTS = {
    "DONE", "config.json", "confusion_matrix.png", "epochs.csv", "metrics.json", "model.keras",
    "report.md", "status.json", "training_curves.png",
}


def _config(**overrides):
    settings = {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "learning_rate": 3e-3,
                "warmup_ratio": 0.2, "energy": False, "jit_compile": False, "tensorboard": False,
                "seed": 3}
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.slow
def test_end_to_end_writes_all_artefacts(tmp_path):
    config = _config(tensorboard=True, energy=True, extra={"dataset": "tiny"})
    results = train_and_evaluate(config, tiny_classifier, TinyData(48), TinyData(32, seed=1),
                                 tmp_path / "run", verbose=0)
    folder = tmp_path / "run"
    names = {p.name for p in folder.iterdir()}
    assert ARTEFACTS <= names
    assert "checkpoint" not in names  # resumable state removed once finished
    assert io.read_json(folder / "status.json")["status"] == "finished"
    saved = io.read_json(folder / "config.json")
    assert saved["config"]["extra"] == {"dataset": "tiny"}
    assert saved["metadata"]["versions"]["keras"].startswith("3.")
    assert saved["data"]["train_examples"] == 48
    metrics = io.read_json(folder / "metrics.json")
    assert metrics == json.loads(json.dumps(io.to_jsonable(results)))
    ev = metrics["evaluation"]
    assert ev["num_examples"] == 32 and len(ev["predictions"]) == 32
    assert sum(map(sum, ev["confusion_matrix"])) == 32
    assert set(ev["per_class"]) == {"neg", "pos"}
    assert ev["inference"]["latency_ms_per_sample"] > 0
    rows = io.read_csv(folder / "epochs.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert metrics["training"]["epoch_seconds"] == [float(r["epoch_time_s"]) for r in rows]
    for key in ("loss", "accuracy", "epoch_time_s", "train_samples_per_s", "host_peak_rss_mb",
                "learning_rate"):
        assert rows[0][key] != ""
    assert (folder / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "eval accuracy" in (folder / "report.md").read_text()
    energy = metrics["energy"]  # CodeCarbon is installed and works offline: a real figure
    assert energy["available"] is True and energy["energy_kwh"] > 0, energy
    assert energy["method"] and isinstance(energy["measured"], bool)
    if metrics["tensorboard"]:
        assert any((folder / "tensorboard").rglob("*tfevents*"))
    loaded = keras.saving.load_model(folder / "model.keras")
    logits = loaded.predict(TinyData(32, seed=1).texts, batch_size=16, verbose=0)
    assert np.asarray(logits).argmax(-1).tolist() == ev["predictions"]
    # Re-running into a finished folder of the same run returns its results without training.
    again = train_and_evaluate(config, tiny_classifier, TinyData(48), TinyData(32, seed=1),
                               folder, verbose=0, callbacks=[CrashAfter(1)])
    assert again == metrics


def _fused_dropout_classifier():
    """Tiny classifier with FusedAttention and dropout in the backbone, attention and head."""
    from keras_effattn.models import build_classifier

    source = {"num_layers": 2, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32,
              "max_sequence_length": 16}
    return build_classifier(source, attention="exact", num_classes=2, max_length=12,
                            dropout=0.2, backbone_dropout=0.2)


MACHINE_COLUMNS = ("epoch_time_s", "train_samples_per_s", "host_peak_rss_mb", "device_peak_mb")


@pytest.mark.slow
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    """A crash mid-epoch then a resume gives the uninterrupted run's every epoch row, weights and
    evaluation exactly, with dropout on: the dropout random state, the epoch's running metrics
    and the data position are all restored (tests/test_resume_sigkill.py does it with SIGKILL
    on the real script)."""
    config = _config(epochs=3, save_every_n_steps=3)
    train, evaluation = TinyData(48), TinyData(32, seed=1)
    full = train_and_evaluate(config, _fused_dropout_classifier, train, evaluation,
                              tmp_path / "full", verbose=0)
    folder = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):  # 6 steps per epoch: dies at step 4 of epoch 2
        train_and_evaluate(config, _fused_dropout_classifier, train, evaluation, folder,
                           verbose=0, callbacks=[CrashAfter(10)])
    status = io.read_json(folder / "status.json")
    assert status["status"] == "failed" and status["resumable"]
    assert not (folder / "DONE").exists() and not (folder / "metrics.json").exists()
    state = io.read_json(folder / "checkpoint" / "state.json")
    assert (state["epoch"], state["step"], state["optimizer_iterations"]) == (1, 3, 9)
    assert len(state["random_state"]) > 0 and state["epoch_metrics"]
    resumed = train_and_evaluate(config, _fused_dropout_classifier, train, evaluation, folder,
                                 verbose=0)
    assert resumed["training"]["resumed_from_step"] == 9
    assert resumed["training"]["steps_run_this_attempt"] == 9
    assert resumed["training"]["epochs_run"] == 3
    assert resumed["training"]["final_train_loss"] == full["training"]["final_train_loss"]
    assert resumed["evaluation"]["predictions"] == full["evaluation"]["predictions"]
    assert resumed["evaluation"]["loss"] == full["evaluation"]["loss"]
    rows = io.read_csv(folder / "epochs.csv")
    full_rows = io.read_csv(tmp_path / "full" / "epochs.csv")
    assert len(rows) == len(full_rows) == 3
    for row, full_row in zip(rows, full_rows):
        assert ({k: v for k, v in row.items() if k not in MACHINE_COLUMNS}
                == {k: v for k, v in full_row.items() if k not in MACHINE_COLUMNS})
        samples = float(row["train_samples_per_s"]) * float(row["epoch_time_s"])
        assert samples == pytest.approx(6 * 8, rel=1e-6)  # the resumed epoch counts all 6 steps


def test_other_runs_folder_is_an_error_and_untouched(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    io.write_json(folder / "config.json", {"fingerprint": "0123456789abcdef"})
    io.write_text(folder / "DONE", "finished\n")
    with pytest.raises(ValueError, match="another run's results"):
        train_and_evaluate(_config(), tiny_classifier, TinyData(16), TinyData(8), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["DONE", "config.json"]
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a keras_effattn run folder"):
        train_and_evaluate(_config(), tiny_classifier, TinyData(16), TinyData(8), stray)


@pytest.mark.parametrize(
    "config, train, evaluation, match",
    [
        (_config(batch_size=32), TinyData(16), TinyData(8), "larger than the training set"),
        (_config(), (["good film"] * 16, np.array([0, 1] * 7 + [2, 0])), TinyData(8),
         "outside the class range"),
        (_config(), TinyData(16), (["a"] * 4, np.array([0, 1, 0, -1])), "outside the class"),
        (_config(), (["good"] * 3, np.array([0, 1])), TinyData(8), "one label per example"),
        (_config(restore_best=True), TinyData(16), TinyData(8), "needs validation data"),
        (_config(freeze_layers=5), TinyData(16), TinyData(8), "exceeds the backbone"),
    ],
    ids=["batch-too-large", "train-label-range", "eval-label-range", "length-mismatch",
         "best-without-validation", "freeze-too-many"],
)
def test_bad_input_is_a_clear_error_and_nothing_finished(tmp_path, config, train, evaluation,
                                                         match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(config, tiny_classifier, train, evaluation, tmp_path / "run")
    assert not (tmp_path / "run" / "DONE").exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


def _model_outputs(model, texts_a, texts_b):
    """The loaded model's outputs on text pairs, preprocessed by hand (not by the engine)."""
    x = model.preprocessor((np.array(texts_a), np.array(texts_b)), y=None)
    return np.asarray(model({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}))


@pytest.mark.slow
def test_text_pairs_train_and_evaluate_through_the_preprocessor(tmp_path):
    train, dev = pair_data(96), pair_data(16, seed=1)
    build = functools.partial(tiny_classifier, sequence_length=16)  # pairs fit untruncated
    results = train_and_evaluate(_config(epochs=4), build, train, dev, tmp_path / "run",
                                 verbose=0, task_metrics=functools.partial(glue_metrics, "mrpc"))
    ev = results["evaluation"]
    assert results["task"] == "classification"
    assert ev["num_examples"] == 16 and set(ev["task_metrics"]) == {"accuracy", "f1"}
    # Both segments reach the model: [CLS] a [SEP] b [SEP], and the engine's predictions are the
    # saved model's predictions on the packed pairs.
    loaded = keras.saving.load_model(tmp_path / "run" / "model.keras")
    token_ids = np.asarray(loaded.preprocessor((np.array(dev.texts), np.array(dev.text_pairs)),
                                               y=None)["token_ids"])
    assert ((token_ids == 3).sum(axis=1) == 2).all()  # two [SEP]
    logits = _model_outputs(loaded, dev.texts, dev.text_pairs)
    assert logits.argmax(-1).tolist() == ev["predictions"]
    rows = io.read_csv(tmp_path / "run" / "epochs.csv")
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


@pytest.mark.slow
def test_regression_trains_with_mse_and_reports_correlations(tmp_path):
    train, dev = pair_data(64, regression=True), pair_data(24, seed=1, regression=True)
    results = train_and_evaluate(
        _config(epochs=4, learning_rate=5e-3), tiny_regressor, train, dev, tmp_path / "run",
        verbose=0, validation=dev, task_metrics=functools.partial(glue_metrics, "stsb"))
    folder = tmp_path / "run"
    ev = results["evaluation"]
    assert results["task"] == "regression"
    assert {"pearson", "spearman", "mse", "rmse", "mae"} <= set(ev)
    assert "confusion_matrix" not in ev and not (folder / "confusion_matrix.png").exists()
    assert (folder / "predictions.png").read_bytes()[:4] == b"\x89PNG"
    assert ev["loss"] == pytest.approx(ev["mse"])
    assert ev["task_metrics"]["pearson"] == pytest.approx(ev["pearson"])
    assert ev["labels"] == pytest.approx(dev.labels.tolist())
    rows = io.read_csv(folder / "epochs.csv")
    assert rows[0]["mae"] != "" and rows[0]["val_loss"] != ""
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert "Pearson / Spearman" in (folder / "report.md").read_text()
    loaded = keras.saving.load_model(folder / "model.keras")
    scores = _model_outputs(loaded, dev.texts, dev.text_pairs)
    assert scores.shape == (24, 1)
    np.testing.assert_allclose(scores[:, 0], ev["predictions"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "build, train, evaluation, config, match",
    [
        (tiny_classifier, pair_data(16, regression=True), pair_data(8, 1, regression=True),
         _config(), "regression task.*num_classes=1"),
        (tiny_regressor, TinyData(16), TinyData(8), _config(), "one output"),
        (tiny_regressor, pair_data(16, regression=True), pair_data(8, 1), _config(),
         "mix classification and regression"),
        (tiny_regressor, pair_data(16, regression=True), pair_data(8, 1, regression=True),
         _config(label_smoothing=0.1), "label_smoothing"),
    ],
    ids=["scores-for-classifier", "classes-for-regressor", "mixed-splits", "smoothing"],
)
def test_task_mismatch_is_a_clear_error(tmp_path, build, train, evaluation, config, match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(config, build, train, evaluation, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "DONE").exists()


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"label_smoothing": 1.0}, {"jit_compile": "x"}],
                         ids=["epochs", "smoothing", "jit"])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        _config(**bad)


@pytest.mark.slow
def test_mixed_precision_remat_smoothing_llrd_freeze_validation(tmp_path):
    config = _config(precision="mixed_bfloat16", remat=True, label_smoothing=0.1,
                     layer_decay=0.8, freeze_embeddings=True, optimizer="adam",
                     schedule="cosine", early_stopping_patience=3, restore_best=True,
                     monitor="val_accuracy")
    results = train_and_evaluate(config, tiny_classifier, TinyData(48), TinyData(16, seed=1),
                                 tmp_path / "run", validation=TinyData(16, seed=2), verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert results["precision"] == "mixed_bfloat16"
    assert np.isfinite(results["evaluation"]["loss"])
    rows = io.read_csv(tmp_path / "run" / "epochs.csv")
    assert rows[0]["val_accuracy"] != "" and rows[0]["val_loss"] != ""
    full = tiny_classifier()
    assert results["training"]["trainable_params"] < full.count_params()


@pytest.mark.slow
def test_mixed_float16_run(tmp_path):
    config = _config(epochs=1, precision="mixed_float16")
    results = train_and_evaluate(config, tiny_classifier, TinyData(16), TinyData(8, seed=1),
                                 tmp_path / "run", verbose=0,
                                 task_metrics=functools.partial(glue_metrics, "mrpc"))
    assert results["precision"] == "mixed_float16"
    task = results["evaluation"]["task_metrics"]
    assert set(task) == {"accuracy", "f1"}
    assert task["accuracy"] == pytest.approx(results["evaluation"]["accuracy"])
    assert np.isfinite(results["training"]["final_train_loss"])


MIRRORED = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from keras_effattn.training.distribute import split_cpu
    devices = split_cpu(2)
    sys.path.insert(0, sys.argv[2])
    from training_helpers import TinyData, tiny_classifier
    from keras_effattn.training import TrainConfig, glue_metrics, train_and_evaluate
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=3e-3, energy=False,
                         jit_compile=False, tensorboard=False, strategy="mirrored")
    results = train_and_evaluate(config, tiny_classifier, TinyData(32), TinyData(16, 1),
                                 sys.argv[1], verbose=0)
    print(json.dumps({"replicas": results["training"]["replicas"],
                      "loss": results["training"]["final_train_loss"]}))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    tests_dir = str(pathlib.Path(__file__).resolve().parent)
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path / "run"), tests_dir],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert np.isfinite(out["loss"])
    assert (tmp_path / "run" / "DONE").is_file()


def test_engine_pipelines_run_without_tf_data_autotuning():
    """Autotuning's model thread made iterator shutdown wait up to 60 s after the last batch
    (`keras_effattn.data.pipeline`); every pipeline the engine feeds to fit/predict is built
    without it, and still yields every example once, in order."""
    from keras_effattn.training import fit

    data = TinyData(20)
    split = fit._as_split(data, "evaluation")
    streams = [
        fit.train_stream(split, 8, seed=0, epochs=1, start_step=0, num_classes=2, one_hot=False),
        fit.feature_stream(split, 8),
        fit.labelled_stream(split, 8, num_classes=2, one_hot=False),
    ]
    for stream in streams:
        assert stream.options().autotune.enabled is False
    order = np.concatenate([b.numpy() for b in streams[1]])
    assert [t.decode() for t in order] == list(data.texts)
