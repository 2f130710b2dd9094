"""keras_effattn_runtime.predict: TensorFlow-free classification of real text, CLI, batching and error cases."""

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from export import verify
from keras_effattn_runtime import metadata as meta
from keras_effattn_runtime import predict as predict_lib
from keras_effattn_runtime.cleaning import clean_text
from keras_effattn_runtime.predict import Predictor
from tests.conftest import REPO_ROOT
from tests.export_helpers import ALL_KINDS, LABELS, exported, imdb

pytestmark = pytest.mark.usefixtures("data_dir")


@pytest.fixture(scope="module")
def export():
    return exported(ALL_KINDS)


@pytest.fixture
def copy_of_export(export, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(export[0], folder)
    return folder


def clean(texts):
    return [clean_text(t) for t in texts]


def test_predictions_on_real_reviews_equal_the_keras_pipeline(export):
    folder, model, _ = export
    texts, _ = imdb(per_class=6, seed=3, clean=True)
    texts += ["Short.", "A wonderful, moving film — I loved it!", "Café noir… très bien"]
    predictor = Predictor(folder, batch_size=4)
    results = predictor.predict(texts)
    # The training pipeline: clean_text (read_imdb), KerasHub tokenization, the Keras model.
    packed = {k: np.asarray(v) for k, v in model.preprocessor(clean(texts)).items()}
    reference = verify.run_keras(model, packed)
    np.testing.assert_allclose(predictor.predict_logits(texts), reference, atol=1e-4)
    probabilities = predict_lib.softmax(reference)
    for result, row in zip(results, probabilities):
        assert result["label"] == LABELS[int(row.argmax())]
        assert result["probability"] == pytest.approx(row.max(), abs=1e-4)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
    assert predictor.last_stats["texts"] == len(texts)
    assert predictor.last_stats["batches"] == 4
    assert predictor.last_stats["per_text_ms"] > 0


RAW_REVIEW = (
    "A <i>great</i> film &amp; a fine cast!!!<br /><br />Loved it&hellip; "
    "Tom &amp; Jerry would approve.<br />10/10"
)


def test_raw_reviews_are_cleaned_as_in_training(export):
    # Training saw clean_text(raw) (the model's preprocessor); the predictor must see the same.
    folder, model, _ = export
    raw, _ = imdb(per_class=6, seed=3)  # raw IMDB: most reviews hold <br /> tags
    # From just before the first tag: the tiny model sees only 32 tokens.
    raw = [RAW_REVIEW] + [t[max(0, t.index("<br") - 50) :] for t in raw if "<br" in t][:3]
    cleaned = clean(raw)
    predictor = Predictor(folder, batch_size=2)
    assert predictor.text_cleaning == meta.CLEAN_TEXT
    tokenizer = predictor.tokenizer
    assert (tokenizer(raw)["token_ids"] != tokenizer(cleaned)["token_ids"]).any(-1).all()
    packed = {k: np.asarray(v) for k, v in model.preprocessor(cleaned).items()}
    np.testing.assert_allclose(
        predictor.predict_logits(raw), verify.run_keras(model, packed), atol=1e-4
    )
    # clean=False (texts already cleaned) feeds the texts as given.
    unclean = Predictor(folder, batch_size=2, clean=False)
    assert unclean.text_cleaning == "none"
    np.testing.assert_allclose(
        unclean.predict_logits(cleaned), predictor.predict_logits(raw), atol=1e-5
    )
    # The model's own preprocessor cleans too, so only the tokenizer alone gives raw tokens.
    np.testing.assert_array_equal(model.preprocessor(raw)["token_ids"],
                                  model.preprocessor(cleaned)["token_ids"])
    packed_raw = {k: np.asarray(v) for k, v in tokenizer(raw).items() if k in packed}
    np.testing.assert_allclose(
        unclean.predict_logits(raw), verify.run_keras(model, packed_raw), atol=1e-4
    )


def test_cli_no_clean(export, capsys):
    folder = str(export[0])
    assert predict_lib.main(["--model_dir", folder, "--json", RAW_REVIEW]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["text"] == RAW_REVIEW and f"cleaning {meta.CLEAN_TEXT}" in err
    assert predict_lib.main(["--model_dir", folder, "--no_clean", RAW_REVIEW]) == 0
    assert "cleaning none" in capsys.readouterr()[1]


def test_export_without_text_cleaning_metadata_is_not_cleaned(copy_of_export):
    # Exports written before the key existed were verified on raw text: read as "none".
    model_file = copy_of_export / "model.onnx"
    model = onnx.load(str(model_file))
    kept = [p for p in model.metadata_props if p.key != meta.PREFIX + "text_cleaning"]
    assert len(kept) == len(model.metadata_props) - 1
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(model_file))
    old = Predictor(copy_of_export)
    assert old.metadata["text_cleaning"] == old.text_cleaning == "none"
    np.testing.assert_array_equal(
        old.predict_logits([RAW_REVIEW]),
        Predictor(copy_of_export, clean=False).predict_logits([RAW_REVIEW]),
    )


def test_batching_padding_and_order_do_not_change_results(export):
    folder = export[0]
    texts, _ = imdb(per_class=5, seed=4)
    texts = [t[: 40 + 30 * i] for i, t in enumerate(texts)]  # many different lengths
    one = Predictor(folder, batch_size=1, padding="max_length").predict_logits(texts)
    many = Predictor(folder, batch_size=4).predict_logits(texts)
    assert Predictor(folder).padding == "longest"  # the export verified padding invariance
    np.testing.assert_allclose(many, one, atol=1e-5)
    reverse = Predictor(folder, batch_size=3).predict_logits(texts[::-1])
    np.testing.assert_allclose(reverse[::-1], one, atol=1e-5)


def test_function_api():
    folder = exported(ALL_KINDS)[0]
    result = predict_lib.predict(folder, "Not my cup of tea.")
    assert len(result) == 1 and result[0]["label"] in LABELS


def test_cli_arguments_file_stdin_and_json(export, tmp_path, capsys, monkeypatch):
    folder = str(export[0])
    assert predict_lib.main(["--model_dir", folder, "Great film!", "Awful, boring."]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in LABELS
    assert float(lines[0].split("\t")[1]) >= 0.5
    assert "ms/text" in err

    reviews = tmp_path / "reviews.txt"
    reviews.write_text("One fine film.\nA dreadful mess.\nOK I guess\n", encoding="utf-8")
    assert predict_lib.main(["--model_dir", folder, "--json", "--input", str(reviews)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr()[0].strip().splitlines()]
    assert [r["text"] for r in rows] == ["One fine film.", "A dreadful mess.", "OK I guess"]
    assert all(set(r) == {"text", "label", "probability", "probabilities"} for r in rows)

    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\nsecond line\n"))
    assert predict_lib.main(["--model_dir", folder, "--json"]) == 0
    assert len(capsys.readouterr()[0].strip().splitlines()) == 2


def test_cli_empty_lines(export, tmp_path, capsys):
    folder = str(export[0])
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("good\n\n   \nbad\n", encoding="utf-8")
    assert predict_lib.main(["--model_dir", folder, "--input", str(reviews)]) == 2
    err = capsys.readouterr()[1]
    assert "2 empty line(s) (line 2, 3)" in err and "--skip_empty" in err
    assert predict_lib.main(["--model_dir", folder, "--skip_empty", "--input", str(reviews)]) == 0
    assert len(capsys.readouterr()[0].strip().splitlines()) == 2
    assert predict_lib.main(["--model_dir", folder, "fine", "  "]) == 2
    assert "Text 1 is empty" in capsys.readouterr()[1]


def test_missing_and_corrupt_model_files(copy_of_export, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        Predictor(tmp_path / "nowhere")
    model_file = copy_of_export / "model.onnx"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 3])  # truncated copy
    with pytest.raises(ValueError, match="is not an ONNX model.*damaged, truncated"):
        Predictor(copy_of_export)
    model_file.write_bytes(b"\x00garbage" * 100)
    assert predict_lib.main(["--model_dir", str(copy_of_export), "text"]) == 2
    err = capsys.readouterr()[1]
    assert "is not an ONNX model" in err and len(err.strip().splitlines()) == 1
    model_file.unlink()
    with pytest.raises(FileNotFoundError, match="No model.onnx"):
        Predictor(copy_of_export)


def test_model_that_is_not_ours(copy_of_export):
    model_file = copy_of_export / "model.onnx"
    model = onnx.load(str(model_file))
    del model.metadata_props[:]
    onnx.save(model, str(model_file))
    with pytest.raises(ValueError, match="not a keras_effattn export"):
        Predictor(copy_of_export)


def test_tokenizer_files_that_do_not_belong(copy_of_export):
    (copy_of_export / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Predictor(copy_of_export)


def test_vocabulary_of_another_model(copy_of_export):
    from keras_effattn_runtime.tokenizer import WordPieceTokenizer

    other = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "film"], 32)
    other.save(copy_of_export)  # consistent files, but not the model's vocabulary
    with pytest.raises(ValueError, match="not the one model.onnx was exported with"):
        Predictor(copy_of_export)


def test_bad_texts(export):
    predictor = Predictor(export[0])
    with pytest.raises(ValueError, match="No texts"):
        predictor.predict([])
    with pytest.raises(ValueError, match="Text 1 is empty"):
        predictor.predict(["fine", ""])
    with pytest.raises(ValueError, match="not a str"):
        predictor.predict(["fine", 3])
    with pytest.raises(ValueError, match="batch_size"):
        Predictor(export[0], batch_size=0)


def test_predictor_never_imports_tensorflow(export):
    # The cleaning path included: keras_effattn's cleaning.py is loaded without the package.
    code = (
        "import sys\n"
        "from keras_effattn_runtime.predict import Predictor\n"
        "predictor = Predictor(sys.argv[1])\n"
        "assert predictor.text_cleaning == 'keras_effattn.clean_text', predictor.text_cleaning\n"
        "results = predictor.predict(['A fine film.<br /><br />Tom &amp; Jerry!', 'Dull.'])\n"
        "assert len(results) == 2\n"
        "assert predictor.clean_text('a<br />b &amp; c') == 'a b & c'\n"
        "loaded = [m for m in ('tensorflow', 'keras', 'keras_hub', 'tf2onnx', 'keras_effattn')\n"
        "          if m in sys.modules]\n"
        "sys.exit(f'imported {loaded}' if loaded else 0)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(export[0])], cwd=REPO_ROOT, capture_output=True,
        text=True, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]



def test_explain_reads_the_attention_output_as_keras_computes_it(capsys):
    from keras_effattn.models.attention_maps import attention_maps

    folder, model, report = exported("exact", attention_output=True)
    assert report["outputs"] == ["logits", "attention"]
    assert report["verification"]["attention"]["fp32_max_abs_diff"] <= 1e-6
    predictor = Predictor(folder)
    assert predictor.has_attention
    texts, _ = imdb(per_class=2, seed=3)
    texts = [RAW_REVIEW, *texts]  # the last ones are longer than the model reads: truncated
    explained = predictor.explain(texts)
    assert [e["label"] for e in explained] == [p["label"] for p in predictor.predict(texts)]
    for text, result in zip(texts, explained):
        cleaned = clean_text(text)
        ids = predictor.tokenizer([cleaned], padding="longest")
        assert result["tokens"] == [predictor.tokenizer.vocabulary[i] for i in ids["token_ids"][0]]
        # Reference: the top layer's full attention matrix from Keras, averaged over heads and
        # over the queries the mean pooling reads.
        top = attention_maps(model, ids)["maps"][-1][0].astype("float64")
        np.testing.assert_allclose(result["token_attention"], top.mean(0).mean(0), atol=1e-6)
        pieces = {w: len(i) for w, i in predictor.tokenizer.words(cleaned)}
        words = result["words"]
        assert words and all(w["word"] in pieces for w in words)
        assert sum(w["attention"] for w in words) == pytest.approx(1.0)
        read = sum(pieces[w["word"]] for w in words[:-1])
        assert read < len(result["tokens"]) - 2  # every word shown lies within what was read
    # The CLI's --explain prints the most attended words.
    assert predict_lib.main(["--model_dir", str(folder), "--explain", RAW_REVIEW]) == 0
    assert "attended to:" in capsys.readouterr()[0]


def test_explain_needs_an_attention_output(export, capsys):
    predictor = Predictor(export[0])
    assert not predictor.has_attention
    with pytest.raises(ValueError, match="--attention_output"):
        predictor.explain(["a film"])
    assert predict_lib.main(["--model_dir", str(export[0]), "--explain", "a film"]) == 2
    assert "--attention_output" in capsys.readouterr()[1]
