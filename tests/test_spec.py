import pytest

from keras_effattn import LayerSpec, format_attention_spec, parse_attention_spec


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("exact", ["exact"] * 6),
        ("exact,favor,exact,favor,exact,favor", ["exact", "favor"] * 3),
        ("alternate:exact,favor", ["exact", "favor"] * 3),
        ("alternate:keras,exact,favor", ["keras", "exact", "favor"] * 2),
        ("exact*2,favor*4", ["exact"] * 2 + ["favor"] * 4),
        ("Fused,performer*4,linformer", ["exact"] + ["favor"] * 4 + ["lowrank"]),
        (["exact", "favor*5"], ["exact"] + ["favor"] * 5),
    ],
    ids=["one", "list", "alternate", "alternate3", "repeat", "aliases", "pylist"],
)
def test_kinds_per_layer(spec, expected):
    assert [s.kind for s in parse_attention_spec(spec, num_layers=6)] == expected


def test_inline_and_default_options():
    specs = parse_attention_spec(
        "favor(num_features=64, redraw_every=100)*2,exact(chunk_size=128),lowrank(k=32,share_kv=true)",
        options={"favor": {"num_features": 256, "seed": 3}, "lowrank": {"k": 8}},
    )
    assert specs[0].kwargs == {"num_features": 64, "redraw_every": 100, "seed": 3}
    assert specs[2] == LayerSpec("exact", (("chunk_size", 128),))
    assert specs[3].kwargs == {"k": 32, "share_kv": True}


def test_format_round_trip():
    specs = parse_attention_spec("favor(num_features=64)*2,exact,lowrank(k=16,share_kv=false)")
    assert parse_attention_spec(format_attention_spec(specs)) == specs


def test_dict_entries():
    specs = parse_attention_spec([{"kind": "favor", "num_features": 8}, "exact"])
    assert specs[0].kwargs == {"num_features": 8}


@pytest.mark.parametrize(
    "spec,num_layers,match",
    [
        ("sparse", 6, "Unknown attention kind 'sparse'"),
        ("exact,favor", 6, "names 2 layers but the model has 6"),
        ("alternate:exact,favor", None, "needs num_layers"),
        ("", 6, "empty"),
        ("favor(num_features)", 6, "name=value"),
        ("favor(num_features=3", 6, "Unbalanced"),
        ("exact*0", 6, "at least 1"),
        (42, 6, "must be a string or a list"),
        ([], 6, "empty"),
        ("exact", 0, "num_layers must be a positive int"),
    ],
)
def test_errors(spec, num_layers, match):
    with pytest.raises(ValueError, match=match):
        parse_attention_spec(spec, num_layers=num_layers)
