"""Utilities: atomic result writers, run metadata, peak-memory readers."""

from keras_effattn.utils.io import (
    atomic_path,
    read_csv,
    read_json,
    save_figure,
    save_keras_model,
    save_weights,
    write_csv,
    write_json,
    write_text,
)
from keras_effattn.utils.memory import MemoryMeter, peak_rss_bytes
from keras_effattn.utils.metadata import run_metadata

__all__ = [
    "MemoryMeter",
    "atomic_path",
    "peak_rss_bytes",
    "read_csv",
    "read_json",
    "run_metadata",
    "save_figure",
    "save_keras_model",
    "save_weights",
    "write_csv",
    "write_json",
    "write_text",
]
