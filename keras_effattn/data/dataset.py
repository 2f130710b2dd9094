"""`TextDataset`: labelled texts (or text pairs) in memory, with a tf.data view.

Every reader in `keras_effattn.data` returns one. It is small and frozen: the texts stay a Python
list of `str`, the labels a NumPy array (`int32` class ids, or `float32` scores for regression
tasks such as STS-B), so slicing, splitting and statistics need no TensorFlow; only
`to_tf_dataset` builds a pipeline.
"""

import dataclasses

import numpy as np

from keras_effattn.data.pipeline import without_autotune


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset:
    """Labelled texts, optionally paired (premise/hypothesis, sentence1/sentence2).

    Classification datasets have `class_names` and `int32` labels in `[0, len(class_names))`;
    regression datasets (STS-B) have no class names and `float32` labels. The constructor checks
    everything a reader can get wrong and raises `ValueError` naming the problem: an empty
    dataset, a text that is not a non-blank `str`, a label count that does not match the texts,
    a label outside the class range or not a whole number.

    Args:
        texts: list of `str`, one per example (the first segment of a pair).
        labels: array-like of class ids (classification) or scores (regression).
        class_names: tuple of `str`; empty for regression. Default `()`.
        text_pairs: optional list of `str`, the second segment, same length as `texts`.
            Default `None` (single texts).
        name: a short name used in error messages and reports, e.g. `"imdb/train"`.

    Example:
    >>> ds = TextDataset(["a fine film", "dull"], [1, 0], class_names=("neg", "pos"))
    >>> len(ds), ds.class_counts().tolist()
    (2, [1, 1])
    >>> batches = ds.to_tf_dataset(batch_size=2)  # yields (string[2], int32[2])
    """

    texts: list
    labels: np.ndarray
    class_names: tuple = ()
    text_pairs: list | None = None
    name: str = "dataset"

    def __post_init__(self):
        texts = list(self.texts)
        label = f"{self.name!r}"
        if not texts:
            raise ValueError(
                f"TextDataset {label} has no texts; check the source path and the split, "
                "or a subset size that selected nothing."
            )
        _check_texts(texts, label, "text")
        pairs = None
        if self.text_pairs is not None:
            pairs = list(self.text_pairs)
            if len(pairs) != len(texts):
                raise ValueError(
                    f"TextDataset {label}: {len(pairs)} text_pairs for {len(texts)} texts; "
                    "give exactly one second segment per text."
                )
            _check_texts(pairs, label, "text_pairs")
        class_names = tuple(str(c) for c in self.class_names)
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"TextDataset {label}: class_names {class_names} repeat a name.")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.shape[0] != len(texts):
            raise ValueError(
                f"TextDataset {label}: labels have shape {labels.shape} for {len(texts)} texts; "
                "give one label per text."
            )
        if labels.dtype.kind not in "biuf":
            raise ValueError(
                f"TextDataset {label}: labels must be numbers, got dtype {labels.dtype}; "
                "map label names to ids with class_names.index(name)."
            )
        if not np.all(np.isfinite(labels.astype(np.float64))):
            raise ValueError(f"TextDataset {label}: labels hold NaN or inf; drop those rows.")
        if class_names:
            as_float = labels.astype(np.float64)
            if np.any(as_float != np.round(as_float)):
                raise ValueError(
                    f"TextDataset {label}: class labels must be whole numbers, got "
                    f"{as_float[as_float != np.round(as_float)][:3].tolist()}; for scores use "
                    "class_names=() (regression)."
                )
            bad = (as_float < 0) | (as_float >= len(class_names))
            if np.any(bad):
                first = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"TextDataset {label}: label {labels[first].item()!r} at index {first} is outside "
                    f"the class range [0, {len(class_names)}) of class_names {class_names}; "
                    "fix the labels or add the missing class names."
                )
            labels = labels.astype(np.int32)
        else:
            labels = labels.astype(np.float32)
        labels.setflags(write=False)
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "text_pairs", pairs)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", class_names)

    def __len__(self):
        return len(self.texts)

    def __repr__(self):
        kind = "regression" if self.is_regression else f"classes={self.class_names}"
        pairs = ", pairs" if self.is_pair else ""
        return f"TextDataset(name={self.name!r}, n={len(self)}, {kind}{pairs})"

    @property
    def is_regression(self):
        """True when labels are float scores (no class names)."""
        return not self.class_names

    @property
    def is_pair(self):
        """True when each example is a pair of texts."""
        return self.text_pairs is not None

    @property
    def num_classes(self):
        """Number of classes; 0 for regression."""
        return len(self.class_names)

    def class_counts(self):
        """Examples per class as an `int64` array of length `num_classes`."""
        if self.is_regression:
            raise ValueError(
                f"TextDataset {self.name!r} is a regression dataset and has no classes; "
                "summarise its labels with keras_effattn.data.dataset_statistics instead."
            )
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def select(self, indices, name=None):
        """A new dataset holding the examples at `indices` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(
                f"select: indices must lie in [0, {len(self)}) for dataset {self.name!r}, "
                f"got min {idx.min()} and max {idx.max()}."
            )
        return dataclasses.replace(
            self,
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
            name=self.name if name is None else name,
        )

    def head(self, n):
        """The first `n` examples (all of them when `n >= len(self)`)."""
        if int(n) < 1:
            raise ValueError(f"head: n must be >= 1, got {n}.")
        return self.select(np.arange(min(int(n), len(self))))

    def shuffled(self, seed=0):
        """The same examples in a seeded random order."""
        return self.select(np.random.default_rng(seed).permutation(len(self)))

    def map_texts(self, fn):
        """A new dataset with `fn` applied to every text (both segments of a pair)."""
        return dataclasses.replace(
            self,
            texts=[fn(t) for t in self.texts],
            text_pairs=None if self.text_pairs is None else [fn(t) for t in self.text_pairs],
        )

    def concatenate(self, other, name=None):
        """This dataset followed by `other` (same class names and pair-ness)."""
        if self.class_names != other.class_names or self.is_pair != other.is_pair:
            raise ValueError(
                f"concatenate: {self.name!r} {self.class_names} pairs={self.is_pair} and "
                f"{other.name!r} {other.class_names} pairs={other.is_pair} differ; concatenate "
                "splits of the same task only."
            )
        return dataclasses.replace(
            self,
            texts=self.texts + other.texts,
            labels=np.concatenate([self.labels, other.labels]),
            text_pairs=None if not self.is_pair else self.text_pairs + other.text_pairs,
            name=name or f"{self.name}+{other.name}",
        )

    def to_tf_dataset(self, batch_size, shuffle=False, seed=0, drop_remainder=False):
        """A batched `tf.data.Dataset` of `(text, label)` or `((text, text_pair), label)`.

        Texts are `tf.string`, labels `int32` (classification) or `float32` (regression), so the
        batches feed a KerasHub preprocessor (`ds.map(preprocessor)`) or a model directly.

        Args:
            batch_size: examples per batch, `1 <= batch_size <= len(self)`.
            shuffle: bool, default `False`. Shuffle the whole dataset, with a new seeded order
                each epoch (the sequence of orders is fixed by `seed`).
            seed: int, default 0.
            drop_remainder: bool, default `False`. Drop the last, smaller batch.

        Returns:
            A prefetched `tf.data.Dataset`.
        """
        import tensorflow as tf

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise ValueError(f"batch_size must be an int, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if batch_size > len(self):
            raise ValueError(
                f"batch_size={batch_size} is larger than dataset {self.name!r} "
                f"({len(self)} examples); use batch_size <= {len(self)} or a larger subset."
            )
        texts = tf.constant(self.texts, dtype=tf.string)
        if self.is_pair:
            features = (texts, tf.constant(self.text_pairs, dtype=tf.string))
        else:
            features = texts
        ds = tf.data.Dataset.from_tensor_slices((features, self.labels))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
        return without_autotune(ds.prefetch(tf.data.AUTOTUNE))


def _check_texts(texts, label, field):
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"TextDataset {label}: {field}[{i}] is {type(text).__name__}, not str; decode "
                "bytes first (keras_effattn.data readers do this)."
            )
        if not text.strip():
            raise ValueError(
                f"TextDataset {label}: {field}[{i}] is empty; drop empty examples before "
                "building the dataset."
            )
