"""Dataset statistics: class balance, word/token lengths, truncation rate, atomic PNG plots."""

import numpy as np
import pytest

from keras_effattn.data import (
    TextDataset,
    dataset_statistics,
    format_statistics,
    plot_statistics,
    read_glue,
    read_imdb,
    token_lengths,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _toy():
    texts = ["one two three", "one two", "a b c d e f g h", "x"]
    return TextDataset(texts, [0, 1, 0, 0], ("neg", "pos"), name="toy")


def test_class_balance_and_word_lengths():
    stats = dataset_statistics(_toy())
    assert stats["num_examples"] == 4 and stats["name"] == "toy"
    assert stats["class_balance"]["counts"] == {"neg": 3, "pos": 1}
    assert stats["class_balance"]["fractions"] == {"neg": 0.75, "pos": 0.25}
    assert stats["class_balance"]["imbalance_ratio"] == 3.0
    words = stats["words"]
    assert (words["min"], words["max"], words["mean"]) == (1, 8, 3.5)
    assert words["p50"] == 2.5
    assert "tokens" not in stats and "truncation_rate" not in stats


def test_tokens_and_truncation_with_a_plain_callable():
    # one character per token; 2 special tokens; max_length 6 -> texts longer than 4 chars cut
    ds = TextDataset(["abc", "abcd", "abcdef", "abcdefghij"], [0, 1, 0, 1], ("a", "b"))
    stats = dataset_statistics(ds, tokenizer=list, max_length=6)
    assert stats["tokens"]["max"] == 10 and stats["num_special_tokens"] == 2
    assert stats["truncation_rate"] == 0.5  # "abcdef" (8 > 6) and "abcdefghij" (12 > 6)
    # tokens cut: (8 - 6) + (12 - 6) = 8 of (5 + 6 + 8 + 12) = 31
    assert stats["truncated_token_fraction"] == pytest.approx(8 / 31)


def test_pairs_count_both_segments_and_three_specials():
    ds = TextDataset(["a b", "c"], [0.5, 4.0], (), text_pairs=["d e f", "g"], name="pairs")
    stats = dataset_statistics(ds, tokenizer=str.split, max_length=5)
    assert stats["words"]["max"] == 5 and stats["tokens"]["max"] == 5
    assert stats["num_special_tokens"] == 3 and stats["truncation_rate"] == 0.5
    assert stats["label_summary"]["max"] == 4.0 and "class_balance" not in stats


def test_keras_hub_tokenizer_is_batched_and_matches_per_text():
    keras_hub = pytest.importorskip("keras_hub")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "film", "good", "bad", "##s", "is"]
    tok = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocab, lowercase=True)
    texts = ["the film is good", "bad films", "the the the films is bad"] * 3
    batched = token_lengths(texts, tok, batch_size=4)
    per_text = np.asarray([len(tok(t)) for t in texts])
    np.testing.assert_array_equal(batched, per_text)
    assert batched.tolist()[:3] == [4, 3, 7]


def test_plot_is_written_atomically(tmp_path):
    out = tmp_path / "plots" / "stats.png"
    stats = plot_statistics(_toy(), out, tokenizer=list, max_length=6)
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert stats["truncation_rate"] == 0.75  # all but "x" (1 char + 2 specials <= 6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["stats.png"]  # no temp files left
    regression = TextDataset(["a b", "c"], [0.5, 4.0], (), text_pairs=["d", "e"])
    plot_statistics(regression, tmp_path / "reg.png")
    assert (tmp_path / "reg.png").read_bytes().startswith(PNG_MAGIC)


def test_failed_plot_leaves_no_file(tmp_path):
    out = tmp_path / "stats.png"
    with pytest.raises(ValueError, match="max_length needs a tokenizer"):
        plot_statistics(_toy(), out, max_length=8)
    assert list(tmp_path.iterdir()) == []


def test_format_statistics_markdown():
    text = format_statistics(dataset_statistics(_toy(), tokenizer=list, max_length=6))
    assert "| class neg | 3 (75.0%) |" in text and "| truncated at 6 tokens | 75.0% |" in text


def test_real_imdb_and_stsb(data_dir):
    imdb = read_imdb(data_dir / "aclImdb_v1.tar.gz", "test", max_per_class=30, seed=0)
    stats = dataset_statistics(imdb, tokenizer=str.split, max_length=128)
    assert stats["class_balance"]["imbalance_ratio"] == 1.0
    assert 100 < stats["words"]["mean"] < 400  # IMDB reviews average about 230 words
    assert 0.2 < stats["truncation_rate"] < 0.9
    stsb = read_glue("STS-B", data_dir / "glue", "dev")
    s = dataset_statistics(stsb)
    assert abs(s["label_summary"]["mean"] - 2.364) < 1e-3 and s["is_pair"]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tokenizer": "bert"}, "tokenizer must be callable"),
        ({"tokenizer": list, "max_length": 0}, "max_length must be >= 1"),
        ({"tokenizer": list, "max_length": 2.5}, "max_length must be an int"),
        ({"max_length": 8}, "max_length needs a tokenizer"),
        ({"tokenizer": list, "max_length": 8, "num_special_tokens": -1}, "num_special_tokens"),
    ],
    ids=["not-callable", "zero-length", "float-length", "no-tokenizer", "negative-specials"],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dataset_statistics(_toy(), **kwargs)


def test_bad_dataset_and_path(tmp_path):
    with pytest.raises(ValueError, match="dataset must be a TextDataset"):
        dataset_statistics(["just", "texts"])
    with pytest.raises(ValueError, match=r"must end with \.png"):
        plot_statistics(_toy(), tmp_path / "stats.jpg")


def test_other_tokenizer_objects_are_called_per_text():
    class Chars:
        """Callable on one text; its `tokenize` method must not be mistaken for batching."""

        def tokenize(self, text):
            return list(text)

        def __call__(self, text):
            return self.tokenize(text)

    np.testing.assert_array_equal(token_lengths(["ab", "cde"], Chars()), [2, 3])
