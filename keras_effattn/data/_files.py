"""Private helpers shared by the readers: UTF-8 decoding with a clear policy, gzip-aware reads."""

import gzip
import os
import pathlib
import zlib

ENCODING_ERRORS = ("strict", "replace")


def check_encoding_errors(encoding_errors):
    if encoding_errors not in ENCODING_ERRORS:
        raise ValueError(
            f"encoding_errors must be one of {ENCODING_ERRORS}, got {encoding_errors!r}: "
            "'strict' stops at the first non-UTF-8 byte, 'replace' substitutes U+FFFD."
        )


def decode(raw, where, encoding_errors="strict"):
    """Decodes UTF-8 bytes; strict mode raises a ValueError naming `where` and the byte offset.

    A leading UTF-8 byte order mark is dropped (GLUE's MRPC files start with one).
    """
    try:
        text = raw.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{where} is not valid UTF-8: byte {e.start} is {raw[e.start : e.start + 1]!r} "
            f"({e.reason}). Re-download or re-encode the file as UTF-8, or pass "
            "encoding_errors='replace' to substitute U+FFFD for bad bytes."
        ) from None
    return text.removeprefix("\ufeff")


def read_bytes(path):
    """The bytes of `path`, decompressed when it ends in `.gz`; corrupt gzip -> ValueError."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(
            f"{path} is corrupt or truncated ({type(e).__name__}: {e}); re-download it or "
            "pass the uncompressed file."
        ) from None


def read_text(path, encoding_errors="strict"):
    """The decoded text of `path` (`.gz` or plain)."""
    return decode(read_bytes(path), str(path), encoding_errors)


def require_exists(path, what, hint):
    """Raises FileNotFoundError naming `what` and a `hint` when `path` does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; {hint}")


def resolve_source(source, what, hint):
    """`"tfds"` stays `"tfds"`; anything else must be an existing path, returned as a Path."""
    if isinstance(source, str) and source == "tfds":
        return "tfds"
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source must be a path or 'tfds', got {type(source).__name__}; {hint}")
    path = pathlib.Path(source)
    require_exists(path, what, hint)
    return path
