"""GLUE reader: the shared TSVs, tiny generated TSVs, tfds mock data, metric names, bad input."""

import gzip

import numpy as np
import pytest

from keras_effattn.data import GLUE_TASKS, glue_task, read_glue

# Official GLUE sizes and class counts (see ../shared/data/README.md).
REAL = {
    ("CoLA", "train"): (8551, [2528, 6023]),
    ("CoLA", "dev"): (1043, [322, 721]),
    ("SST-2", "train"): (67349, [29780, 37569]),
    ("SST-2", "dev"): (872, [428, 444]),
    ("MRPC", "train"): (3668, [1194, 2474]),
    ("MRPC", "dev"): (408, [129, 279]),
    ("RTE", "train"): (2490, [1249, 1241]),
    ("RTE", "dev"): (277, [146, 131]),
    ("STS-B", "train"): (5749, None),
    ("STS-B", "dev"): (1500, None),
}


@pytest.mark.parametrize("task, split", list(REAL), ids=[f"{t}-{s}" for t, s in REAL])
def test_real_files_have_official_sizes(data_dir, task, split):
    size, counts = REAL[(task, split)]
    ds = read_glue(task, data_dir / "glue", split)
    assert len(ds) == size
    assert ds.is_pair == (task in ("MRPC", "RTE", "STS-B"))
    if counts is None:
        assert ds.is_regression and ds.labels.dtype == np.float32
        assert 0.0 <= ds.labels.min() and ds.labels.max() <= 5.0
        mean = {"train": 2.701, "dev": 2.364}[split]
        assert abs(float(ds.labels.mean()) - mean) < 1e-3
    else:
        assert ds.class_counts().tolist() == counts and ds.labels.dtype == np.int32
    assert all(t == t.strip() and t for t in ds.texts)


def test_real_mrpc_first_row_keeps_quotes_and_drops_bom(data_dir):
    ds = read_glue("mrpc", data_dir / "glue", "validation")
    assert ds.texts[0].startswith("He said the foodservice pie business doesn 't fit")
    assert ds.text_pairs[0].startswith('" The foodservice pie business')
    assert ds.labels[0] == 1 and ds.class_names[1] == "equivalent"
    # The task folder itself and the folder above glue/ are accepted as well.
    assert len(read_glue("MRPC", data_dir / "glue" / "MRPC", "dev")) == 408
    assert len(read_glue("MRPC", data_dir, "dev")) == 408


def test_metric_names_are_data():
    assert GLUE_TASKS["MRPC"].metrics == ("f1", "accuracy")
    assert GLUE_TASKS["QQP"].metrics == ("f1", "accuracy")
    assert GLUE_TASKS["CoLA"].metrics == ("matthews_corrcoef",)
    assert GLUE_TASKS["STS-B"].metrics == ("pearson", "spearman")
    for name in ("SST-2", "RTE", "QNLI", "MNLI", "WNLI"):
        assert GLUE_TASKS[name].metrics == ("accuracy",)
    assert glue_task("stsb") is GLUE_TASKS["STS-B"] and glue_task("sst2").name == "SST-2"
    assert GLUE_TASKS["STS-B"].is_regression and not GLUE_TASKS["CoLA"].is_pair
    with pytest.raises(ValueError, match="Unknown GLUE task 'squad'"):
        glue_task("squad")


# --- tiny generated TSVs --------------------------------------------------------------------


def _write(path, text, gz=True, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding) if isinstance(text, str) else text
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


MRPC_TINY = (
    "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    '1\t1\t2\tHe said " hello .\tHe said hello .\n'
    "0\t3\t4\tA cat .\tA dog .\n"
)


def test_tiny_mrpc_bom_and_stray_quotes(tmp_path):
    _write(tmp_path / "MRPC" / "dev.tsv", MRPC_TINY)
    ds = read_glue("MRPC", tmp_path, "dev")
    assert ds.texts == ['He said " hello .', "A cat ."]
    assert ds.text_pairs == ["He said hello .", "A dog ."]
    assert ds.labels.tolist() == [1, 0]


def test_tiny_cola_without_header_plain_tsv(tmp_path):
    _write(
        tmp_path / "CoLA" / "train.tsv", "gj04\t1\t\tGood one.\ngj04\t0\t*\tBad one the.", gz=False
    )
    ds = read_glue("cola", tmp_path, "train")
    assert ds.texts == ["Good one.", "Bad one the."] and ds.labels.tolist() == [1, 0]
    assert not ds.is_pair and ds.class_names == ("unacceptable", "acceptable")


def test_tiny_stsb_scores_and_rte_label_names(tmp_path):
    head = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    )
    rows = "0\tg\tf\t2012\t0\tnone\tnone\tA b.\tA c.\t3.800\n1\tg\tf\t2012\t1\tn\tn\tX.\tY.\t0.0\n"
    _write(tmp_path / "STS-B" / "train.tsv", head + rows)
    ds = read_glue("STS-B", tmp_path, "train")
    np.testing.assert_allclose(ds.labels, [3.8, 0.0])
    batch = next(iter(ds.to_tf_dataset(batch_size=2)))
    (a, b), y = batch
    assert a.dtype.name == "string" and b.shape == (2,) and y.dtype.name == "float32"
    rte = "index\tsentence1\tsentence2\tlabel\n0\tP.\tH.\tnot_entailment\n1\tP2.\tH2.\tentailment\n"
    _write(tmp_path / "RTE" / "dev.tsv", rte)
    assert read_glue("RTE", tmp_path, "dev").labels.tolist() == [1, 0]


# Headers as GLUE ships them for the tasks not in ../shared/data.
OTHER_TASKS = {
    ("MNLI", "dev_matched"): (
        (
            "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
            "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
            "label4\tlabel5\tgold_label\n"
            "0\t1\t2\tfiction\t(a)\t(b)\t(A)\t(B)\tA premise .\tA hypothesis .\tneutral\t"
            "neutral\tneutral\tneutral\tneutral\tcontradiction\n"
        ),
        ("A premise .", "A hypothesis .", 2),
    ),
    ("QQP", "train"): (
        (
            "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            "0\t1\t2\tHow do I learn?\tHow can I learn?\t1\n"
        ),
        ("How do I learn?", "How can I learn?", 1),
    ),
    ("QNLI", "dev"): (
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHe did .\tnot_entailment\n",
        ("Who?", "He did .", 1),
    ),
    ("WNLI", "train"): (
        "index\tsentence1\tsentence2\tlabel\n0\tThe cup fell .\tIt fell .\t1\n",
        ("The cup fell .", "It fell .", 1),
    ),
}


@pytest.mark.parametrize("task, split", list(OTHER_TASKS), ids=[t for t, _ in OTHER_TASKS])
def test_tiny_files_of_tasks_not_shared(tmp_path, task, split):
    text, (first, second, label) = OTHER_TASKS[(task, split)]
    _write(tmp_path / task / f"{split}.tsv", text)
    ds = read_glue(task, tmp_path, split.replace("dev", "validation"))
    assert (ds.texts, ds.text_pairs, ds.labels.tolist()) == ([first], [second], [label])
    assert ds.num_classes == len(GLUE_TASKS[task].class_names)


def test_tfds_mock_pairs_and_regression():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=7):
        mrpc = read_glue("MRPC", "tfds", "validation")
        assert len(mrpc) == 7 and mrpc.is_pair and set(mrpc.labels.tolist()) <= {0, 1}
        stsb = read_glue("STS-B", "tfds", "train")
        assert stsb.is_regression and stsb.labels.dtype == np.float32


def test_tfds_unprepared_fails_fast_pointing_to_tsvs(tmp_path):
    (tmp_path / "glue" / "rte").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"read_glue\('RTE', '\.\./shared/data/glue'"):
        read_glue("RTE", tmp_path, "train")


# --- bad input ------------------------------------------------------------------------------


def test_missing_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="GLUE source .* does not exist"):
        read_glue("RTE", tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"has no RTE/train.tsv\[.gz\]"):
        read_glue("RTE", tmp_path / "empty", "train")


def test_wrong_file_for_task(tmp_path):
    _write(
        tmp_path / "MRPC" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
    )
    with pytest.raises(ValueError, match=r"without the MRPC columns \['#1 String'"):
        read_glue("MRPC", tmp_path, "dev")


def test_label_outside_class_range_and_skip(tmp_path):
    bad = MRPC_TINY + "2\t5\t6\tOdd .\tOdder .\n"
    _write(tmp_path / "MRPC" / "dev.tsv", bad)
    with pytest.raises(ValueError, match=r"line 4 has label '2', outside the MRPC classes"):
        read_glue("MRPC", tmp_path, "dev")
    assert len(read_glue("MRPC", tmp_path, "dev", bad_rows="skip")) == 2


def test_score_outside_range(tmp_path):
    head = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    )
    _write(tmp_path / "STS-B" / "dev.tsv", head + "0\tg\tf\ty\t0\tn\tn\tA.\tB.\t7.5\n")
    with pytest.raises(
        ValueError, match=r"line 2 has score '7.5', expected a number in \[0.0, 5.0\]"
    ):
        read_glue("STS-B", tmp_path, "dev")


def test_wrong_field_count_and_empty_text(tmp_path):
    _write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tonly two\n")
    with pytest.raises(ValueError, match="line 2 has 2 tab-separated fields, expected 4"):
        read_glue("RTE", tmp_path, "train")
    _write(
        tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\t \tH.\tentailment\n"
    )
    with pytest.raises(ValueError, match="line 2 has an empty text field"):
        read_glue("RTE", tmp_path, "dev")


def test_non_utf8_names_the_file(tmp_path):
    data = b"index\tsentence1\tsentence2\tlabel\n0\tcaf" + b"\xe9\tH.\tentailment\n"
    path = _write(tmp_path / "RTE" / "dev.tsv", data)
    with pytest.raises(ValueError, match=rf"{path.name} is not valid UTF-8"):
        read_glue("RTE", tmp_path, "dev")
    ds = read_glue("RTE", tmp_path, "dev", encoding_errors="replace")
    assert ds.texts == ["caf\ufffd"]


def test_truncated_gzip(tmp_path):
    path = tmp_path / "SST-2" / "train.tsv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(("sentence\tlabel\n" + "good film \t1\n" * 500).encode())[:40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_glue("SST-2", tmp_path, "train")


def test_empty_file_and_no_rows(tmp_path):
    _write(tmp_path / "SST-2" / "dev.tsv", "")
    with pytest.raises(ValueError, match="is empty"):
        read_glue("SST-2", tmp_path, "dev")
    _write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\n")
    with pytest.raises(ValueError, match="holds no SST-2 examples"):
        read_glue("SST-2", tmp_path, "train")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "GLUE hides test labels"),
        ({"split": "dev_matched"}, "must be one of"),
        ({"bad_rows": "ignore"}, "bad_rows must be"),
        ({"encoding_errors": "ignore"}, "encoding_errors must be one of"),
    ],
    ids=["test-split", "mnli-split-on-rte", "bad-rows", "encoding"],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        read_glue("RTE", tmp_path, **{"split": "train", **kwargs})
