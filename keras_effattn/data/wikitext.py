"""WikiText (Merity et al., 2016) for masked-LM: the tokens (`<unk>`) and raw formats, by path.

Files are named as in the official archives, `wiki.<split>.tokens` and `wiki.<split>.raw`
(WikiText-2 and WikiText-103 alike), plain or gzipped. The text is split into its Wikipedia
articles: an article starts at a top-level heading line `" = Title = "` standing between blank
lines (section headings are `" = = Section = = "`). Lines keep WikiText's own tokenisation
(`@-@`, `@,@`, `@.@`) unless `detokenize=True`.

Offline setting: the project's copy (`../shared/data/wikitext-2*/`) holds only the valid and
test splits, so offline masked-LM training uses **valid** and evaluation uses **test**
(`OFFLINE_SPLITS`); every perplexity measured that way must say so (`OFFLINE_NOTE`).
"""

import dataclasses
import os
import pathlib
import re

import numpy as np

from keras_effattn.data import _files
from keras_effattn.data.pipeline import without_autotune

WIKITEXT_SPLITS = ("train", "valid", "test")
WIKITEXT_FORMATS = ("tokens", "raw")
OFFLINE_SPLITS = {"train": "valid", "eval": "test"}
OFFLINE_NOTE = (
    "WikiText-2 offline: trained on the valid split and evaluated on the test split (the shared "
    "copy has no train split), so this perplexity is not comparable with published numbers."
)
_FILE = re.compile(r"^wiki\.(train|valid|test)\.(tokens|raw)(\.gz)?$")
_TITLE = re.compile(r"^ = [^=].* = $")
_DETOKENIZE = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))


@dataclasses.dataclass(frozen=True, eq=False)
class WikiText:
    """One WikiText split as articles.

    Args:
        documents: list of `str`, one per article: its non-blank lines, stripped, joined by
            `"\\n"` (the title and section headings included).
        titles: list of `str`, the article titles.
        split: `"train"`, `"valid"` or `"test"`.
        format: `"tokens"` or `"raw"`.
        num_lines: lines in the file, blank ones included.
        num_words: whitespace-separated tokens in the file.
        path: the file read.
    """

    documents: list
    titles: list
    split: str
    format: str
    num_lines: int
    num_words: int
    path: str = ""

    def __len__(self):
        return len(self.documents)

    @property
    def num_tokens_with_eos(self):
        """Words plus one end-of-sentence token per line: the count the WikiText paper reports
        (WikiText-2: 217,646 valid, 245,569 test)."""
        return self.num_words + self.num_lines

    @property
    def lines(self):
        """All non-blank lines of all articles, in order."""
        return [line for doc in self.documents for line in doc.split("\n")]

    def chunks(self, max_words):
        """Consecutive pieces of at most `max_words` words, never crossing an article boundary.

        Suits masked-LM training: each chunk is one example for a KerasHub
        `MaskedLMPreprocessor` (pick `max_words` so its WordPiece count fits the sequence length,
        e.g. 96 words for 128 tokens).
        """
        if isinstance(max_words, bool) or not isinstance(max_words, (int, np.integer)):
            raise ValueError(f"max_words must be a positive int, got {max_words!r}.")
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}.")
        out = []
        for doc in self.documents:
            words = doc.split()
            out.extend(" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words))
        return out

    def to_tf_dataset(self, batch_size, max_words=96, shuffle=False, seed=0):
        """A batched `tf.data.Dataset` of `tf.string` chunks (see `chunks`)."""
        import tensorflow as tf

        pieces = self.chunks(max_words)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise ValueError(f"batch_size must be an int, got {batch_size!r}.")
        if not 1 <= batch_size <= len(pieces):
            raise ValueError(
                f"batch_size={batch_size} must lie in [1, {len(pieces)}] (the chunks of "
                f"wikitext {self.split}); use a smaller batch or smaller max_words."
            )
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(pieces, dtype=tf.string))
        if shuffle:
            ds = ds.shuffle(len(pieces), seed=seed, reshuffle_each_iteration=True)
        return without_autotune(ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE))


def read_wikitext(path, split=None, format=None, detokenize=False, encoding_errors="strict"):
    """Reads a WikiText split, tokens or raw format.

    Args:
        path: a `wiki.<split>.<tokens|raw>[.gz]` file, or the folder holding them
            (`wikitext-2`, `wikitext-2-raw`, `wikitext-103`, ...).
        split: `"train"`, `"valid"` or `"test"`; required for a folder, checked against the
            name for a file. The shared copy has only valid and test: see `OFFLINE_SPLITS`.
        format: `"tokens"`, `"raw"` or `None` (default: whichever the folder holds).
        detokenize: bool, default `False`. Turn `" @-@ "`, `" @,@ "`, `" @.@ "` back into
            `-`, `,`, `.`.
        encoding_errors: `"strict"` (default: a non-UTF-8 byte raises a `ValueError` naming
            the file) or `"replace"`.

    Returns:
        A `WikiText` with the split's articles.

    Example (``read_wikitext("../shared/data/wikitext-2", OFFLINE_SPLITS["train"])`` reads the
    shared copy's valid split: 60 articles, 217,646 tokens with end-of-line markers; here a
    two-article file in the same format):
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "wiki.valid.tokens").write_text(
    ...     " \\n = Title = \\n \\n The cat sat on the mat . \\n It was 3 @,@ 000 years old . \\n"
    ...     " \\n = Other = \\n \\n Another one . \\n", encoding="utf-8")
    >>> train = read_wikitext(folder, "valid")
    >>> len(train), train.num_tokens_with_eos
    (2, 33)
    >>> train.chunks(max_words=4)[:2]
    ['= Title = The', 'cat sat on the']

    References:
        Merity et al., "Pointer Sentinel Mixture Models", ICLR 2017 (arXiv:1609.07843).
    """
    if split is not None and split not in WIKITEXT_SPLITS:
        raise ValueError(f"split must be one of {WIKITEXT_SPLITS} or None, got {split!r}.")
    if format is not None and format not in WIKITEXT_FORMATS:
        raise ValueError(f"format must be one of {WIKITEXT_FORMATS} or None, got {format!r}.")
    _files.check_encoding_errors(encoding_errors)
    file, file_split, file_format = _resolve(path, split, format)
    text = _files.read_text(file, encoding_errors)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it opens no new one
    num_words = sum(len(line.split()) for line in lines)
    if num_words == 0:
        raise ValueError(f"WikiText file {file} is empty; re-download it.")
    documents, titles = _split_articles(lines, detokenize)
    return WikiText(
        documents=documents,
        titles=titles,
        split=file_split,
        format=file_format,
        num_lines=len(lines),
        num_words=num_words,
        path=str(file),
    )


def _resolve(path, split, format):
    hint = (
        "pass a wiki.<split>.<tokens|raw>[.gz] file or its folder, e.g. ../shared/data/wikitext-2."
    )
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file or folder path, got {type(path).__name__}; {hint}")
    path = pathlib.Path(path)
    _files.require_exists(path, "WikiText path", hint)
    if path.is_file():
        m = _FILE.match(path.name)
        if not m:
            raise ValueError(
                f"WikiText file name {path.name!r} is not wiki.<train|valid|test>.<tokens|raw>"
                "[.gz]; keep the official names, which carry the split and the format."
            )
        if split is not None and m.group(1) != split:
            raise ValueError(f"split={split!r} does not match the file {path.name!r}.")
        if format is not None and m.group(2) != format:
            raise ValueError(f"format={format!r} does not match the file {path.name!r}.")
        return path, m.group(1), m.group(2)
    if split is None:
        raise ValueError(
            f"split is required when path is a folder ({path}); one of {WIKITEXT_SPLITS}."
        )
    found = {}
    for entry in sorted(path.iterdir()):
        m = _FILE.match(entry.name)
        if m and m.group(1) == split and (format is None or m.group(2) == format):
            found.setdefault(m.group(2), entry)
    if not found:
        present = sorted(e.name for e in path.iterdir() if _FILE.match(e.name))
        offline = (
            f" Offline, train on {OFFLINE_SPLITS['train']!r} and evaluate on "
            f"{OFFLINE_SPLITS['eval']!r} (OFFLINE_SPLITS)."
            if present
            else ""
        )
        raise FileNotFoundError(
            f"WikiText folder {str(path)!r} has no wiki.{split}.{format or '<tokens|raw>'}[.gz]; "
            f"it holds {present or 'no WikiText files'}.{offline}"
        )
    if len(found) > 1:
        raise ValueError(
            f"WikiText folder {str(path)!r} holds both tokens and raw files for {split!r}; "
            "pass format='tokens' or format='raw'."
        )
    ((file_format, file),) = found.items()
    return file, split, file_format


def _split_articles(lines, detokenize):
    documents, titles, current = [], [], []

    def blank(i):
        return i < 0 or i >= len(lines) or not lines[i].strip()

    for i, line in enumerate(lines):
        if _TITLE.match(line) and blank(i - 1) and blank(i + 1):
            if current:
                documents.append("\n".join(current))
            current = []
            titles.append(line.strip().strip("=").strip())
        content = line.strip()
        if not content:
            continue
        if detokenize:
            for old, new in _DETOKENIZE:
                content = content.replace(old, new)
        current.append(content)
    if current:
        documents.append("\n".join(current))
    if len(titles) < len(documents):  # text before the first title forms an untitled article
        titles.insert(0, "")
    return documents, titles
