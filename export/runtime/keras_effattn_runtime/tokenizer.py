"""TensorFlow-free WordPiece tokenizer that reproduces KerasHub's tokenization token for token.

The exported model takes token ids, so a deployment machine needs the exact tokenization the
model was trained with, but not TensorFlow. KerasHub's `WordPieceTokenizer` (tensorflow-text
path, the one used in training) does, for each text:

1. with ``split_on_cjk``, isolate CJK ideographs as words of their own;
2. with ``strip_accents``, NFD-decompose and drop combining marks (category Mn);
3. split on ASCII whitespace, control (Cc) and format (Cf) characters, and on punctuation
   (ASCII non-alphanumerics and Unicode category P), keeping punctuation as words;
4. with ``lowercase``, apply Unicode NFKC_Casefold to each word (after splitting, so "…" stays
   one word that folds to "...");
5. greedy longest-match-first WordPiece per word; a word longer than 100 UTF-8 bytes or with
   no full segmentation becomes the OOV token.

The classifier preprocessor then packs ``[CLS] tokens[:L-2] [SEP]`` and pads with ``[PAD]``;
the padding mask marks non-pad ids. This module does the same with the standard library and
NumPy only. Hugging Face's `BertWordPieceTokenizer` is *not* used because it differs from
KerasHub on exactly the cases a review corpus contains: it strips accents whenever it
lowercases (KerasHub's `lowercase=True` keeps them unless ``strip_accents``), it lowercases
instead of NFKC case folding, it folds before splitting, and it splits on Unicode spaces that
KerasHub keeps inside words.

Files: `save(dir)` writes ``vocab.txt`` (one token per line) and ``tokenizer.json`` (the
settings and the vocabulary's sha256); `WordPieceTokenizer.from_dir(dir)` reads them back and
checks the hash.

Example:
```python
tokenizer = WordPieceTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good"],
                               sequence_length=8)
batch = tokenizer(["Good!", ""])
batch["token_ids"].shape  # (2, 8)
```
"""

import functools
import hashlib
import json
import os
import re
import unicodedata

import numpy as np

TOKENIZER_KIND = "keras_hub.WordPieceTokenizer"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
FORMAT_VERSION = 1
# `tf_text.FastWordpieceTokenizer` (as KerasHub configures it) maps a word longer than this
# many UTF-8 bytes to the unknown token.
MAX_BYTES_PER_WORD = 100
PADDING_MODES = ("max_length", "longest")

# CJK Unified Ideograph blocks, as in google-research/bert tokenization.py and KerasHub.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Unicode default-ignorable code points, which NFKC_Casefold removes.
_DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


# Planes that hold any punctuation, control or format character (planes 4-13 are unassigned,
# 15-16 are private use); scanning only these keeps building the split pattern fast.
_SCANNED_RANGES = ((0x0000, 0x3FFFF), (0xE0000, 0xE0FFF))


def _ranges_text(ranges):
    return "".join(_range_text(lo, hi) for lo, hi in ranges)


def _range_text(first, last):
    if first == last:
        return re.escape(chr(first))
    return f"{re.escape(chr(first))}-{re.escape(chr(last))}"


def _is_ascii_punctuation(code):
    # BERT treats every ASCII non-alphanumeric (other than space) as punctuation.
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126


@functools.lru_cache(maxsize=1)
def _character_ranges():
    """(kept punctuation ranges, dropped separator ranges) from one scan of the code points.

    Punctuation is ASCII non-alphanumerics plus Unicode category P*; separators are RE2's
    ASCII ``\\s`` ([\\t\\n\\f\\r ]) plus control (Cc) and format (Cf) characters.
    """
    kept, dropped = [], []
    for lo, hi in _SCANNED_RANGES:
        for code in range(lo, hi + 1):
            if 0xD800 <= code <= 0xDFFF:
                continue  # surrogates never occur in decoded text
            category = unicodedata.category(chr(code))
            if category[0] == "P" or _is_ascii_punctuation(code):
                target = kept
            elif category in ("Cc", "Cf") or code in (9, 10, 12, 13, 32):
                target = dropped
            else:
                continue
            if target and target[-1][1] == code - 1:
                target[-1][1] = code
            else:
                target.append([code, code])
    return tuple(map(tuple, kept)), tuple(map(tuple, dropped))


@functools.lru_cache(maxsize=2)
def _split_pattern(split_on_cjk):
    """One regex for KerasHub's RE2 split: group 1 = a kept delimiter, else a dropped run."""
    kept, dropped = _character_ranges()
    kept_text = _ranges_text(kept) + (_ranges_text(_CJK_RANGES) if split_on_cjk else "")
    return re.compile(f"([{kept_text}])|[{_ranges_text(dropped)}]+")


_IGNORABLE = re.compile(f"[{_ranges_text(_DEFAULT_IGNORABLE_RANGES)}]")


def casefold(text):
    """Unicode NFKC_Casefold (what `tf_text.case_fold_utf8` applies), in pure Python."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _IGNORABLE.sub("", text)


def sha256_file(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vocabulary_sha256(vocabulary):
    """Hex sha256 of a vocabulary as written to ``vocab.txt`` (one token per line, UTF-8)."""
    return hashlib.sha256("".join(f"{t}\n" for t in vocabulary).encode("utf-8")).hexdigest()


class WordPieceTokenizer:
    """KerasHub-identical WordPiece tokenization and classifier packing, without TensorFlow.

    Matches `keras_hub.tokenizers.WordPieceTokenizer` (default ``split=True``,
    ``special_tokens_in_strings=False``) followed by a text-classifier preprocessor's packer:
    ``[start] tokens[: sequence_length - 2] [end]`` then ``pad`` to the padded length.

    Args:
        vocabulary: list of str, or a path to a ``vocab.txt`` (one token per line).
        sequence_length: int. The model's maximum packed length (>= 3).
        lowercase: bool, default True. NFKC case folding of each word.
        strip_accents: bool, default False. NFD + removal of combining marks (KerasHub's
            default is False even when lowercasing).
        split_on_cjk: bool, default True. CJK ideographs become words of their own.
        suffix_indicator: str, default ``"##"``. Marks word-continuation pieces.
        oov_token: str, default ``"[UNK]"``.
        start_token, end_token, pad_token: str, defaults ``"[CLS]"``, ``"[SEP]"``, ``"[PAD]"``.

    Call arguments (``tokenizer(texts, padding=...)``, same as `encode`):
        texts: a str or a list of str.
        padding: ``"max_length"`` (default; pad to `sequence_length`, exactly as KerasHub) or
            ``"longest"`` (pad to the longest packed text in the batch).

    Returns:
        ``{"token_ids": int32 [B, T], "padding_mask": int32 [B, T]}`` (B = 1 for a str).

    Example:
    ```python
    tokenizer = WordPieceTokenizer("vocab.txt", sequence_length=256)
    tokenizer.tokenize("Un café, s'il vous plaît…")  # word pieces as strings
    ```
    """

    def __init__(
        self,
        vocabulary,
        sequence_length,
        lowercase=True,
        strip_accents=False,
        split_on_cjk=True,
        suffix_indicator="##",
        oov_token="[UNK]",
        start_token="[CLS]",
        end_token="[SEP]",
        pad_token="[PAD]",
    ):
        if isinstance(vocabulary, (str, os.PathLike)):
            vocabulary = _read_vocabulary(vocabulary)
        if isinstance(vocabulary, str) or not hasattr(vocabulary, "__iter__"):
            raise ValueError(
                f"vocabulary must be a list of tokens or a vocab.txt path, got {vocabulary!r}."
            )
        vocabulary = [str(t) for t in vocabulary]
        if not vocabulary:
            raise ValueError("vocabulary is empty; pass the model's vocab.txt.")
        if (
            isinstance(sequence_length, bool)
            or not isinstance(sequence_length, (int, np.integer))
            or sequence_length < 3
        ):
            raise ValueError(
                f"sequence_length must be an int >= 3 (room for [CLS], one token and [SEP]), "
                f"got {sequence_length!r}."
            )
        self.vocabulary = vocabulary
        self.sequence_length = int(sequence_length)
        self.lowercase = bool(lowercase)
        self.strip_accents = bool(strip_accents)
        self.split_on_cjk = bool(split_on_cjk)
        self.suffix_indicator = str(suffix_indicator)
        self.oov_token = oov_token
        self.start_token = start_token
        self.end_token = end_token
        self.pad_token = pad_token
        self._ids = {token: index for index, token in enumerate(vocabulary)}  # as KerasHub
        for name in ("oov_token", "start_token", "end_token", "pad_token"):
            token = getattr(self, name)
            if token not in self._ids:
                raise ValueError(
                    f"{name}={token!r} is not in the vocabulary; pass the special tokens the "
                    "vocabulary uses (e.g. oov_token='[UNK]')."
                )
        self.oov_id = self._ids[oov_token]
        self.start_id = self._ids[start_token]
        self.end_id = self._ids[end_token]
        self.pad_id = self._ids[pad_token]
        self._delimiters = _split_pattern(self.split_on_cjk)
        self._word_cache = functools.lru_cache(maxsize=1 << 16)(self._word_ids)

    # ----------------------------------------------------------------------------- pieces
    def pretokenize(self, text):
        """Splits one text into words (normalised as KerasHub does) before WordPiece."""
        if not isinstance(text, str):
            raise ValueError(f"texts must be str, got {type(text).__name__}: {text!r}.")
        if self.strip_accents:
            text = unicodedata.normalize("NFD", text)
            text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words, position = [], 0
        for match in self._delimiters.finditer(text):
            if match.start() > position:
                words.append(text[position : match.start()])
            if match.group(1) is not None:
                words.append(match.group(1))
            position = match.end()
        if position < len(text):
            words.append(text[position:])
        if self.lowercase:
            words = [casefold(w) for w in words]
        return words

    def _word_ids(self, word):
        if not word:
            return ()
        if len(word.encode("utf-8")) > MAX_BYTES_PER_WORD:
            return (self.oov_id,)
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else self.suffix_indicator + word[start:end]
                found = self._ids.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return (self.oov_id,)
            ids.append(found)
            start = end
        return tuple(ids)

    def words(self, text):
        """``[(word, ids), ...]``: the words of one text with their WordPiece ids, words that
        give no ids dropped (what ``words()`` in the web page's tokenizer.js returns)."""
        return [(w, ids) for w in self.pretokenize(text) if (ids := self._word_cache(w))]

    def token_ids(self, text):
        """WordPiece ids of one text, without special tokens or truncation."""
        ids = []
        for word in self.pretokenize(text):
            ids.extend(self._word_cache(word))
        return ids

    def tokenize(self, text):
        """WordPiece tokens (strings) of one text, without special tokens or truncation."""
        return [self.vocabulary[i] for i in self.token_ids(text)]

    # ----------------------------------------------------------------------------- packing
    def encode(self, texts, padding="max_length"):
        """Tokenizes and packs texts into the model's id inputs (see the class docstring)."""
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}.")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        limit = self.sequence_length - 2
        rows = [[self.start_id, *self.token_ids(t)[:limit], self.end_id] for t in texts]
        width = self.sequence_length
        if padding == "longest":
            width = max((len(r) for r in rows), default=2)
        token_ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        for i, row in enumerate(rows):
            token_ids[i, : len(row)] = row
        # KerasHub's classifier preprocessor: padding_mask = token_ids != pad id.
        padding_mask = (token_ids != self.pad_id).astype(np.int32)
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    __call__ = encode

    # ----------------------------------------------------------------------------- files
    @property
    def vocabulary_sha256(self):
        return vocabulary_sha256(self.vocabulary)

    def get_config(self):
        """The settings written to ``tokenizer.json`` (the vocabulary lives in ``vocab.txt``)."""
        return {
            "kind": TOKENIZER_KIND,
            "format_version": FORMAT_VERSION,
            "sequence_length": self.sequence_length,
            "lowercase": self.lowercase,
            "strip_accents": self.strip_accents,
            "split_on_cjk": self.split_on_cjk,
            "suffix_indicator": self.suffix_indicator,
            "oov_token": self.oov_token,
            "start_token": self.start_token,
            "end_token": self.end_token,
            "pad_token": self.pad_token,
            "max_bytes_per_word": MAX_BYTES_PER_WORD,
            "vocab_file": VOCAB_FILE,
            "vocab_size": len(self.vocabulary),
            "vocab_sha256": self.vocabulary_sha256,
        }

    def save(self, directory):
        """Writes ``vocab.txt`` and ``tokenizer.json`` into `directory`; returns their paths."""
        os.makedirs(directory, exist_ok=True)
        vocab_path = os.path.join(directory, VOCAB_FILE)
        config_path = os.path.join(directory, TOKENIZER_FILE)
        _write_atomic(vocab_path, "".join(f"{t}\n" for t in self.vocabulary))
        _write_atomic(config_path, json.dumps(self.get_config(), indent=2) + "\n")
        return [vocab_path, config_path]

    @classmethod
    def from_dir(cls, directory):
        """Reads a tokenizer written by `save` and checks the vocabulary hash.

        Raises:
            FileNotFoundError: ``tokenizer.json`` or ``vocab.txt`` is missing.
            ValueError: the settings are unreadable, of another kind, or the vocabulary does
                not match its recorded sha256.
        """
        config_path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"No {TOKENIZER_FILE} in {directory!r}: the tokenizer settings are written "
                "beside model.onnx by `python -m export.to_onnx`; re-export the model."
            )
        try:
            with open(config_path, encoding="utf-8") as handle:
                config = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{config_path} is not valid JSON ({error}); re-export the model."
            ) from error
        if not isinstance(config, dict) or config.get("kind") != TOKENIZER_KIND:
            raise ValueError(
                f"{config_path} describes a tokenizer of kind "
                f"{config.get('kind') if isinstance(config, dict) else None!r}, expected "
                f"{TOKENIZER_KIND!r}; re-export the model with `python -m export.to_onnx`."
            )
        vocab_path = os.path.join(directory, config.get("vocab_file", VOCAB_FILE))
        tokenizer = cls(
            vocabulary=vocab_path,
            sequence_length=config["sequence_length"],
            lowercase=config["lowercase"],
            strip_accents=config["strip_accents"],
            split_on_cjk=config["split_on_cjk"],
            suffix_indicator=config["suffix_indicator"],
            oov_token=config["oov_token"],
            start_token=config["start_token"],
            end_token=config["end_token"],
            pad_token=config["pad_token"],
        )
        if tokenizer.vocabulary_sha256 != config.get("vocab_sha256"):
            raise ValueError(
                f"{vocab_path} does not match the sha256 recorded in {config_path} "
                f"({tokenizer.vocabulary_sha256} != {config.get('vocab_sha256')}); the "
                "vocabulary was changed or belongs to another model. Re-export the model."
            )
        return tokenizer

    @classmethod
    def from_keras_hub(cls, preprocessor):
        """The equivalent tokenizer of a KerasHub text-classifier preprocessor (duck-typed).

        Args:
            preprocessor: e.g. a `keras_hub.models.DistilBertTextClassifierPreprocessor`: it
                needs ``.tokenizer`` (a `WordPieceTokenizer`) and ``.sequence_length``.

        Raises:
            ValueError: the tokenizer is not WordPiece, or uses options this module does not
                reproduce (``split=False``, ``special_tokens_in_strings=True``).
        """
        tokenizer = getattr(preprocessor, "tokenizer", None)
        if tokenizer is None or not hasattr(tokenizer, "get_vocabulary"):
            raise ValueError(
                "The model's preprocessor has no tokenizer with a vocabulary; export needs a "
                "KerasHub text classifier whose .preprocessor.tokenizer is a WordPieceTokenizer."
            )
        if not hasattr(tokenizer, "suffix_indicator"):
            raise ValueError(
                f"Only WordPiece tokenizers can be exported without TensorFlow, got "
                f"{type(tokenizer).__name__}."
            )
        if not getattr(tokenizer, "split", True) or getattr(
            tokenizer, "special_tokens_in_strings", False
        ):
            raise ValueError(
                "The tokenizer uses split=False or special_tokens_in_strings=True, which the "
                "TensorFlow-free tokenizer does not reproduce; train with KerasHub's defaults."
            )
        sequence_length = getattr(preprocessor, "sequence_length", None)
        if sequence_length is None:
            raise ValueError(
                "The model's preprocessor has no sequence_length; set one (e.g. 256) before "
                "exporting, so the deployed model truncates as in training."
            )
        packer = getattr(preprocessor, "packer", None)
        start = getattr(tokenizer, "start_token", None) or getattr(tokenizer, "cls_token", "[CLS]")
        end = getattr(tokenizer, "end_token", None) or getattr(tokenizer, "sep_token", "[SEP]")
        pad = getattr(tokenizer, "pad_token", None) or "[PAD]"
        if packer is not None:
            # The packer holds the tokens actually used (MultiSegmentPacker or StartEndPacker).
            start = _as_token(getattr(packer, "start_value", start), start, tokenizer)
            end = _as_token(getattr(packer, "end_value", end), end, tokenizer)
            pad = _as_token(getattr(packer, "pad_value", pad), pad, tokenizer)
        return cls(
            vocabulary=list(tokenizer.get_vocabulary()),
            sequence_length=int(sequence_length),
            lowercase=tokenizer.lowercase,
            strip_accents=tokenizer.strip_accents,
            split_on_cjk=getattr(tokenizer, "split_on_cjk", True),
            suffix_indicator=tokenizer.suffix_indicator,
            oov_token=tokenizer.oov_token,
            start_token=start,
            end_token=end,
            pad_token=pad,
        )


def _as_token(value, default, tokenizer=None):
    """A packer value (token string, id, or list of one) as a token string."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(
                f"The preprocessor's packer uses {len(value)} start/end tokens {value!r}; only "
                "one is supported."
            )
        value = value[0]
    if value is None:
        return default
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if tokenizer is None:
            return default
        return tokenizer.id_to_token(int(value))
    return str(value)


def _read_vocabulary(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Vocabulary file {path!r} not found; pass the vocab.txt shipped beside model.onnx."
        )
    with open(path, encoding="utf-8") as handle:
        # KerasHub reads the vocabulary with line.rstrip(); do the same.
        return [line.rstrip() for line in handle]


def _write_atomic(path, text):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    os.replace(temporary, path)
