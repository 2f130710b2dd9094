"""Seeded stratified splits and subsets: reproducible, disjoint, covering, class-preserving."""

import numpy as np
import pytest

from keras_effattn.data import (
    TextDataset,
    pooled_split,
    read_glue,
    read_imdb,
    stratified_split,
    stratified_split_indices,
    stratified_subset,
    take_subsets,
)


def _toy(n_per_class=(60, 40), name="toy"):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    texts = [f"text {i} class {y}" for i, y in enumerate(labels)]
    names = tuple(f"c{c}" for c in range(len(n_per_class)))
    return TextDataset(texts, labels, names, name=name)


def test_split_80_10_10_is_exact_disjoint_and_stratified():
    ds = _toy((600, 400))
    train, val, test = stratified_split(ds, (0.8, 0.1, 0.1), seed=0)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert train.class_counts().tolist() == [480, 320]
    assert val.class_counts().tolist() == [60, 40] == test.class_counts().tolist()
    texts = [set(p.texts) for p in (train, val, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert set.union(*texts) == set(ds.texts)
    assert (train.name, val.name, test.name) == ("toy/train", "toy/validation", "toy/test")
    # labels still match their texts
    for part in (train, val, test):
        assert all(t.endswith(f"class {y}") for t, y in zip(part.texts, part.labels))


def test_split_is_reproducible_and_seed_dependent():
    ds = _toy()
    a = stratified_split(ds, seed=5)
    b = stratified_split(ds, seed=5)
    c = stratified_split(ds, seed=6)
    assert all(x.texts == y.texts for x, y in zip(a, b))
    assert a[0].texts != c[0].texts
    # indices view matches the dataset view
    idx = stratified_split_indices(ds.labels, (0.8, 0.1, 0.1), seed=5)
    assert [ds.texts[i] for i in idx[1]] == a[1].texts


def test_uneven_class_sizes_add_up():
    ds = _toy((7, 5, 3))
    parts = stratified_split(ds, (0.5, 0.3, 0.2), seed=1)
    assert sum(len(p) for p in parts) == 15
    assert np.sum([p.class_counts() for p in parts], axis=0).tolist() == [7, 5, 3]


def test_pooled_60_20_20_over_official_splits():
    train, test = _toy((50, 50), "tr"), _toy((50, 50), "te")
    parts = pooled_split(train, test, seed=0)
    assert [len(p) for p in parts] == [120, 40, 40]
    assert parts[1].class_counts().tolist() == [20, 20]
    assert parts[0].name == "tr+te/train"


def test_regression_split_keeps_score_distribution():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 5, size=500).astype(np.float32)
    ds = TextDataset([f"s{i}" for i in range(500)], scores, (), name="sts")
    train, val, test = stratified_split(ds, seed=0)
    assert (len(train), len(val), len(test)) == (400, 50, 50)
    for part in (val, test):
        assert abs(float(part.labels.mean()) - float(scores.mean())) < 0.25
        assert part.labels.min() < 1.0 and part.labels.max() > 4.0


def test_subsets_proportional_and_balanced():
    ds = _toy((300, 100))
    prop = stratified_subset(ds, 40, seed=0)
    assert prop.class_counts().tolist() == [30, 10]
    bal = stratified_subset(ds, 40, seed=0, balanced=True)
    assert bal.class_counts().tolist() == [20, 20]
    assert bal.texts == stratified_subset(ds, 40, seed=0, balanced=True).texts
    tr, te = take_subsets(ds, _toy((50, 50), "t2"), 20, 10, seed=3)
    assert tr.class_counts().tolist() == [10, 10] and te.class_counts().tolist() == [5, 5]


def test_real_imdb_and_glue_split(data_dir):
    imdb = read_imdb(data_dir / "aclImdb_v1.tar.gz", "train", max_per_class=50, seed=0)
    train, val, test = stratified_split(imdb, seed=0)
    assert [p.class_counts().tolist() for p in (train, val, test)] == [[40, 40], [5, 5], [5, 5]]
    rte = read_glue("RTE", data_dir / "glue", "dev")
    a, b = stratified_split(rte, (0.5, 0.5), seed=0)
    assert a.is_pair and abs(len(a) - len(b)) <= 2
    assert sorted(a.texts + b.texts) == sorted(rte.texts)
    tr, te = take_subsets(rte, rte, 100, 50, seed=0)
    assert tr.class_counts().tolist() == [50, 50] and te.class_counts().tolist() == [25, 25]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fractions, match",
    [
        ((0.8, 0.1), "summing to 1"),
        ((1.0,), "two or more"),
        ((0.5, 0.6, -0.1), "positive"),
        (("a", "b"), "sequence of numbers"),
    ],
    ids=["sum", "single", "negative", "not-numbers"],
)
def test_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        stratified_split(_toy(), fractions)


def test_empty_part_and_bad_names():
    with pytest.raises(ValueError, match="part 'validation' of 'tiny' would be empty"):
        stratified_split(_toy((2, 2), "tiny"), (0.9, 0.05, 0.05))
    with pytest.raises(ValueError, match="one name per fraction"):
        stratified_split(_toy(), (0.5, 0.5), names=("a", "b", "c"))


def test_bad_subsets():
    ds = _toy((30, 10))
    with pytest.raises(ValueError, match=r"size=41 must lie in \[1, 40\]"):
        stratified_subset(ds, 41)
    with pytest.raises(ValueError, match="cannot split evenly over 2 classes"):
        stratified_subset(ds, 7, balanced=True)
    with pytest.raises(ValueError, match="only 10 of class 'c1'; ask for at most 20"):
        stratified_subset(ds, 30, balanced=True)
    with pytest.raises(ValueError, match="size must be an int"):
        stratified_subset(ds, 0.5)
