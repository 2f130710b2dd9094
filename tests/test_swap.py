"""swap_attention / describe_attention: equivalence, placement, serialization, errors."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_effattn
from keras_effattn.layers import spec as spec_lib
from keras_effattn.models import swap


def _tiny(cls=keras_hub.models.DistilBertBackbone, num_layers=3):
    return cls(
        vocabulary_size=60,
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=24,
    )


def _inputs(backbone, batch=3, length=12, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, 60, size=(batch, length)).astype("int32")
    lengths = rng.integers(length // 2, length + 1, size=batch)
    lengths[0] = length
    padding_mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
    x = {"token_ids": token_ids * padding_mask, "padding_mask": padding_mask}
    if "segment_ids" in backbone.input:
        x["segment_ids"] = np.zeros_like(token_ids)
    return x


def _sequence(backbone, x):
    out = backbone(x)
    out = out["sequence_output"] if isinstance(out, dict) else out
    return keras.ops.convert_to_numpy(out) * x["padding_mask"][..., None]


@pytest.mark.parametrize(
    "cls",
    [keras_hub.models.DistilBertBackbone, keras_hub.models.BertBackbone],
    ids=["distilbert", "bert"],
)
@pytest.mark.parametrize("kind", ["keras", "exact", "exact(chunk_size=5)"])
def test_swap_reproduces_original(cls, kind):
    backbone = _tiny(cls)
    x = _inputs(backbone)
    swapped = keras_effattn.swap_attention(backbone, kind)
    assert isinstance(swapped, cls)
    np.testing.assert_allclose(_sequence(swapped, x), _sequence(backbone, x), atol=1e-5)


def test_swap_copies_pretrained_weights_not_fresh_init():
    backbone = _tiny()
    swapped = keras_effattn.swap_attention(backbone, "exact")
    for old, new in zip(swap.attention_layers(backbone), swap.attention_layers(swapped)):
        assert type(new).__name__ == "FusedAttention"
        for name in ("query_dense", "key_dense", "value_dense", "output_dense"):
            for a, b in zip(getattr(old, name).weights, getattr(new, name).weights):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The source backbone is left as it was.
    assert all(
        type(layer) is keras.layers.MultiHeadAttention for layer in swap.attention_layers(backbone)
    )


class _ExtraStateAttention(keras.layers.MultiHeadAttention):
    """Softmax attention with an extra non-trainable weight created BEFORE the projections.

    A flat `set_weights(get_weights())` copy would put a projection kernel into `extra` (or
    fail); copying by sublayer must not care.
    """

    def __init__(self, num_features=3, **kwargs):
        super().__init__(**kwargs)
        self.num_features = num_features

    def build(self, query_shape, value_shape, key_shape=None):
        self.extra = self.add_weight(
            shape=(query_shape[-1], self.num_features), trainable=False, name="extra"
        )
        super().build(query_shape, value_shape, key_shape)

    def get_config(self):
        return {**super().get_config(), "num_features": self.num_features}


def test_copy_by_sublayer_with_extra_state(monkeypatch):
    real = spec_lib.attention_class
    monkeypatch.setattr(
        spec_lib,
        "attention_class",
        lambda kind: (
            _ExtraStateAttention if spec_lib.ALIASES.get(kind, kind) == "favor" else real(kind)
        ),
    )
    backbone = _tiny()
    x = _inputs(backbone)
    swapped = keras_effattn.swap_attention(backbone, "keras,favor(num_features=3),keras")
    layers = swap.attention_layers(swapped)
    assert [type(layer) for layer in layers] == [
        keras.layers.MultiHeadAttention,
        _ExtraStateAttention,
        keras.layers.MultiHeadAttention,
    ]
    assert layers[1].weights[0].name == "extra"  # first in flat order
    np.testing.assert_allclose(_sequence(swapped, x), _sequence(backbone, x), atol=1e-6)
    assert keras_effattn.describe_attention(swapped) == "keras,favor(num_features=3),keras"


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("exact*2,keras*2", ["exact", "exact", "keras", "keras"]),
        ("alternate:keras,exact", ["keras", "exact", "keras", "exact"]),
        (["exact", "keras", "keras", "exact(chunk_size=4)"], ["exact", "keras", "keras", "exact"]),
    ],
    ids=["runs", "alternate", "list"],
)
def test_hybrid_placement(spec, expected):
    swapped = keras_effattn.swap_attention(_tiny(num_layers=4), spec)
    classes = {"exact": "FusedAttention", "keras": "MultiHeadAttention"}
    got = [type(layer).__name__ for layer in swap.attention_layers(swapped)]
    assert got == [classes[k] for k in expected]
    # Depth order is the functional order: layer i is transformer_layer_i.
    names = [layer.name for layer in swap.encoder_layers(swapped)]
    assert names == [f"transformer_layer_{i}" for i in range(4)]


def test_per_kind_options_and_inline_precedence():
    swapped = keras_effattn.swap_attention(
        _tiny(), "exact,exact(chunk_size=2),keras", options={"exact": {"chunk_size": 8}}
    )
    sizes = [getattr(layer, "chunk_size", "n/a") for layer in swap.attention_layers(swapped)]
    assert sizes == [8, 2, "n/a"]
    assert keras_effattn.describe_attention(swapped) == (
        "exact(chunk_size=8),exact(chunk_size=2),keras"
    )


def test_describe_round_trips_through_the_parser():
    swapped = keras_effattn.swap_attention(_tiny(num_layers=4), "exact*3,keras")
    text = keras_effattn.describe_attention(swapped)
    assert text == "exact(chunk_size=none)*3,keras"
    specs = keras_effattn.parse_attention_spec(text, 4)
    assert [s.kind for s in specs] == ["exact", "exact", "exact", "keras"]
    assert (
        keras_effattn.describe_attention(keras_effattn.swap_attention(_tiny(num_layers=4), text))
        == text
    )


def test_save_and_load_keeps_attention_and_outputs(tmp_path):
    backbone = _tiny(num_layers=3)
    swapped = keras_effattn.swap_attention(backbone, "exact(chunk_size=4),keras,exact")
    x = _inputs(backbone)
    path = tmp_path / "swapped.keras"
    swapped.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode=True
    assert type(loaded).__name__ == "EffAttnDistilBertBackbone"
    assert keras_effattn.describe_attention(loaded) == keras_effattn.describe_attention(swapped)
    np.testing.assert_array_equal(_sequence(loaded, x), _sequence(swapped, x))


def test_swapped_backbone_trains_one_step():
    swapped = keras_effattn.swap_attention(_tiny(num_layers=2), "exact")
    inputs = swapped.input
    outputs = keras.layers.Dense(2)(swapped(inputs)[:, 0, :])
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = _inputs(swapped, batch=4)
    before = [np.asarray(w).copy() for w in swapped.trainable_weights]
    model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    after = [np.asarray(w) for w in swapped.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize(
    "spec, match",
    [
        ("flash", "Unknown attention kind"),
        ("exact*2", "names 2 layers but the model has 3"),
        ("exact(chunk_size", "Unbalanced"),
        ("", "empty"),
    ],
    ids=["unknown-kind", "count", "syntax", "empty"],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        keras_effattn.swap_attention(_tiny(), spec)


def test_rejects_tasks_and_non_encoders():
    backbone = _tiny()
    task = keras_hub.models.DistilBertTextClassifier(backbone=backbone, num_classes=2)
    with pytest.raises(ValueError, match="task.backbone"):
        keras_effattn.swap_attention(task, "exact")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="TransformerEncoder"):
        keras_effattn.swap_attention(plain, "exact")


def test_too_long_input_is_a_clear_error():
    swapped = keras_effattn.swap_attention(_tiny(), "exact")
    x = {"token_ids": np.ones((1, 30), "int32"), "padding_mask": np.ones((1, 30), "int32")}
    with pytest.raises(ValueError, match="exceeds the backbone's max_sequence_length=24"):
        swapped(x)


def test_version_guard(monkeypatch):
    assert swap.check_keras_hub_version()
    monkeypatch.setattr(swap.importlib.metadata, "version", lambda name: "0.9.1")
    with pytest.raises(ImportError, match="keras-hub>=0.20"):
        swap.swap_attention(_tiny(), "exact")


@pytest.mark.parametrize("kind", ["favor(num_features=32)", "lowrank(k=8)"],
                         ids=["favor", "lowrank"])
def test_approximate_kinds_keep_projections_and_reload_exactly(kind, tmp_path):
    backbone = _tiny()
    swapped = keras_effattn.swap_attention(backbone, f"exact,{kind},exact")
    old, new = swap.attention_layers(backbone)[1], swap.attention_layers(swapped)[1]
    for name in ("query_dense", "key_dense", "value_dense", "output_dense"):
        for a, b in zip(getattr(old, name).weights, getattr(new, name).weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = _inputs(backbone)
    swapped.save(tmp_path / "approx.keras")
    loaded = keras.saving.load_model(tmp_path / "approx.keras")
    assert keras_effattn.describe_attention(loaded) == keras_effattn.describe_attention(swapped)
    np.testing.assert_allclose(_sequence(loaded, x), _sequence(swapped, x), atol=1e-6)


def test_embedding_similarity_measures():
    from keras_effattn.models import zero_shot

    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(3, 5, 4))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    reference = {
        "cls": sequence[:, 0],
        "mean": (sequence * mask[..., None]).sum(1) / mask.sum(1, keepdims=True),
        "sequence": sequence * mask[..., None],
    }
    same = zero_shot.embedding_similarity(reference, reference)
    assert same["cls_cosine_min"] == pytest.approx(1.0) and same["sequence_rel_error"] == 0.0
    flipped = {k: -v for k, v in reference.items()}
    opposite = zero_shot.embedding_similarity(reference, flipped)
    assert opposite["mean_cosine_mean"] == pytest.approx(-1.0)
    assert opposite["sequence_rel_error"] == pytest.approx(2.0)


def test_encode_pools_over_real_tokens_in_batches():
    from keras_effattn.models import zero_shot

    backbone = _tiny()
    x = _inputs(backbone, batch=5)
    full = zero_shot.encode(backbone, x["token_ids"], x["padding_mask"], batch_size=5)
    split = zero_shot.encode(backbone, x["token_ids"], x["padding_mask"], batch_size=2)
    np.testing.assert_allclose(split["mean"], full["mean"], atol=1e-6)
    sequence = _sequence(backbone, x)
    np.testing.assert_allclose(full["cls"], sequence[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        zero_shot.encode(backbone, x["token_ids"], x["padding_mask"][:, :3])


def test_factorised_lowrank_reswaps_to_itself_and_refuses_full_kinds():
    backbone = keras_effattn.swap_attention(_tiny(), "lowrank(k=8,qkv_rank=4,max_length=24)")
    x = _inputs(backbone)
    again = keras_effattn.swap_attention(backbone, keras_effattn.describe_attention(backbone))
    np.testing.assert_array_equal(_sequence(again, x), _sequence(backbone, x))
    with pytest.raises(ValueError, match="factorised Q/K/V"):
        keras_effattn.swap_attention(backbone, "exact")
