"""Text cleaning: HTML, entities, Unicode, punctuation, whitespace, stop words."""

import doctest

import pytest

from keras_effattn.data import (
    ENGLISH_STOP_WORDS,
    NEGATIONS,
    clean_text,
    clean_texts,
    read_imdb,
)
from keras_effattn_runtime import cleaning


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Great film.<br /><br />Loved it.", "Great film. Loved it."),
        ("<i>Bold</i> and <a href='x'>linked</a><BR>end", "Bold and linked end"),
        ("a < b and c > d", "a < b and c > d"),
        ("Tom &amp; Jerry &quot;rock&quot;", 'Tom & Jerry "rock"'),
        ("  spaced\tout\n\nlines  ", "spaced out lines"),
        ("Wow!!! Really??? No...... way", "Wow! Really? No... way"),
        ("\u201cQuoted\u201d \u2018single\u2019 don\u2019t", "\"Quoted\" 'single' don't"),
        ("good\u2014bad \u2013 fine\u2026", "good - bad - fine..."),
        ("\uff21\uff22 \ufb01ne", "AB fine"),  # NFKC: full-width letters, ligature
        ("zero\u200bwidth soft\u00adhyphen", "zerowidth softhyphen"),
        ("Keep CASE", "Keep CASE"),
    ],
    ids=[
        "br-tags",
        "other-tags",
        "bare-angle-brackets",
        "entities",
        "whitespace",
        "repeated-marks",
        "curly-quotes",
        "dashes-ellipsis",
        "nfkc",
        "invisible",
        "case-kept",
    ],
)
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected
    assert clean_text(expected) == expected  # idempotent


def test_stop_words_keep_negations():
    text = "This is not a good film, and it's no masterpiece; I don't like it"
    assert clean_text(text, remove_stopwords=True) == "not good film, no masterpiece; don't like"
    assert NEGATIONS.isdisjoint(ENGLISH_STOP_WORDS)
    assert {"the", "a", "is", "and", "it's"} <= ENGLISH_STOP_WORDS
    # GLUE-style tokenised contractions: "doesn 't" keeps its negation, "it 's" goes
    assert clean_text("it 's fine but doesn 't work", remove_stopwords=True) == (
        "' fine doesn 't work"
    )


def test_custom_stop_words_and_list_version():
    assert clean_text("Foo bar BAZ qux", remove_stopwords=True, stop_words=["foo", "baz"]) == (
        "bar qux"
    )
    assert clean_texts(["a<br />b", " c "]) == ["a b", "c"]


def test_docstring_examples_hold():
    result = doctest.testmod(cleaning, verbose=False)
    assert result.attempted >= 2 and result.failed == 0


def test_real_imdb_reviews_are_clean_and_stable(data_dir):
    raw = read_imdb(data_dir / "aclImdb_v1.tar.gz", "train", max_per_class=40, seed=1, clean=False)
    assert any("<br />" in t for t in raw.texts)
    cleaned = clean_texts(raw.texts)
    for before, after in zip(raw.texts, cleaned):
        assert "<br" not in after and "  " not in after and after == after.strip()
        assert clean_text(after) == after
        # cleaning removes markup, never words: the alphabetic words survive in order
        words = [w for w in after.split() if w.isalpha()]
        assert len(words) >= 0.9 * len([w for w in before.split() if w.isalpha()])


def test_non_string_input():
    with pytest.raises(ValueError, match="clean_text expects a str, got bytes"):
        clean_text(b"bytes")
