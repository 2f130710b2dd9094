"""Data: IMDB, GLUE and WikiText readers, cleaning, seeded splits and dataset statistics.

Readers return a `TextDataset` (texts + labels in memory) whose `to_tf_dataset` gives the
tf.data pipeline. Shared data lives in `../shared/data` relative to the repository root.
"""

from keras_effattn.data.dataset import TextDataset
from keras_effattn.data.glue import GLUE_TASKS, GlueTask, glue_task, read_glue
from keras_effattn.data.imdb import IMDB_CLASS_NAMES, IMDB_SPLITS, read_imdb
from keras_effattn.data.splits import (
    pooled_split,
    stratified_split,
    stratified_split_indices,
    stratified_subset,
    take_subsets,
)
from keras_effattn.data.stats import (
    dataset_statistics,
    format_statistics,
    plot_statistics,
    token_lengths,
)
from keras_effattn.data.wikitext import (
    OFFLINE_NOTE,
    OFFLINE_SPLITS,
    WIKITEXT_FORMATS,
    WIKITEXT_SPLITS,
    WikiText,
    read_wikitext,
)
from keras_effattn_runtime.cleaning import ENGLISH_STOP_WORDS, NEGATIONS, clean_text, clean_texts

__all__ = [
    "ENGLISH_STOP_WORDS",
    "GLUE_TASKS",
    "IMDB_CLASS_NAMES",
    "IMDB_SPLITS",
    "NEGATIONS",
    "OFFLINE_NOTE",
    "OFFLINE_SPLITS",
    "WIKITEXT_FORMATS",
    "WIKITEXT_SPLITS",
    "GlueTask",
    "TextDataset",
    "WikiText",
    "clean_text",
    "clean_texts",
    "dataset_statistics",
    "format_statistics",
    "glue_task",
    "plot_statistics",
    "pooled_split",
    "read_glue",
    "read_imdb",
    "read_wikitext",
    "stratified_split",
    "stratified_split_indices",
    "stratified_subset",
    "take_subsets",
    "token_lengths",
]
