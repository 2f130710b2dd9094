"""IMDB reader: folder, archive and tfds sources; seeded balanced subsets; bad input."""

import gzip
import io
import tarfile

import numpy as np
import pytest

from keras_effattn.data import IMDB_CLASS_NAMES, read_imdb

N_PER_CLASS = 6


def _review(split, label, i):
    return f"Review {i} of {split} {label}.<br /><br />It was {'great' if label == 'pos' else 'bad'}!!!"


def make_imdb_folder(root, n=N_PER_CLASS, splits=("train", "test")):
    """A tiny aclImdb folder in the Stanford layout; returns its path."""
    base = root / "aclImdb"
    for split in splits:
        for label in IMDB_CLASS_NAMES:
            folder = base / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                rating = 8 if label == "pos" else 2
                (folder / f"{i}_{rating}.txt").write_text(_review(split, label, i), "utf-8")
    (base / "README").write_text("tiny aclImdb for tests\n")
    return base


def make_imdb_archive(root, n=N_PER_CLASS):
    """The same tiny folder packed as aclImdb_v1.tar.gz; returns the archive path."""
    base = make_imdb_folder(root / "src", n)
    path = root / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(base, arcname="aclImdb")
    return path


def _as_pairs(ds):
    return list(zip(ds.texts, ds.labels.tolist()))


# --- the real archive -----------------------------------------------------------------------


def test_real_archive_balanced_sample(data_dir):
    ds = read_imdb(data_dir / "aclImdb_v1.tar.gz", "test", max_per_class=25, seed=3)
    assert len(ds) == 50 and ds.class_counts().tolist() == [25, 25]
    assert ds.class_names == ("neg", "pos") and ds.name == "imdb/test"
    assert ds.labels.dtype == np.int32
    assert not any("<br" in t for t in ds.texts)
    assert all(t == t.strip() and "  " not in t for t in ds.texts)
    # Reproducible: the same seed gives the same reviews in the same order (other seeds and
    # folder/archive equality are checked on tiny data below).
    again = read_imdb(data_dir / "aclImdb_v1.tar.gz", "test", max_per_class=25, seed=3)
    assert _as_pairs(again) == _as_pairs(ds)


@pytest.mark.slow
def test_real_archive_full_train_split(data_dir):
    ds = read_imdb(data_dir / "aclImdb_v1.tar.gz", "train", clean=False)
    assert len(ds) == 25_000 and ds.class_counts().tolist() == [12_500, 12_500]
    first = [t for t, y in zip(ds.texts, ds.labels) if t.startswith("Bromwell High is a cartoon")]
    assert len(first) == 1
    assert sum("<br />" in t for t in ds.texts) > 10_000  # raw text keeps its markup


# --- tiny generated data --------------------------------------------------------------------


def test_folder_and_archive_give_identical_datasets(tmp_path):
    folder = make_imdb_folder(tmp_path / "f")
    archive = make_imdb_archive(tmp_path / "a")
    for kwargs in ({}, {"max_per_class": 3, "seed": 7}):
        a = read_imdb(folder, "train", **kwargs)
        b = read_imdb(archive, "train", **kwargs)
        assert _as_pairs(a) == _as_pairs(b)
    # The parent of aclImdb/ and the folder holding the archive are accepted too.
    c = read_imdb(tmp_path / "f", "test", max_per_class=2)
    assert _as_pairs(c) == _as_pairs(read_imdb(tmp_path / "a", "test", max_per_class=2))


def test_labels_follow_folders_and_cleaning(tmp_path):
    folder = make_imdb_folder(tmp_path)
    ds = read_imdb(folder, "test")
    assert len(ds) == 2 * N_PER_CLASS and ds.class_counts().tolist() == [N_PER_CLASS] * 2
    for text, label in zip(ds.texts, ds.labels):
        assert f"test {IMDB_CLASS_NAMES[label]}." in text
        assert "<br" not in text and text.endswith("!")
    raw = read_imdb(folder, "test", clean=False)
    assert all("<br /><br />" in t and t.endswith("!!!") for t in raw.texts)


def test_subset_is_seeded_balanced_and_ordered_randomly(tmp_path):
    folder = make_imdb_folder(tmp_path, n=20)
    a = read_imdb(folder, "train", max_per_class=5, seed=1)
    assert a.class_counts().tolist() == [5, 5]
    assert _as_pairs(a) == _as_pairs(read_imdb(folder, "train", max_per_class=5, seed=1))
    assert _as_pairs(a) != _as_pairs(read_imdb(folder, "train", max_per_class=5, seed=2))
    full = read_imdb(folder, "train", seed=1)
    assert set(_as_pairs(a)) <= set(_as_pairs(full))
    assert full.labels.tolist() != sorted(full.labels.tolist())  # not class-sorted


def test_to_tf_dataset_batches(tmp_path):
    ds = read_imdb(make_imdb_folder(tmp_path), "train")
    batches = list(ds.to_tf_dataset(batch_size=5))
    assert [int(x.shape[0]) for x, _ in batches] == [5, 5, 2]
    x, y = batches[0]
    assert x.dtype.name == "string" and y.dtype.name == "int32"
    assert [t.decode() for t in x.numpy()] == ds.texts[:5]


# --- tfds -----------------------------------------------------------------------------------


def test_tfds_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = read_imdb("tfds", "test", clean=False)
        assert len(ds) == 12 and ds.class_names == IMDB_CLASS_NAMES
        counts = ds.class_counts()
        k = int(counts.min())
        sub = read_imdb("tfds", "test", max_per_class=k, seed=0, clean=False)
        assert sub.class_counts().tolist() == [k, k]
        assert set(sub.texts) <= set(ds.texts)


def test_tfds_data_dir_is_recognised(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "imdb_reviews").mkdir()
    with tfds.testing.mock_data(num_examples=4):
        ds = read_imdb(tmp_path, "train", clean=False)
    assert len(ds) == 4 and ds.name == "imdb/train"


def test_tfds_unprepared_fails_fast_pointing_to_archive(tmp_path):
    (tmp_path / "imdb_reviews").mkdir()
    with pytest.raises(FileNotFoundError, match="aclImdb_v1.tar.gz"):
        read_imdb(tmp_path, "train")


# --- bad input ------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*aclImdb"):
        read_imdb(tmp_path / "nowhere", "train")


def test_truncated_archive(tmp_path):
    archive = make_imdb_archive(tmp_path, n=40)
    data = archive.read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_imdb(broken, "train")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tar archive" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_imdb(junk, "train")


def test_archive_without_reviews(tmp_path):
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        payload = b"hello"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ValueError, match="holds no train/neg"):
        read_imdb(path, "train")


def test_wrong_folder_layout(tmp_path):
    (tmp_path / "reviews").mkdir()
    with pytest.raises(ValueError, match="wrong layout"):
        read_imdb(tmp_path / "reviews", "train")
    base = make_imdb_folder(tmp_path / "half", splits=("train",))
    with pytest.raises(ValueError, match="no test/neg folder"):
        read_imdb(base, "test")
    text_file = tmp_path / "reviews.txt"
    text_file.write_text("x")
    with pytest.raises(ValueError, match="not a .tar.gz"):
        read_imdb(text_file, "train")


def test_empty_review(tmp_path):
    base = make_imdb_folder(tmp_path)
    (base / "train" / "pos" / "3_9.txt").write_text("   ")
    with pytest.raises(ValueError, match=r"3_9\.txt is empty"):
        read_imdb(base, "train")
    (base / "train" / "pos" / "3_9.txt").write_text("<br /><br />")
    with pytest.raises(ValueError, match="empty after cleaning"):
        read_imdb(base, "train")


def test_non_utf8_review(tmp_path):
    base = make_imdb_folder(tmp_path)
    (base / "train" / "neg" / "2_1.txt").write_bytes(b"caf\xe9 was awful")
    with pytest.raises(ValueError, match=r"2_1\.txt is not valid UTF-8.*encoding_errors"):
        read_imdb(base, "train")
    ds = read_imdb(base, "train", encoding_errors="replace")
    assert "caf\ufffd was awful" in ds.texts


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "unsup"}, "split must be one of"),
        ({"max_per_class": 0}, "max_per_class must be >= 1"),
        ({"max_per_class": 2.5}, "max_per_class must be a positive int"),
        ({"max_per_class": 99}, "exceeds the 6 'neg' reviews"),
        ({"encoding_errors": "ignore"}, "encoding_errors must be one of"),
    ],
    ids=["split", "zero-subset", "float-subset", "subset-too-large", "encoding-policy"],
)
def test_bad_arguments(tmp_path, kwargs, match):
    base = make_imdb_folder(tmp_path)
    with pytest.raises(ValueError, match=match):
        read_imdb(base, **kwargs)


def test_batch_larger_than_dataset(tmp_path):
    ds = read_imdb(make_imdb_folder(tmp_path, n=2), "train")
    with pytest.raises(ValueError, match="batch_size=8 is larger than dataset 'imdb/train'"):
        ds.to_tf_dataset(batch_size=8)


def test_gzip_helper_reports_truncation(tmp_path):
    from keras_effattn.data import _files

    path = tmp_path / "x.txt.gz"
    path.write_bytes(gzip.compress(b"hello world " * 1000)[:50])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        _files.read_text(path)
