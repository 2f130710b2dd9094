"""WikiText reader: the shared valid/test files (paper counts), tiny generated files, bad input."""

import gzip

import pytest

from keras_effattn.data import OFFLINE_NOTE, OFFLINE_SPLITS, read_wikitext

TINY = (
    " \n"
    " = First Article = \n"
    " \n"
    " The first @-@ ever article , with 1 @,@ 000 words and 3 @.@ 5 ideas . \n"
    " \n"
    " = = History = = \n"
    " \n"
    " It began . \n"
    " = 1 x = \n"  # an equation line inside prose: not a title (no blank line around it)
    " It ended . \n"
    " \n"
    " = Second Article = \n"
    " \n"
    " Short . \n"
)


def _write(path, text, gz=False):
    data = text.encode() if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize(
    "folder, split, fmt, lines, words, paper",
    [
        ("wikitext-2", "valid", "tokens", 3760, 213_886, 217_646),
        ("wikitext-2", "test", "tokens", 4358, 241_211, 245_569),
        ("wikitext-2-raw", "test", "raw", 4358, 241_211, 245_569),
    ],
    ids=["tokens-valid", "tokens-test", "raw-test"],
)
def test_real_files_match_paper_counts(data_dir, folder, split, fmt, lines, words, paper):
    wt = read_wikitext(data_dir / folder, split)
    assert (wt.split, wt.format) == (split, fmt)
    assert (wt.num_lines, wt.num_words, wt.num_tokens_with_eos) == (lines, words, paper)
    assert len(wt) == 60 and len(wt.titles) == 60  # WikiText-2 has 60 valid and 60 test articles
    assert sum(len(d.split()) for d in wt.documents) == words
    chunks = wt.chunks(96)
    assert max(len(c.split()) for c in chunks) == 96
    assert sum(len(c.split()) for c in chunks) == words


def test_real_raw_and_tokens_align(data_dir):
    tokens = read_wikitext(data_dir / "wikitext-2" / "wiki.test.tokens.gz")
    raw = read_wikitext(data_dir / "wikitext-2-raw" / "wiki.test.raw.gz")
    assert raw.titles[0] == "Robert Boulter" and tokens.titles[0] == "Robert <unk>"
    assert "<unk>" not in " ".join(raw.documents)
    for a, b in zip(tokens.lines, raw.lines):
        assert len(a.split()) == len(b.split())


def test_offline_splits_are_data(data_dir):
    assert OFFLINE_SPLITS == {"train": "valid", "eval": "test"}
    assert "valid" in OFFLINE_NOTE and "test" in OFFLINE_NOTE
    with pytest.raises(FileNotFoundError, match=r"no wiki\.train.*train on 'valid'.*'test'"):
        read_wikitext(data_dir / "wikitext-2", "train")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_tiny_articles_and_detokenize(tmp_path, gz):
    name = "wiki.train.raw.gz" if gz else "wiki.train.raw"
    _write(tmp_path / name, TINY, gz=gz)
    wt = read_wikitext(tmp_path, "train")
    assert wt.titles == ["First Article", "Second Article"] and wt.format == "raw"
    assert wt.documents[0].split("\n")[0] == "= First Article ="
    assert "= 1 x =" in wt.documents[0] and wt.documents[1] == "= Second Article =\nShort ."
    assert wt.num_lines == 14
    detok = read_wikitext(tmp_path / name, detokenize=True)
    assert "The first-ever article , with 1,000 words and 3.5 ideas ." in detok.documents[0]
    assert wt.chunks(4)[:2] == ["= First Article =", "The first @-@ ever"]


def test_tiny_to_tf_dataset(tmp_path):
    _write(tmp_path / "wiki.valid.tokens", TINY)
    wt = read_wikitext(tmp_path / "wiki.valid.tokens")
    pipeline = wt.to_tf_dataset(batch_size=3, max_words=8)
    assert pipeline.options().autotune.enabled is False  # keras_effattn.data.pipeline
    batches = list(pipeline)
    pieces = [s.decode() for b in batches for s in b.numpy()]
    assert pieces == wt.chunks(8)
    with pytest.raises(ValueError, match=r"batch_size=99 must lie in \[1, "):
        wt.to_tf_dataset(batch_size=99)


# --- bad input ------------------------------------------------------------------------------


def test_missing_and_misnamed_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="WikiText path .* does not exist"):
        read_wikitext(tmp_path / "wikitext-2", "valid")
    odd = _write(tmp_path / "valid.txt", TINY)
    with pytest.raises(ValueError, match=r"not wiki\.<train\|valid\|test>"):
        read_wikitext(odd)
    good = _write(tmp_path / "wiki.valid.tokens", TINY)
    with pytest.raises(ValueError, match="split='test' does not match"):
        read_wikitext(good, "test")
    with pytest.raises(ValueError, match="split is required"):
        read_wikitext(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no WikiText files"):
        read_wikitext(tmp_path / "empty", "valid")


def test_both_formats_need_a_choice(tmp_path):
    _write(tmp_path / "wiki.test.tokens", TINY)
    _write(tmp_path / "wiki.test.raw", TINY)
    with pytest.raises(ValueError, match="both tokens and raw"):
        read_wikitext(tmp_path, "test")
    assert read_wikitext(tmp_path, "test", format="raw").format == "raw"


def test_empty_non_utf8_and_truncated(tmp_path):
    _write(tmp_path / "a" / "wiki.test.tokens", " \n \n")
    with pytest.raises(ValueError, match="is empty"):
        read_wikitext(tmp_path / "a", "test")
    _write(tmp_path / "b" / "wiki.test.raw", b" = T = \n \n caf\xe9 \n")
    with pytest.raises(ValueError, match=r"wiki\.test\.raw is not valid UTF-8"):
        read_wikitext(tmp_path / "b", "test")
    assert "caf\ufffd" in read_wikitext(tmp_path / "b", "test", encoding_errors="replace").lines[1]
    path = tmp_path / "c" / "wiki.test.tokens.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(TINY.encode() * 50)[:30])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_wikitext(path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, "split must be one of"),
        ({"format": "txt"}, "format must be one of"),
        ({"encoding_errors": "ignore"}, "encoding_errors must be one of"),
    ],
    ids=["split", "format", "encoding"],
)
def test_bad_arguments(tmp_path, kwargs, match):
    _write(tmp_path / "wiki.valid.tokens", TINY)
    with pytest.raises(ValueError, match=match):
        read_wikitext(tmp_path, **{"split": "valid", **kwargs})


def test_bad_chunk_size(tmp_path):
    wt = read_wikitext(_write(tmp_path / "wiki.valid.tokens", TINY))
    with pytest.raises(ValueError, match="max_words must be >= 1"):
        wt.chunks(0)
