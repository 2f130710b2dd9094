"""keras_effattn_runtime.tokenizer: TensorFlow-free WordPiece equals KerasHub's tokenization token for token."""

import json
import subprocess
import sys

import keras_hub
import numpy as np
import pytest

from keras_effattn.data import read_imdb
from keras_effattn.models.minilm import minilm_l6_path
from keras_effattn_runtime.tokenizer import TOKENIZER_FILE, VOCAB_FILE, WordPieceTokenizer, casefold
from tests.conftest import REPO_ROOT

# Hard cases: accents (kept by KerasHub's lowercase=True), ligatures and compatibility forms
# that NFKC case folding rewrites, punctuation that folds into several characters ("…"),
# Unicode spaces that are *not* separators for KerasHub, control and format characters,
# CJK, emoji, over-long words, special-token look-alikes, HTML remnants.
HARD_TEXTS = [
    "",
    " ",
    "\n\t ",
    "Café naïve résumé façade Ångström zürich München",
    "ÀÉÎÕÜ ñ ç ø å œ æ",
    "“Quotes” ‘single’ — dash – en… ellipsis «guillemets»",
    "don't can't won't it's 90's rock'n'roll",
    "a\u00a0b non\u2009breaking\u3000ideographic space",
    "zero\u200bwidth soft\u00adhyphen bom\ufeffinside",
    "ﬁne ﬂour Ⅻ ½ ² ℃ ㎏",
    "STRASSE straße ẞ ΣΊΣΥΦΟΣ İstanbul ǅ",
    "中文字符和日本語テキスト 한국어 ｶﾞ ＡＢＣ１２３！？",
    "emoji 😀👍🏽 ok ❤️",
    "tab\tnew\nline\r\x0bvt\x0cff\x85nel\u2028ls\u2029ps",
    "a" * 150,
    "é" * 60,
    "[CLS] [SEP] [PAD] [UNK] [MASK]",
    "<br /><br />Hello<br />world &amp; friends",
    "$5.99 @user #tag 100% a&b ~x^y `z` {braces} |pipe| back\\slash",
    "x\u0301y combining acute, e\u0308 diaeresis",
    "...!!!???---***",
    "ALL CAPS SHOUTING and MiXeD cAsE",
]


@pytest.fixture(scope="module")
def vocab_path():
    return minilm_l6_path() + "/" + "vocab.txt"


def _keras_hub_preprocessor(vocab_path, sequence_length, **tokenizer_kwargs):
    tokenizer = keras_hub.models.DistilBertTokenizer(
        vocabulary=vocab_path, lowercase=True, **tokenizer_kwargs
    )
    return keras_hub.models.DistilBertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    )


@pytest.fixture(scope="module")
def imdb_raw(request):
    from tests.conftest import require_shared_data, shared_data_dir

    path = shared_data_dir() / "aclImdb_v1.tar.gz"
    require_shared_data(path)
    data = read_imdb(str(path), "test", max_per_class=150, seed=5, clean=False)
    return list(data.texts)


def _assert_same(preprocessor, tokenizer, texts):
    reference = preprocessor(texts)
    mine = tokenizer(texts)
    ids = np.asarray(reference["token_ids"])
    mask = np.asarray(reference["padding_mask"]).astype(np.int32)
    differs = (ids != mine["token_ids"]).any(-1) | (mask != mine["padding_mask"]).any(-1)
    bad = np.flatnonzero(differs)
    assert bad.size == 0, (
        f"{bad.size} texts differ; first {texts[bad[0]][:80]!r}: "
        f"{tokenizer.tokenize(texts[bad[0]])[:20]}"
    )


@pytest.mark.parametrize("sequence_length", [512, 32], ids=["len512", "len32-truncating"])
def test_matches_keras_hub_on_real_imdb_reviews(vocab_path, imdb_raw, sequence_length):
    preprocessor = _keras_hub_preprocessor(vocab_path, sequence_length)
    tokenizer = WordPieceTokenizer.from_keras_hub(preprocessor)
    _assert_same(preprocessor, tokenizer, imdb_raw)


def test_matches_keras_hub_on_very_long_reviews(vocab_path, data_dir):
    data = read_imdb(str(data_dir / "aclImdb_v1.tar.gz"), "train", max_per_class=500, seed=1,
                     clean=False)
    longest = sorted(data.texts, key=len)[-12:]
    assert min(len(t) for t in longest) > 4000  # these overflow 512 tokens by far
    preprocessor = _keras_hub_preprocessor(vocab_path, 512)
    tokenizer = WordPieceTokenizer.from_keras_hub(preprocessor)
    _assert_same(preprocessor, tokenizer, longest)
    # Untruncated pieces agree too (KerasHub's tokenizer alone, no packer).
    pieces = preprocessor.tokenizer(longest[:3])
    for text, row in zip(longest[:3], pieces):
        assert tokenizer.token_ids(text) == np.asarray(row).tolist()


@pytest.mark.parametrize("strip_accents", [False, True], ids=["keep-accents", "strip-accents"])
def test_matches_keras_hub_on_hard_strings(vocab_path, strip_accents):
    preprocessor = _keras_hub_preprocessor(vocab_path, 64, strip_accents=strip_accents)
    tokenizer = WordPieceTokenizer.from_keras_hub(preprocessor)
    assert tokenizer.strip_accents is strip_accents
    _assert_same(preprocessor, tokenizer, HARD_TEXTS)
    strings = keras_hub.models.DistilBertTokenizer(
        vocabulary=vocab_path, lowercase=True, strip_accents=strip_accents, dtype="string"
    )(HARD_TEXTS)
    for text, row in zip(HARD_TEXTS, strings):
        expected = [t.decode() if isinstance(t, bytes) else t for t in np.asarray(row).tolist()]
        assert tokenizer.tokenize(text) == expected, text


def test_accents_are_kept_unless_stripped(vocab_path):
    keep = WordPieceTokenizer(vocab_path, 16)
    strip = WordPieceTokenizer(vocab_path, 16, strip_accents=True)
    assert strip.tokenize("Café") == ["cafe"]
    assert keep.tokenize("Café") != strip.tokenize("Café")
    # "…" is one punctuation word, folded to "..." after splitting; typed dots are three words.
    assert keep.tokenize("…") == ["..."]
    assert keep.tokenize("...") == [".", ".", "."]


def test_casefold_is_nfkc_casefold():
    assert casefold("Straße") == "strasse"
    assert casefold("ﬁ") == "fi"
    assert casefold("soft\u00adhyphen") == "softhyphen"
    assert casefold("ΣΊΣΥΦΟΣ") == "σίσυφοσ"


def test_packing_and_padding_modes(vocab_path):
    tokenizer = WordPieceTokenizer(vocab_path, 8)
    batch = tokenizer(["good film", "", "one two three four five six seven eight"])
    cls, sep, pad = tokenizer.start_id, tokenizer.end_id, tokenizer.pad_id
    assert batch["token_ids"].dtype == np.int32 and batch["token_ids"].shape == (3, 8)
    assert batch["token_ids"][1].tolist() == [cls, sep] + [pad] * 6  # empty text
    assert batch["padding_mask"].sum(1).tolist() == [4, 2, 8]
    assert batch["token_ids"][2, -1] == sep  # truncated to L-2 pieces, then [SEP]
    longest = tokenizer(["good film", ""], padding="longest")
    assert longest["token_ids"].shape == (2, 4)
    np.testing.assert_array_equal(longest["token_ids"], batch["token_ids"][:2, :4])
    single = tokenizer("good film")
    assert single["token_ids"].shape == (1, 8)


def test_save_and_load_round_trip(vocab_path, tmp_path):
    tokenizer = WordPieceTokenizer(vocab_path, 40, strip_accents=True)
    tokenizer.save(tmp_path)
    config = json.loads((tmp_path / TOKENIZER_FILE).read_text())
    assert config["vocab_sha256"] == tokenizer.vocabulary_sha256
    assert config["strip_accents"] is True and config["sequence_length"] == 40
    loaded = WordPieceTokenizer.from_dir(tmp_path)
    for text in HARD_TEXTS:
        assert loaded.tokenize(text) == tokenizer.tokenize(text)


def test_load_errors(vocab_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        WordPieceTokenizer.from_dir(tmp_path)
    WordPieceTokenizer(vocab_path, 16).save(tmp_path)
    vocab = tmp_path / VOCAB_FILE
    vocab.write_text(vocab.read_text(encoding="utf-8") + "extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match="sha256"):
        WordPieceTokenizer.from_dir(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        WordPieceTokenizer.from_dir(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text(json.dumps({"kind": "sentencepiece"}))
    with pytest.raises(ValueError, match="kind"):
        WordPieceTokenizer.from_dir(tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sequence_length": 2}, "sequence_length"),
        ({"sequence_length": 16.0}, "sequence_length"),
        ({"sequence_length": 16, "oov_token": "<unk>"}, "oov_token"),
    ],
    ids=["too-short", "float-length", "missing-special-token"],
)
def test_constructor_errors(vocab_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        WordPieceTokenizer(vocab_path, **kwargs)


def test_bad_inputs(vocab_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab"):
        WordPieceTokenizer(tmp_path / "missing.txt", 16)
    tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good"], 8)
    with pytest.raises(ValueError, match="str"):
        tokenizer([b"bytes"])
    with pytest.raises(ValueError, match="padding"):
        tokenizer(["good"], padding="left")
    assert tokenizer.tokenize("Good, bad!") == ["good", "[UNK]", "[UNK]", "[UNK]"]


def test_importing_the_tokenizer_never_imports_tensorflow():
    code = (
        "import sys, keras_effattn_runtime.tokenizer as t; "
        "t.WordPieceTokenizer(['[PAD]','[UNK]','[CLS]','[SEP]','a'], 4)(['a']); "
        "bad = [m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
