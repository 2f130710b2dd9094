"""WholeWordMasker: whole words only, the selection budget, the 80/10/10 split, seeding, errors."""

import numpy as np
import pytest

from keras_effattn.data.masking import WholeWordMasker

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "dog", "walk", "##ing", "##s",
         "un", "##believ", "##able", "cat"]
IDS = {token: i for i, token in enumerate(VOCAB)}
SPECIAL = [0, 1, 2, 3, 4]


def ids(*tokens, length=16):
    row = [IDS[t] for t in ("[CLS]", *tokens, "[SEP]")]
    return row + [IDS["[PAD]"]] * (length - len(row))


def masker(**kwargs):
    kwargs = {"rate": 0.15, "max_predictions": 8, **kwargs}
    return WholeWordMasker(VOCAB, IDS["[MASK]"], SPECIAL, **kwargs)


ROW = ids("the", "dog", "walk", "##ing", "un", "##believ", "##able", "the", "cat", "walk", "##s")


def test_words_group_continuation_pieces_and_skip_specials():
    words = [list(w) for w in masker().words(np.array(ROW))]
    assert words == [[1], [2], [3, 4], [5, 6, 7], [8], [9], [10, 11]]
    # A continuation piece with no word before it (cut by packing) is a word of its own.
    cut = np.array(ids("##ing", "##s", "dog"))
    assert [list(w) for w in masker().words(cut)] == [[1, 2], [3]]


@pytest.mark.parametrize("seed", range(40))
def test_a_chosen_word_is_predicted_whole_and_specials_never(seed):
    m = masker(rate=0.4)
    out = m(np.array([ROW, ids("the", "walk", "##s", "cat")]), np.random.default_rng(seed))
    for b, row in enumerate((ROW, ids("the", "walk", "##s", "cat"))):
        chosen = set(out["mask_positions"][b][out["mask_weights"][b] == 1].tolist())
        for word in m.words(np.array(row)):
            assert set(word.tolist()) <= chosen or not set(word.tolist()) & chosen
        assert all(row[p] not in SPECIAL for p in chosen)
        # mask_ids hold the original tokens; unchosen positions are untouched.
        n = len(chosen)
        assert out["mask_ids"][b][:n].tolist() == [row[p] for p in sorted(chosen)]
        untouched = [p for p in range(len(row)) if p not in chosen]
        assert out["token_ids"][b][untouched].tolist() == [row[p] for p in untouched]


def test_budget_is_the_rounded_rate_of_selectable_tokens_capped_by_max_predictions():
    row = np.array([ids(*(["the", "dog", "cat"] * 6), length=24)])  # 18 one-piece words
    assert masker(rate=0.15)(row, np.random.default_rng(0))["mask_weights"].sum() == 3  # round(2.7)
    assert masker(rate=0.5, max_predictions=4)(row, np.random.default_rng(0))[
        "mask_weights"].sum() == 4
    # At least one token, however short the row.
    assert masker(rate=0.01)(np.array([ids("dog")]), np.random.default_rng(0))[
        "mask_weights"].sum() == 1
    # A row with nothing selectable predicts nothing.
    empty = masker()(np.array([ids()]), np.random.default_rng(0))
    assert empty["mask_weights"].sum() == 0 and empty["mask_positions"].shape == (1, 8)


def test_words_that_would_overshoot_the_budget_are_skipped():
    # Budget round(0.3 * 5) = 2: "un ##believ ##able" (3 pieces) never fits.
    row = np.array([ids("un", "##believ", "##able", "dog", "cat")])
    for seed in range(30):
        out = masker(rate=0.3)(row, np.random.default_rng(seed))
        chosen = out["mask_positions"][0][out["mask_weights"][0] == 1].tolist()
        assert sorted(chosen) == [4, 5]


def test_replacement_split_follows_the_rates():
    rows = np.array([ids(*(["the", "dog", "cat", "walk"] * 3), length=16)] * 4000)
    out = masker(rate=0.5)(rows, np.random.default_rng(1))
    chosen = out["mask_weights"] == 1
    original = out["mask_ids"][chosen]
    now = np.take_along_axis(out["token_ids"], out["mask_positions"], axis=1)[chosen]
    masked = np.mean(now == IDS["[MASK]"])
    kept = np.mean(now == original)
    assert masked == pytest.approx(0.8, abs=0.01)
    # Random replacements (10 %) sometimes draw the original token back (1 in 9 here).
    assert kept == pytest.approx(0.1 + 0.1 / 9, abs=0.01)
    assert not np.isin(now[now != IDS["[MASK]"]], SPECIAL).any()
    assert {VOCAB[i] for i in now[(now != original) & (now != IDS["[MASK]"])]} == (
        set(VOCAB) - {VOCAB[i] for i in SPECIAL})


def test_same_seed_same_masks_other_seed_other_masks():
    rows = np.array([ROW] * 8)
    a = masker()(rows, np.random.default_rng([0, 1]))
    b = masker()(rows, np.random.default_rng([0, 1]))
    c = masker()(rows, np.random.default_rng([0, 2]))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["mask_positions"], c["mask_positions"])


def test_from_tokenizer_uses_the_wordpiece_vocabulary():
    import keras_hub

    tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=VOCAB, lowercase=True)
    m = WholeWordMasker.from_tokenizer(tokenizer, rate=0.5, max_predictions=4)
    assert m.mask_token_id == IDS["[MASK]"]
    tokens = np.asarray(tokenizer(["unbelievable walking"])).tolist()[0]
    assert tokens == [IDS["un"], IDS["##believ"], IDS["##able"], IDS["walk"], IDS["##ing"]]
    words = [list(w) for w in m.words(np.array(tokens))]
    assert words == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="no mask token"):
        WholeWordMasker.from_tokenizer(keras_hub.tokenizers.WordPieceTokenizer(vocabulary=VOCAB))


@pytest.mark.parametrize(
    "kwargs, call, match",
    [
        ({"rate": 1.5}, None, "rate must be a float"),
        ({"rate": 1}, None, "rate must be a float"),
        ({"max_predictions": 0}, None, "max_predictions"),
        ({"mask_token_rate": 0.95, "random_token_rate": 0.1}, None, "sum <= 1"),
        ({}, np.array(ROW), r"\[batch, length\]"),
        ({}, np.array([[2, 99, 3]]), "outside the 14-token vocabulary"),
    ],
    ids=["rate-range", "rate-type", "max-predictions", "rates-sum", "rank", "unknown-id"],
)
def test_errors_name_the_problem(kwargs, call, match):
    with pytest.raises(ValueError, match=match):
        masker(**kwargs)(call, np.random.default_rng(0)) if call is not None else masker(**kwargs)
