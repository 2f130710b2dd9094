"""TextDataset: validation of texts and labels, slicing helpers, the tf.data view."""

import doctest

import numpy as np
import pytest

from keras_effattn.data import TextDataset
from keras_effattn.data import dataset as dataset_module


def _ds(n=10, pairs=False):
    texts = [f"text number {i}" for i in range(n)]
    return TextDataset(
        texts,
        [i % 2 for i in range(n)],
        ("neg", "pos"),
        text_pairs=[f"second {i}" for i in range(n)] if pairs else None,
        name="toy",
    )


def test_fields_are_normalised_and_frozen():
    ds = TextDataset(("a", "b"), [1.0, 0.0], ["x", "y"])
    assert ds.texts == ["a", "b"] and ds.class_names == ("x", "y")
    assert ds.labels.dtype == np.int32 and ds.num_classes == 2 and not ds.is_pair
    with pytest.raises(ValueError):
        ds.labels[0] = 5  # read-only
    with pytest.raises(AttributeError):
        ds.texts = []
    reg = TextDataset(["a"], [3.2], ())
    assert reg.is_regression and reg.labels.dtype == np.float32 and reg.num_classes == 0


def test_slicing_helpers():
    ds = _ds(10, pairs=True)
    sub = ds.select([3, 1])
    assert sub.texts == ["text number 3", "text number 1"] and sub.labels.tolist() == [1, 1]
    assert sub.text_pairs == ["second 3", "second 1"]
    assert len(ds.head(4)) == 4 and len(ds.head(50)) == 10
    shuffled = ds.shuffled(seed=1)
    assert sorted(shuffled.texts) == sorted(ds.texts) and shuffled.texts != ds.texts
    assert shuffled.texts == ds.shuffled(seed=1).texts
    for t, p in zip(shuffled.texts, shuffled.text_pairs):
        assert t.split()[-1] == p.split()[-1]  # pairs stay aligned
    upper = ds.map_texts(str.upper)
    assert upper.texts[0] == "TEXT NUMBER 0" and upper.text_pairs[0] == "SECOND 0"
    both = ds.concatenate(ds.head(2))
    assert len(both) == 12 and both.class_counts().tolist() == [6, 6]
    assert "n=10" in repr(ds) and "pairs" in repr(ds)


def test_to_tf_dataset_shuffle_is_seeded_and_reshuffles_each_epoch():
    ds = _ds(32)

    def epoch_orders(seed):
        pipe = ds.to_tf_dataset(batch_size=32, shuffle=True, seed=seed)
        return [next(iter(pipe))[0].numpy().tolist() for _ in range(2)]

    a, b = epoch_orders(7), epoch_orders(7)
    assert a == b  # same seed, same sequence of epoch orders
    assert a[0] != a[1]  # a new order each epoch
    assert sorted(a[0]) == sorted(t.encode() for t in ds.texts)
    plain = next(iter(ds.to_tf_dataset(batch_size=32)))[0].numpy().tolist()
    assert plain == [t.encode() for t in ds.texts]


def test_to_tf_dataset_pairs_and_drop_remainder():
    ds = _ds(10, pairs=True)
    batches = list(ds.to_tf_dataset(batch_size=4, drop_remainder=True))
    assert len(batches) == 2
    (a, b), y = batches[0]
    assert a.shape == (4,) and b.shape == (4,) and y.dtype.name == "int32"


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"texts": [], "labels": []}, "has no texts"),
        ({"texts": ["ok", "  "], "labels": [0, 1]}, r"text\[1\] is empty"),
        ({"texts": ["ok", b"bytes"], "labels": [0, 1]}, r"text\[1\] is bytes, not str"),
        ({"texts": ["a", "b"], "labels": [0]}, "labels have shape"),
        ({"texts": ["a", "b"], "labels": [0, 2]}, r"label 2 at index 1 is outside the class range"),
        ({"texts": ["a", "b"], "labels": [-1, 0]}, "outside the class range"),
        ({"texts": ["a", "b"], "labels": [0, 0.5]}, "whole numbers"),
        ({"texts": ["a", "b"], "labels": [0, np.nan]}, "NaN or inf"),
        ({"texts": ["a", "b"], "labels": ["neg", "pos"]}, "labels must be numbers"),
        ({"texts": ["a"], "labels": [0], "text_pairs": ["x", "y"]}, "2 text_pairs for 1 texts"),
        ({"texts": ["a"], "labels": [0], "text_pairs": [""]}, r"text_pairs\[0\] is empty"),
        ({"texts": ["a"], "labels": [0], "class_names": ("x", "x")}, "repeat a name"),
    ],
    ids=[
        "no-texts",
        "empty-text",
        "bytes-text",
        "label-count",
        "label-too-large",
        "label-negative",
        "label-fraction",
        "label-nan",
        "label-strings",
        "pair-count",
        "empty-pair",
        "duplicate-classes",
    ],
)
def test_bad_construction(kwargs, match):
    kwargs = {"class_names": ("neg", "pos"), **kwargs}
    with pytest.raises(ValueError, match=match):
        TextDataset(**kwargs)


@pytest.mark.parametrize(
    "batch_size, match",
    [
        (11, r"batch_size=11 is larger than dataset 'toy' \(10 examples\)"),
        (0, "batch_size must be >= 1"),
        (2.0, "batch_size must be an int"),
        (True, "batch_size must be an int"),
    ],
    ids=["too-large", "zero", "float", "bool"],
)
def test_bad_batch_size(batch_size, match):
    with pytest.raises(ValueError, match=match):
        _ds(10).to_tf_dataset(batch_size=batch_size)


def test_bad_helpers():
    ds = _ds(5)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        ds.select([7])
    with pytest.raises(ValueError, match="head: n must be >= 1"):
        ds.head(0)
    with pytest.raises(ValueError, match="differ; concatenate splits of the same task"):
        ds.concatenate(_ds(5, pairs=True))
    with pytest.raises(ValueError, match="regression dataset and has no classes"):
        TextDataset(["a"], [1.5], ()).class_counts()


def test_batches_feed_a_keras_hub_preprocessor_for_single_texts_and_pairs():
    keras_hub = pytest.importorskip("keras_hub")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "good", "bad", "x"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=10)
    single = TextDataset(["The film good", "bad film"], [1, 0], ("neg", "pos"))
    x, y = next(iter(single.to_tf_dataset(batch_size=2).map(preprocessor)))
    assert x["token_ids"].numpy()[0, :5].tolist() == [2, 5, 6, 7, 3]  # [CLS] the film good [SEP]
    assert y.numpy().tolist() == [1, 0]
    pairs = TextDataset(["the film", "bad"], [0, 1], ("neg", "pos"), text_pairs=["good", "x x"])
    x, _ = next(iter(pairs.to_tf_dataset(batch_size=2).map(preprocessor)))
    assert x["token_ids"].numpy()[0, :6].tolist() == [2, 5, 6, 3, 7, 3]
    assert x["segment_ids"].numpy()[0, :6].tolist() == [0, 0, 0, 0, 1, 1]


def test_docstring_example_holds():
    result = doctest.testmod(dataset_module, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


def test_to_tf_dataset_runs_without_tf_data_autotuning():
    # keras_effattn.data.pipeline: autotuning's model thread could delay the end of fit/predict.
    assert _ds().to_tf_dataset(batch_size=4).options().autotune.enabled is False
