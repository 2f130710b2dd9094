"""build_masked_lm: tied weights, masked-only loss, training, save/load, errors."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_effattn
from keras_effattn.models import masked_lm as masked_lm_lib

TINY = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "max_sequence_length": 32,
}
LINES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a film about a cat and a dog",
    "the mat was on the floor",
]


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = sorted({w for line in LINES for w in line.split()})


def _small_vocab_model(**kwargs):
    tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=SPECIALS + WORDS, lowercase=True)
    config = {**TINY, "vocabulary_size": len(SPECIALS) + len(WORDS)}
    return keras_effattn.build_masked_lm(config, tokenizer=tokenizer, **kwargs)


def _batch(model):
    x, y, weights = model.preprocessor(LINES)
    x = {k: np.asarray(v) for k, v in x.items()}
    return x, np.asarray(y), np.asarray(weights)


def test_structure_tied_head_and_masking():
    model = keras_effattn.build_masked_lm(TINY, attention="exact", max_length=16)
    assert isinstance(model, keras_hub.models.DistilBertMaskedLM)
    assert keras_effattn.describe_attention(model) == "exact(chunk_size=none)*2"
    assert model.masked_lm_head.token_embedding is model.backbone.token_embedding
    x, y, weights = _batch(model)
    assert x["token_ids"].shape == (4, 16)
    assert x["mask_positions"].shape == y.shape == weights.shape == (4, 4)  # ceil(1.5*.15*16)
    logits = np.asarray(model(x))
    assert logits.shape == (4, 4, 30522)


def test_loss_is_the_mean_over_masked_positions_only():
    model = keras_effattn.build_masked_lm(TINY, max_length=16)
    x, y, weights = _batch(model)
    assert 0 < weights.sum() < weights.size  # some empty prediction slots
    logits = np.asarray(model(x), "float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    expected = (nll * weights).sum() / weights.sum()
    got = float(model.loss(y, model(x), sample_weight=weights))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.slow
def test_training_lowers_the_loss_and_save_load(tmp_path):
    model = _small_vocab_model(attention="exact(chunk_size=4),keras", max_length=16)
    x, y, weights = _batch(model)
    model.preprocessor = None  # train on one fixed masking
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=masked_lm_lib.masked_lm_loss())
    before = model.evaluate(x, y, sample_weight=weights, verbose=0)
    steps = 10  # one epoch of repeated copies: per-epoch overhead dominates tiny fits
    model.fit(
        {k: np.tile(v, (steps, 1)) for k, v in x.items()},
        np.tile(y, (steps, 1)),
        sample_weight=np.tile(weights, (steps, 1)),
        batch_size=4,
        verbose=0,
    )
    after = model.evaluate(x, y, sample_weight=weights, verbose=0)
    before = before[0] if isinstance(before, list) else before
    after = after[0] if isinstance(after, list) else after
    assert after < before - 0.5, (before, after)
    expected = np.asarray(model(x))
    path = tmp_path / "mlm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert keras_effattn.describe_attention(loaded) == keras_effattn.describe_attention(model)
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_length": 64}, r"max_length must be an int in \[2, 32\]"),
        ({"mask_selection_rate": 1.5}, "mask_selection_rate must be a float in"),
        ({"mask_selection_length": 0}, "mask_selection_length must be an int"),
        ({"attention": "exact*3"}, "names 3 layers but the model has 2"),
    ],
    ids=["too-long", "rate", "length", "spec"],
)
def test_bad_arguments(kwargs, match):
    args = {"max_length": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        keras_effattn.build_masked_lm(TINY, **args)


def test_whole_word_inputs_are_seeded_and_keep_the_packing():
    model = _small_vocab_model(max_length=16)
    encoded = keras_effattn.models.encode_unmasked(model.preprocessor, LINES, batch_size=3)
    reference, _, _ = model.preprocessor(LINES)  # KerasHub's packing, masked
    assert encoded["token_ids"].shape == (4, 16)
    np.testing.assert_array_equal(encoded["padding_mask"], np.asarray(reference["padding_mask"]))
    x, y, weights = keras_effattn.models.mask_whole_words(model.preprocessor, encoded, [0, 1])
    again = keras_effattn.models.mask_whole_words(model.preprocessor, encoded, [0, 1])
    np.testing.assert_array_equal(x["token_ids"], again[0]["token_ids"])
    assert x["mask_positions"].shape == y.shape == weights.shape == (4, 4)  # the model's width
    chosen = weights == 1
    np.testing.assert_array_equal(
        np.take_along_axis(encoded["token_ids"], x["mask_positions"], axis=1)[chosen], y[chosen])
    loss = float(model.loss(y, model(x), sample_weight=weights))
    assert np.isfinite(loss)


def test_preprocessor_detached_restores_it_on_error():
    model = _small_vocab_model(max_length=16)
    preprocessor = model.preprocessor
    with pytest.raises(RuntimeError), masked_lm_lib.preprocessor_detached(model):
        assert model.preprocessor is None
        raise RuntimeError("boom")
    assert model.preprocessor is preprocessor


@pytest.mark.parametrize("attention", ["keras", "exact", "lowrank(k=none,qkv_rank=8)"])
def test_swapping_a_trained_masked_lm_keeps_its_head(attention):
    model = _small_vocab_model(attention="keras", max_length=16)
    head = model.masked_lm_head
    for weight in head.weights:  # make the head's own weights differ from a fresh head's
        weight.assign(np.random.default_rng(0).normal(size=weight.shape).astype("float32") * 0.1)
    swapped = masked_lm_lib.swap_masked_lm_attention(model, attention)
    assert swapped.preprocessor is model.preprocessor
    assert swapped.masked_lm_head.token_embedding is swapped.backbone.token_embedding
    x, _, _ = _batch(model)
    if attention == "lowrank(k=none,qkv_rank=8)":
        # rank 8 of 16-wide projections: the outputs move, but the head is the trained one.
        for new, old in zip(swapped.masked_lm_head.weights, head.weights):
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    else:
        np.testing.assert_allclose(np.asarray(swapped(x)), np.asarray(model(x)), atol=2e-5)
    assert keras_effattn.describe_attention(model) == "keras*2"  # the input is unchanged


def test_swap_masked_lm_attention_needs_a_masked_lm():
    classifier = keras_effattn.build_classifier(TINY, max_length=16)
    with pytest.raises(ValueError, match="needs a DistilBertMaskedLM"):
        masked_lm_lib.swap_masked_lm_attention(classifier, "exact")
