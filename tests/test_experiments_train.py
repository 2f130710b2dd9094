"""experiments/train.py in-process: data loading (--data_source alone, --val_per_class, GLUE
tasks with three classes or regression scores), flag checks made before anything is written,
safe run-folder names, loading a saved model for inference, and `run` (what `main` does after
parsing the flags) on GLUE CoLA and STS-B. The script's own process (flags, exit status) is
covered by tests/test_train_script.py and tests/test_cli.py."""

import gzip
import warnings

import keras
import numpy as np
import pytest

from experiments import common
from experiments import train as train_script
from export import to_onnx
from keras_effattn.utils import io
from tests.test_train_script import _write_imdb

MNLI_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
    "label5\tgold_label\n"
)
STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
)


def settings(**overrides):
    values = {name: train_script.FLAGS[name].default for name in train_script.FLAG_NAMES}
    return {**values, **overrides}


def _write_gz(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(text.encode("utf-8")))


def _write_glue(root):
    """A GLUE folder with a 3-class MNLI (4 rows per class) and a regression STS-B (12 rows)."""
    labels = ("entailment", "neutral", "contradiction")
    for split in ("train", "dev_matched"):
        rows = "".join(
            f"{i}\t1\t2\tfiction\t(a)\t(b)\t(A)\t(B)\tPremise {split} {i} .\tHypothesis {i} .\t"
            f"x\tx\tx\tx\tx\t{labels[i % 3]}\n" for i in range(12))
        _write_gz(root / "MNLI" / f"{split}.tsv", MNLI_HEADER + rows)
    for split in ("train", "dev"):
        rows = "".join(f"{i}\tg\tf\t2012\t{i}\tn\tn\tA {split} {i} .\tB {i} .\t{i * 5 / 11:.3f}\n"
                       for i in range(12))
        _write_gz(root / "STS-B" / f"{split}.tsv", STSB_HEADER + rows)
    return root


def test_data_source_alone_needs_no_data_dir(tmp_path):
    source = _write_imdb(tmp_path / "data")
    chosen = settings(data_source=str(source), data_dir=str(tmp_path / "no_such_folder"),
                      train_per_class=3, eval_per_class=2)
    train, evaluation, validation = train_script.load_data(chosen)
    assert (len(train), len(evaluation), validation) == (6, 4, None)
    missing = settings(data_source=str(tmp_path / "nowhere.tar.gz"))
    with pytest.raises(FileNotFoundError, match="--data_source .*nowhere.tar.gz.* does not exist"):
        train_script.check_settings(missing)


def test_val_per_class_is_taken_from_what_training_reads(tmp_path):
    source = str(_write_imdb(tmp_path / "data"))
    # --train_per_class=0 reads every training review (6 per class) and holds out 2 per class.
    train, _, validation = train_script.load_data(
        settings(data_source=source, train_per_class=0, val_per_class=2, eval_per_class=2))
    assert (len(train), len(validation)) == (8, 4)
    assert train.class_counts().tolist() == [4, 4]
    assert validation.class_counts().tolist() == [2, 2]
    assert not set(train.texts) & set(validation.texts)
    train, _, validation = train_script.load_data(
        settings(data_source=source, train_per_class=3, val_per_class=1, eval_per_class=2))
    assert (len(train), len(validation)) == (6, 2)
    with pytest.raises(common.UsageError, match="--val_per_class asks for 12 validation"):
        train_script.load_data(
            settings(data_source=source, train_per_class=0, val_per_class=6, eval_per_class=2))


def test_glue_uses_the_tasks_classes_and_metrics(tmp_path):
    root = str(_write_glue(tmp_path / "glue"))
    train, evaluation, validation = train_script.load_data(settings(
        dataset="glue/mnli", data_source=root, train_per_class=3, eval_per_class=2,
        val_per_class=1))
    assert train.class_names == ("entailment", "neutral", "contradiction")
    assert train.class_counts().tolist() == [3, 3, 3]
    assert validation.class_counts().tolist() == [1, 1, 1]
    assert evaluation.class_counts().tolist() == [2, 2, 2]  # from dev_matched, all 3 classes
    assert evaluation.name == "glue/mnli/dev_matched"

    train, evaluation, _ = train_script.load_data(settings(
        dataset="glue/stsb", data_source=root, train_per_class=5, eval_per_class=4))
    assert train.is_regression and (len(train), len(evaluation)) == (5, 4)
    model = train_script.model_builder(settings(backbone="tiny", max_length=16),
                                       train.num_classes)()
    assert model.output.shape[-1] == 1  # a regressor
    results = {
        "task": "regression",
        "evaluation": {"pearson": 0.5, "spearman": 0.4, "rmse": 1.2, "num_examples": 4,
                       "task_metrics": {"pearson": 0.5, "spearman": 0.4},
                       "inference": {"latency_ms_per_sample": 1.0, "samples_per_s": 1000.0}},
        "training": {"num_examples": 5, "epochs_run": 1, "train_seconds": 1.0,
                     "train_samples_per_s": 5.0},
        "energy": {"available": False, "reason": "off"}, "peak_host_rss_mb": 100.0,
        "wall_seconds": 2.0,
    }
    table = train_script.summary_table(results, tmp_path)
    assert "pearson" in table and "RMSE" in table and "accuracy" not in table
    assert table.count("| pearson") == 1


def test_bad_settings_fail_before_anything_is_read_or_written(tmp_path):
    cases = {
        "--dataset='squad' is not supported": settings(dataset="squad"),
        "--attention='exat' is not a valid attention spec": settings(attention="exat"),
        "num_feature": settings(attention="favor(num_feature=8)"),
        "names 3 layers but the model has 2": settings(backbone="tiny", attention="exact*3"),
        "add --val_per_class": settings(restore_best=True),
    }
    for message, chosen in cases.items():
        with pytest.raises(common.UsageError, match=message.replace("(", r"\(")):
            train_script.check_settings({**chosen, "data_dir": str(tmp_path)})
    assert list(tmp_path.iterdir()) == []


def test_run_folder_names_are_safe():
    config = train_script.build_config(settings(
        dataset="glue/sst2", backbone="/models/My MiniLM", max_length=64,
        attention="exact*2, favor(num_features=8)*4"))
    assert config.name == "glue-sst2_My-MiniLM_exact-2-favor-num_features=8-4_L64"
    assert common.safe_name("a/b\\c*d(e)") == "a-b-c-d-e"
    assert train_script.build_config(settings(name="../../x")).name == "x"


@pytest.mark.slow
def test_saved_run_model_loads_for_inference_without_optimizer_warning(tmp_path):
    from keras_effattn.models import build_classifier
    from keras_effattn.training import TrainConfig, train_and_evaluate

    texts = np.array(["good film", "bad film", "great movie", "awful movie"] * 2)
    labels = np.array([1, 0, 1, 0] * 2)
    tiny = {"num_layers": 1, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32,
            "max_sequence_length": 16}
    config = TrainConfig(epochs=1, batch_size=4, energy=False, jit_compile=False)
    train_and_evaluate(
        config, lambda: build_classifier(tiny, attention="exact", num_classes=2, max_length=16),
        (texts, labels), (texts, labels), tmp_path / "run", verbose=0)
    path = tmp_path / "run" / "model.keras"

    def warnings_of(load):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load(path)
        assert loaded.output.shape[-1] == 2
        return " ".join(str(w.message) for w in caught)

    # A KerasHub task compiles itself on load and skips the saved optimizer state, warning.
    assert "Skipping variable loading for optimizer" in warnings_of(keras.saving.load_model)
    assert "Skipping variable loading" not in warnings_of(common.load_model)
    assert "Skipping variable loading" not in warnings_of(to_onnx.load_float32)
    with pytest.raises(FileNotFoundError, match="No saved model"):
        common.load_model(tmp_path / "missing.keras")


TINY = {"backbone": "tiny", "max_length": 32, "batch_size": 4, "epochs": 1,
        "learning_rate": 1e-3, "energy": False, "save_model": False}


@pytest.mark.slow
def test_glue_cola_run_with_validation(tmp_path, data_dir):
    out = tmp_path / "cola"
    results, _ = train_script.run(settings(
        data_dir=str(data_dir), dataset="glue/cola", train_per_class=6, val_per_class=2,
        eval_per_class=4, output_dir=str(out), **TINY), verbose=0)
    config = io.read_json(out / "config.json")
    assert config["data"] == {"train_examples": 12, "evaluation_examples": 8,
                              "validation_examples": 4,
                              "class_names": ["unacceptable", "acceptable"]}
    assert set(results["evaluation"]["task_metrics"]) == {"matthews_corrcoef"}
    assert results["evaluation"]["num_examples"] == 8
    assert "val_loss" in io.read_csv(out / "epochs.csv")[0]
    assert "matthews_corrcoef" in train_script.summary_table(results, out)


@pytest.mark.slow
def test_glue_regression_run_from_data_source_alone(tmp_path):
    root = _write_glue(tmp_path / "glue")
    out = tmp_path / "stsb"
    results, folder = train_script.run(settings(
        data_source=str(root), data_dir=str(tmp_path / "none"), dataset="glue/stsb",
        train_per_class=8, eval_per_class=4, output_dir=str(out), **TINY),
        verbose=0)
    assert folder == out and results["task"] == "regression"
    assert set(results["evaluation"]["task_metrics"]) == {"pearson", "spearman"}
    assert results["evaluation"]["num_examples"] == 4
    assert (out / "predictions.png").is_file() and (out / "DONE").is_file()
    table = train_script.summary_table(results, folder)
    assert "| pearson" in table and "RMSE" in table and "accuracy" not in table


def test_cpu_tier_recipe_is_the_main_jobs_defaults():
    from experiments import suite

    flag_of = {"jit_compile": "xla"}  # train.py's name for the same setting
    defaults = {key: train_script.FLAGS[flag_of.get(key, key)].default
                for key in suite.MAIN_JOB_RECIPE}
    assert defaults == suite.MAIN_JOB_RECIPE
