"""Reproducible, seeded, stratified splits and subsets of a `TextDataset`.

Stratified means every part keeps the class proportions of the whole: each class is shuffled
with the seed and cut in the requested fractions (largest-remainder rounding, so the counts of a
class add up exactly), then each part is shuffled. Regression labels (STS-B scores) are
stratified by quantile bins. The same dataset and seed always give the same parts, on any
machine, since only NumPy's `default_rng` is used.

Typical uses:

- 80/10/10 train/validation/test of one labelled set: `stratified_split(ds)`;
- 60/20/20 over IMDB's official train+test: `pooled_split(train, test)`;
- the 5,000/5,000 subsets of the research plans: `take_subsets(train, test, 5000, 5000)`.
"""

import numpy as np

DEFAULT_NAMES = {2: ("train", "test"), 3: ("train", "validation", "test")}
_REGRESSION_BINS = 10


def stratified_split_indices(labels, fractions=(0.8, 0.1, 0.1), seed=0, regression=False):
    """Index arrays of a seeded stratified split.

    Args:
        labels: 1-D array of class ids (or scores with `regression=True`).
        fractions: positive fractions summing to 1, one per part. Default `(0.8, 0.1, 0.1)`.
        seed: int, default 0.
        regression: bool, default `False`. Stratify float scores by 10 quantile bins.

    Returns:
        A list of `int64` index arrays, one per part: disjoint, together covering every index,
        each in a seeded random order.
    """
    labels = np.asarray(labels)
    fractions = _check_fractions(fractions)
    strata = _strata(labels, regression)
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for stratum in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == stratum))
        counts = _allocate(idx.size, fractions)
        for part, piece in zip(parts, np.split(idx, np.cumsum(counts)[:-1])):
            part.append(piece)
    return [rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts]


def stratified_split(dataset, fractions=(0.8, 0.1, 0.1), seed=0, names=None):
    """Splits a `TextDataset` into stratified parts.

    Args:
        dataset: a `TextDataset`.
        fractions: positive fractions summing to 1. Default `(0.8, 0.1, 0.1)`.
        seed: int, default 0.
        names: names of the parts, default `("train", "validation", "test")` for three parts,
            `("train", "test")` for two; used in each part's `name`.

    Returns:
        A tuple of `TextDataset`, one per fraction.

    Example (IMDB's 25,000 training reviews split 20,000 / 2,500 / 2,500 the same way):
    >>> from keras_effattn.data.dataset import TextDataset
    >>> ds = TextDataset([f"review {i}" for i in range(20)], [i % 2 for i in range(20)],
    ...                  class_names=("neg", "pos"))
    >>> train, val, test = stratified_split(ds, (0.8, 0.1, 0.1))
    >>> len(train), len(val), len(test), train.class_counts().tolist()
    (16, 2, 2, [8, 8])
    """
    fractions = _check_fractions(fractions)
    names = _part_names(names, len(fractions))
    parts = stratified_split_indices(dataset.labels, fractions, seed, dataset.is_regression)
    for name, idx in zip(names, parts):
        if idx.size == 0:
            raise ValueError(
                f"stratified_split: part {name!r} of {dataset.name!r} would be empty "
                f"({len(dataset)} examples, fractions {fractions}); use larger fractions or "
                "more data."
            )
    return tuple(
        dataset.select(idx, name=f"{dataset.name}/{name}") for name, idx in zip(names, parts)
    )


def pooled_split(train, test, fractions=(0.6, 0.2, 0.2), seed=0, names=None):
    """Pools the official train and test sets, then splits them stratified (default 60/20/20).

    Example (IMDB's 25,000 + 25,000 reviews give 30,000 / 10,000 / 10,000):
    >>> from keras_effattn.data.dataset import TextDataset
    >>> ds = TextDataset([f"review {i}" for i in range(20)], [i % 2 for i in range(20)],
    ...                  class_names=("neg", "pos"))
    >>> [len(p) for p in pooled_split(ds, ds)]
    [24, 8, 8]
    """
    pooled = train.concatenate(test, name=f"{train.name}+{test.name}")
    return stratified_split(pooled, fractions, seed, names)


def stratified_subset(dataset, size, seed=0, balanced=False):
    """A seeded subset of `size` examples.

    Args:
        dataset: a `TextDataset`.
        size: int, `1 <= size <= len(dataset)`.
        seed: int, default 0.
        balanced: bool, default `False`: keep the class proportions. `True`: the same number
            of examples per class (`size` must then be a multiple of the class count).

    Returns:
        A `TextDataset` of `size` examples in a seeded random order.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an int, got {size!r}.")
    if not 1 <= size <= len(dataset):
        raise ValueError(
            f"size={size} must lie in [1, {len(dataset)}] for dataset {dataset.name!r}; "
            "ask for fewer examples."
        )
    strata = _strata(dataset.labels, dataset.is_regression)
    values, counts = np.unique(strata, return_counts=True)
    if balanced:
        if dataset.is_regression:
            raise ValueError("balanced=True needs classes; regression datasets have none.")
        per_class, rest = divmod(size, dataset.num_classes)
        if rest:
            raise ValueError(
                f"balanced subset of size {size} cannot split evenly over "
                f"{dataset.num_classes} classes; use a multiple of {dataset.num_classes}."
            )
        full = np.bincount(dataset.labels, minlength=dataset.num_classes)
        if full.min() < per_class:
            worst = dataset.class_names[int(full.argmin())]
            raise ValueError(
                f"balanced subset needs {per_class} examples per class but {dataset.name!r} "
                f"has only {full.min()} of class {worst!r}; ask for at most "
                f"{full.min() * dataset.num_classes}."
            )
        values = np.arange(dataset.num_classes)
        take = np.full(dataset.num_classes, per_class)
    else:
        take = _allocate(size, counts / counts.sum())
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(strata == value))[:k] for value, k in zip(values, take)
    ]
    order = rng.permutation(np.concatenate(chosen))
    return dataset.select(order)


def take_subsets(train, test, train_size=5000, test_size=5000, seed=0, balanced=True):
    """Seeded subsets of the official train and test sets, e.g. the 5,000/5,000 of the plans.

    Returns:
        `(train_subset, test_subset)`, balanced per class by default.
    """
    return (
        stratified_subset(train, train_size, seed, balanced),
        stratified_subset(test, test_size, seed + 1, balanced),
    )


def _check_fractions(fractions):
    try:
        fractions = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be a sequence of numbers, got {fractions!r}.") from None
    if len(fractions) < 2 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be two or more positive numbers summing to 1, got {fractions} "
            f"(sum {sum(fractions):.6g}); e.g. (0.8, 0.1, 0.1) or (0.6, 0.2, 0.2)."
        )
    return fractions


def _part_names(names, n):
    if names is None:
        return DEFAULT_NAMES.get(n, tuple(f"part{i}" for i in range(n)))
    names = tuple(str(x) for x in names)
    if len(names) != n:
        raise ValueError(f"names {names} must give one name per fraction ({n}).")
    return names


def _strata(labels, regression):
    labels = np.asarray(labels)
    if not regression:
        return labels
    edges = np.quantile(labels, np.linspace(0, 1, _REGRESSION_BINS + 1)[1:-1])
    return np.searchsorted(np.unique(edges), labels, side="right")


def _allocate(total, weights):
    """Largest-remainder rounding of `total * weights` to integers summing to `total`."""
    weights = np.asarray(weights, np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = int(total - counts.sum())
    if short:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts
