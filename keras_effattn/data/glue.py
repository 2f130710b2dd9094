"""GLUE tasks (Wang et al., 2019) from the original TSV files or tensorflow-datasets `glue/*`.

The TSVs are read exactly as GLUE ships them: tab-separated with `csv.QUOTE_NONE` (sentences
contain stray `"`), the UTF-8 byte order mark of MRPC dropped, CoLA's train/dev without a
header, plain or gzipped (`train.tsv` or `train.tsv.gz`). Class ids and names follow tfds
`glue/*`, so both sources give the same labels. Test files are not readable: GLUE hides their
labels.

`GLUE_TASKS` holds each task's layout and the metrics GLUE reports for it, as data:
accuracy for most tasks, F1 and accuracy for MRPC and QQP, Matthews correlation for CoLA,
Pearson and Spearman correlation for STS-B (a regression task with float labels in [0, 5]).
"""

import csv
import dataclasses
import io

import numpy as np

from keras_effattn.data import _files
from keras_effattn.data.dataset import TextDataset
from keras_effattn_runtime.cleaning import clean_text


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its columns are, how labels are written, which metrics it reports.

    Args:
        name: canonical name, also the folder name (`"MRPC"`, `"STS-B"`).
        text_columns: header names of the one or two text columns (column indices for a file
            without a header).
        label_column: header name (or index) of the label column.
        class_names: tuple of class names, index = class id; `()` for regression (STS-B).
        label_values: how each class is written in the TSV, same order as `class_names`.
        metrics: metric names GLUE reports, the first being the one to select models on.
        has_header: whether train/dev files start with a header line.
        tfds_name: tensorflow-datasets config, e.g. `"glue/mrpc"`.
        tfds_text_features: tfds feature names of the text columns.
        dev_splits: names of the dev files (`("dev",)`; MNLI has matched and mismatched).
        num_columns: fields per row (checked, so a QUOTE_NONE slip is caught).
    """

    name: str
    text_columns: tuple
    label_column: object
    class_names: tuple
    label_values: tuple
    metrics: tuple
    has_header: bool
    tfds_name: str
    tfds_text_features: tuple
    dev_splits: tuple = ("dev",)
    num_columns: int | None = None

    @property
    def is_regression(self):
        return not self.class_names

    @property
    def is_pair(self):
        return len(self.text_columns) == 2


_BINARY = ("0", "1")
GLUE_TASKS = {
    t.name: t
    for t in (
        GlueTask(
            "CoLA", (3,), 1, ("unacceptable", "acceptable"), _BINARY, ("matthews_corrcoef",),
            False, "glue/cola", ("sentence",), num_columns=4,
        ),
        GlueTask(
            "SST-2", ("sentence",), "label", ("negative", "positive"), _BINARY, ("accuracy",),
            True, "glue/sst2", ("sentence",), num_columns=2,
        ),
        GlueTask(
            "MRPC", ("#1 String", "#2 String"), "Quality", ("not_equivalent", "equivalent"),
            _BINARY, ("f1", "accuracy"), True, "glue/mrpc", ("sentence1", "sentence2"),
            num_columns=5,
        ),
        GlueTask(
            "QQP", ("question1", "question2"), "is_duplicate", ("not_duplicate", "duplicate"),
            _BINARY, ("f1", "accuracy"), True, "glue/qqp", ("question1", "question2"),
            num_columns=6,
        ),
        GlueTask(
            "STS-B", ("sentence1", "sentence2"), "score", (), (), ("pearson", "spearman"), True,
            "glue/stsb", ("sentence1", "sentence2"), num_columns=10,
        ),
        GlueTask(
            "MNLI", ("sentence1", "sentence2"), "gold_label",
            ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
            ("accuracy",), True, "glue/mnli", ("premise", "hypothesis"),
            dev_splits=("dev_matched", "dev_mismatched"),
        ),
        GlueTask(
            "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
            ("entailment", "not_entailment"), ("accuracy",), True, "glue/qnli",
            ("question", "sentence"), num_columns=4,
        ),
        GlueTask(
            "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
            ("entailment", "not_entailment"), ("accuracy",), True, "glue/rte",
            ("sentence1", "sentence2"), num_columns=4,
        ),
        GlueTask(
            "WNLI", ("sentence1", "sentence2"), "label", ("not_entailment", "entailment"),
            _BINARY, ("accuracy",), True, "glue/wnli", ("sentence1", "sentence2"),
            num_columns=4,
        ),
    )
}  # fmt: skip
STSB_SCORE_RANGE = (0.0, 5.0)
_SPLIT_ALIASES = {
    "validation": "dev",
    "validation_matched": "dev_matched",
    "validation_mismatched": "dev_mismatched",
}
_HINT = (
    "pass the GLUE folder holding <Task>/{train,dev}.tsv[.gz] (the project's copy is "
    "../shared/data/glue), one task's folder, or 'tfds' / a prepared tfds data_dir."
)


def glue_task(task):
    """The `GlueTask` for a name, case- and dash-insensitive (`"sst2"`, `"STS-B"`, `"stsb"`)."""
    key = str(task).replace("-", "").replace("_", "").lower()
    for name, spec in GLUE_TASKS.items():
        if name.replace("-", "").lower() == key:
            return spec
    raise ValueError(f"Unknown GLUE task {task!r}; choose one of {sorted(GLUE_TASKS)}.")


def read_glue(
    task,
    source,
    split="train",
    clean=False,
    encoding_errors="strict",
    bad_rows="raise",
):
    """Reads one split of a GLUE task.

    Args:
        task: task name, e.g. `"MRPC"`, `"rte"`, `"STS-B"` (see `GLUE_TASKS`).
        source: the GLUE folder (holding `<Task>/`), one task's folder, or `"tfds"` / a tfds
            data_dir with a prepared `glue/<task>` (never downloaded: an unprepared one raises
            `FileNotFoundError` at once).
        split: `"train"` or `"dev"` (alias `"validation"`); MNLI has `"dev_matched"` and
            `"dev_mismatched"`.
        clean: bool, default `False`: GLUE text is already clean (and partly tokenised);
            `True` applies `clean_text`.
        encoding_errors: `"strict"` (default: a non-UTF-8 byte raises a `ValueError` naming the
            file and line) or `"replace"` (U+FFFD).
        bad_rows: `"raise"` (default) or `"skip"`: what to do with a row that has the wrong
            number of fields, an empty text or an unknown label. tfds skips such rows; the five
            tasks in ../shared/data have none.

    Returns:
        A `TextDataset` named `"glue/<task>/<split>"`: `text_pairs` set for pair tasks, `int32`
        labels with the task's `class_names`, or `float32` scores for STS-B.

    Example (``read_glue("MRPC", "../shared/data/glue", "dev")`` gives MRPC's 408 pairs; here
    an SST-2 folder of two rows in the same layout):
    >>> import pathlib, tempfile
    >>> glue = pathlib.Path(tempfile.mkdtemp())
    >>> (glue / "SST-2").mkdir()
    >>> rows = "sentence\\tlabel\\na fine film \\t1\\ndull \\t0\\n"
    >>> _ = (glue / "SST-2" / "dev.tsv").write_text(rows, encoding="utf-8")
    >>> sst2 = read_glue("SST-2", glue, "dev")
    >>> len(sst2), sst2.class_names, GLUE_TASKS["SST-2"].metrics
    (2, ('negative', 'positive'), ('accuracy',))

    References:
        Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
        Understanding", ICLR 2019.
    """
    spec = glue_task(task)
    split_name = _SPLIT_ALIASES.get(split, split)
    allowed = ("train",) + spec.dev_splits
    if split_name not in allowed:
        extra = " (GLUE hides test labels)" if str(split).startswith("test") else ""
        raise ValueError(f"split for {spec.name} must be one of {allowed}, got {split!r}{extra}.")
    _files.check_encoding_errors(encoding_errors)
    if bad_rows not in ("raise", "skip"):
        raise ValueError(f"bad_rows must be 'raise' or 'skip', got {bad_rows!r}.")
    kind, location = _resolve_source(spec, source, split_name)
    if kind == "tfds":
        texts, pairs, labels = _read_tfds(spec, location, split_name, encoding_errors, bad_rows)
    else:
        texts, pairs, labels = _read_tsv(spec, location, encoding_errors, bad_rows)
    if clean:
        texts = [clean_text(t) for t in texts]
        pairs = None if pairs is None else [clean_text(t) for t in pairs]
    return TextDataset(
        texts,
        np.asarray(labels),
        spec.class_names,
        text_pairs=pairs,
        name=f"glue/{spec.name.lower()}/{split_name}",
    )


def _pack_rows(spec, texts, pairs, labels, empty_message):
    """Checks that rows were read and returns (texts, pairs or None, labels as int32/float32)."""
    if not texts:
        raise ValueError(empty_message)
    labels = np.asarray(labels, np.float32 if spec.is_regression else np.int32)
    return texts, (pairs if spec.is_pair else None), labels


def _resolve_source(spec, source, split):
    path = _files.resolve_source(source, "GLUE source", _HINT)
    if path == "tfds":
        return "tfds", None
    if path.is_file():
        return "tsv", path
    folders = []
    for root in (path, path / "glue"):
        if root.is_dir():
            folders += [p for p in root.iterdir() if p.is_dir() and _same_task(p.name, spec)]
    for folder in [*folders, path]:
        for name in (f"{split}.tsv", f"{split}.tsv.gz"):
            if (folder / name).is_file():
                return "tsv", folder / name
    if (path / spec.tfds_name).is_dir():
        return "tfds", path
    raise ValueError(
        f"GLUE folder {str(path)!r} has no {spec.name}/{split}.tsv[.gz] (nor {split}.tsv[.gz] "
        f"directly inside, nor a tfds {spec.tfds_name}/ folder); {_HINT}"
    )


def _same_task(folder_name, spec):
    return folder_name.replace("-", "").lower() == spec.name.replace("-", "").lower()


def _read_tsv(spec, path, encoding_errors, bad_rows):
    text = _files.read_text(path, encoding_errors)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, None) if spec.has_header else None
    if spec.has_header:
        if header is None:
            raise ValueError(f"GLUE file {path} is empty; re-download {spec.name}.")
        missing = [c for c in (*spec.text_columns, spec.label_column) if c not in header]
        if missing:
            raise ValueError(
                f"GLUE file {path} has header {header}, without the {spec.name} columns "
                f"{missing}; is it the {spec.name} {path.name} file?"
            )
        text_idx = [header.index(c) for c in spec.text_columns]
        label_idx = header.index(spec.label_column)
        width = len(header)
    else:
        text_idx, label_idx, width = list(spec.text_columns), spec.label_column, spec.num_columns
    values = {v: i for i, v in enumerate(spec.label_values)}
    texts, pairs, labels = [], [], []
    first_line = 2 if spec.has_header else 1
    for line, row in enumerate(rows, start=first_line):
        problem = None
        if len(row) != width:
            problem = f"has {len(row)} tab-separated fields, expected {width}"
        else:
            fields = [row[i].strip() for i in text_idx]
            raw_label = row[label_idx].strip()
            if not all(fields):
                problem = "has an empty text field"
            elif spec.is_regression:
                try:
                    label = float(raw_label)
                except ValueError:
                    label = None
                lo, hi = STSB_SCORE_RANGE
                if label is None or not lo <= label <= hi:
                    problem = f"has score {raw_label!r}, expected a number in [{lo}, {hi}]"
            elif raw_label not in values:
                problem = (
                    f"has label {raw_label!r}, outside the {spec.name} classes "
                    f"{spec.label_values} ({spec.class_names})"
                )
            else:
                label = values[raw_label]
        if problem:
            if bad_rows == "skip":
                continue
            raise ValueError(
                f"GLUE file {path}, line {line} {problem}; fix the file (read it with "
                "csv.QUOTE_NONE) or pass bad_rows='skip' to drop such rows."
            )
        texts.append(fields[0])
        if spec.is_pair:
            pairs.append(fields[1])
        labels.append(label)
    return _pack_rows(
        spec, texts, pairs, labels,
        f"GLUE file {path} holds no {spec.name} examples; re-download it.")


def _read_tfds(spec, data_dir, split, encoding_errors, bad_rows):
    import tensorflow_datasets as tfds

    tfds_split = {"dev": "validation"}.get(split, split.replace("dev_", "validation_"))
    builder = tfds.builder(spec.tfds_name, data_dir=None if data_dir is None else str(data_dir))
    try:
        ds = builder.as_dataset(split=tfds_split, shuffle_files=False)
    except AssertionError:
        raise FileNotFoundError(
            f"tensorflow-datasets has no prepared {spec.tfds_name} in {builder.data_dir!r}, and "
            "keras_effattn never downloads. Read the TSV files instead: "
            f"read_glue({spec.name!r}, '../shared/data/glue', {split!r}); or prepare it once "
            f"online with tfds.builder({spec.tfds_name!r}).download_and_prepare()."
        ) from None
    texts, pairs, labels = [], [], []
    for n, example in enumerate(tfds.as_numpy(ds)):
        where = f"tfds {spec.tfds_name}/{tfds_split} example {n}"
        fields = [
            _files.decode(example[f], where, encoding_errors).strip()
            for f in spec.tfds_text_features
        ]
        label = example["label"]
        if not all(fields):
            if bad_rows == "skip":
                continue
            raise ValueError(f"{where} has an empty text; pass bad_rows='skip' to drop it.")
        texts.append(fields[0])
        if spec.is_pair:
            pairs.append(fields[1])
        labels.append(label)
    return _pack_rows(
        spec, texts, pairs, labels,
        f"tfds {spec.tfds_name}/{tfds_split} is empty; prepare it again.")
