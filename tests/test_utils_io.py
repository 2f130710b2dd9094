import json
import math
import os

import keras
import numpy as np
import pytest

from keras_effattn.utils import io


def test_write_json_roundtrip_numpy_and_nonfinite(tmp_path):
    path = tmp_path / "sub" / "m.json"
    io.write_json(path, {"a": np.float32(0.5), "b": np.arange(3), "c": math.nan, "d": (1, 2)})
    assert io.read_json(path) == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": [1, 2]}
    json.loads(path.read_text())  # strict JSON (no NaN literal)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_unserialisable_value_leaves_previous_file(tmp_path):
    path = tmp_path / "m.json"
    io.write_json(path, {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        io.write_json(path, {"v": Boom()})
    assert io.read_json(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.parametrize("writer, payload", [
    (io.write_json, {"v": 2, "long": "x" * 100_000}),
    (io.write_text, "new text " * 10_000),
    (io.write_csv, [{"a": i, "b": "y" * 50} for i in range(2_000)]),
])
def test_write_failing_mid_file_leaves_previous_file_and_no_temp(tmp_path, monkeypatch, writer,
                                                                payload):
    # The failure strikes after bytes went to disk (a full disk at fsync time), which is what a
    # non-atomic writer (open(path, "w") then write) would turn into a truncated file.
    path = tmp_path / "m.out"
    io.write_text(path, "previous\n")
    written = []

    def failing_fsync(fd):
        written.append(os.fstat(fd).st_size)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        writer(path, payload)
    assert written and written[0] > 0  # the new content really was being written
    assert path.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.out"]


def test_atomic_path_exception_keeps_destination_absent(tmp_path):
    path = tmp_path / "x.txt"
    with pytest.raises(RuntimeError), io.atomic_path(path) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_csv_stable_columns_and_missing_cells(tmp_path):
    path = tmp_path / "r.csv"
    io.write_csv(path, [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "val_loss": 0.4}])
    assert path.read_text().splitlines()[0] == "epoch,loss,val_loss"
    rows = io.read_csv(path)
    assert rows[1] == {"epoch": "2", "loss": "", "val_loss": "0.4"}
    io.write_csv(path, [{"b": 1, "a": 2}], columns=["a", "b"])
    assert path.read_text().splitlines() == ["a,b", "2,1"]


def test_png_and_keras_model(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    io.save_figure(figure, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    io.save_keras_model(model, tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "m.keras"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: io.save_keras_model(None, p / "m.h5"), "must end with '.keras'"),
        (lambda p: io.save_weights(None, p / "m.h5"), "must end with '.weights.h5'"),
        (lambda p: io.write_text(p / "t.txt", b"bytes"), "expects a str"),
    ],
    ids=["keras-extension", "weights-extension", "text-type"],
)
def test_bad_input(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path)


def test_missing_files_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        io.read_json(tmp_path / "nothere.json")
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        io.read_csv(tmp_path / "nothere.csv")
