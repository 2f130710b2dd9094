"""Writes a static web page that classifies texts in the browser with an exported model.

``python -m export.web --model_dir EXPORTED_DIR --output_dir WEB_DIR`` turns a folder written by
`python -m export.to_onnx` into a folder that any static host serves (``python -m http.server``
in it, a USB stick opened through a local server, a school intranet) and that works offline:
nothing is installed on the students' machines, and the page requests nothing outside its own
folder (no CDN, no fonts, no analytics). It holds:

| file | what |
| --- | --- |
| ``index.html``, ``app.js``, ``tokenizer.js``, ``style.css`` | the page (from ``web/app/``) |
| ``model.onnx`` | the exported model, copied unchanged |
| ``model.json`` | labels, max length, inputs, precision, padding invariance, text cleaning |
| ``tokenizer.json``, ``vocab.json`` | the tokenizer settings and its vocabulary (a JSON list) |
| ``text_tables.json`` | the Unicode and HTML tables of the exporting Python (see below) |
| ``ort/`` | onnxruntime-web's WASM build (ES module, its loader and ``.wasm``, licence) |

The page runs onnxruntime-web single-threaded (``ort.env.wasm.numThreads = 1``): a multi-threaded
WASM build needs ``SharedArrayBuffer``, which browsers allow only on pages served with
cross-origin isolation headers (COOP/COEP) that a plain static host does not send. Only the
files of that build are vendored, from the npm package ``onnxruntime-web`` installed by
``npm ci --prefix web`` (version pinned in ``web/package.json`` and ``web/package-lock.json``).

Text cleaning and tokenization run in JavaScript (``web/app/tokenizer.js``) and give exactly the
token ids of `keras_effattn_runtime.predict.Predictor`. What depends on Python's Unicode database or standard
library is not re-derived in JavaScript from the browser's (possibly different) Unicode version
but written into ``text_tables.json`` from this Python: ``html.unescape``'s entity tables,
``str.isspace``, ``str.casefold`` per code point, the tokenizer's punctuation/separator/CJK
classes, default-ignorable code points and combining marks (category Mn), and `clean_text`'s
quote/dash table. Only NFKC/NFD normalisation is the browser's own.

The page shows, for one text, the label, the probability of each class and two per-word views
of the decision:

- **what the model attended to** (exports with the ``attention`` output, which ``export.to_onnx
  --web`` adds by default): each word shaded by the share of attention the top layer gave it,
  averaged over heads and over the positions the classifier pools. For exact layers these are
  the softmax probabilities, for FAVOR+/low-rank the matrix the layer implies
  (`keras_effattn.models.attention_maps.attention_output_model`); the numbers equal
  `keras_effattn_runtime.predict.Predictor.explain`'s;
- **which words mattered** (every export): each word coloured by how much the probability of
  the predicted label drops when that word is left out and the text classified again
  (occlusion), a measurement of behaviour rather than of where the model looked.

In batch mode it classifies one text per line (pasted, or read from a ``.txt`` file) and offers
the results as a CSV download.

Both precisions run in onnxruntime-web's WASM backend: fp32 with the fused
``com.microsoft.Attention``/``Gelu`` nodes and int8 with ``com.microsoft.QAttention`` (checked in
headless Chromium by tests/test_export_web.py).

Example:
    python -m export.web --model_dir exported/minilm --output_dir exported/minilm-web
    cd exported/minilm-web && python -m http.server 8000   # then open http://localhost:8000/
"""

import html
import html.entities
import json
import os
import pathlib
import shutil
import sys
import tempfile
import unicodedata

from keras_effattn_runtime import cleaning, cli
from keras_effattn_runtime import tokenizer as tokenizer_lib
from keras_effattn_runtime.metadata import CLEAN_TEXT
from keras_effattn_runtime.predict import MODEL_FILE, Predictor

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
WEB_ROOT = REPO_ROOT / "web"
APP_DIR = WEB_ROOT / "app"
APP_FILES = ("index.html", "app.js", "tokenizer.js", "style.css")
NODE_MODULES = WEB_ROOT / "node_modules"
ORT_PACKAGE = "onnxruntime-web"
# The single-threaded-capable WASM build: the ES module, the Emscripten loader it imports and
# the binary that loader fetches. Nothing else of the package is needed (no WebGPU/WebGL/JSEP).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_DIR = "ort"
CONFIG_FILE = "model.json"
VOCAB_JSON = "vocab.json"
TABLES_FILE = "text_tables.json"
INSTALL_HINT = "run `npm ci --prefix web` in the repository (needs Node.js and npm)"


def _ranges(predicate, scanned=((0x0000, 0x3FFFF), (0xE0000, 0xE0FFF))):
    """Inclusive code point ranges [[lo, hi], ...] where `predicate(code)` holds."""
    ranges = []
    for lo, hi in scanned:
        for code in range(lo, hi + 1):
            if 0xD800 <= code <= 0xDFFF or not predicate(code):
                continue
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return ranges


def text_tables():
    """The Python tables the JavaScript cleaner and tokenizer read (see the module docstring)."""
    kept, dropped = tokenizer_lib._character_ranges()
    casefold = {}
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        folded = char.casefold()
        if folded != char:
            casefold[str(code)] = folded
    translate = cleaning._TRANSLATE  # clean_text's character table, shared with the JS port
    return {
        "unidata_version": unicodedata.unidata_version,
        "python": sys.version.split()[0],
        "html5_entities": dict(html.entities.html5),
        "invalid_charrefs": {str(k): v for k, v in html._invalid_charrefs.items()},
        "invalid_codepoints": sorted(html._invalid_codepoints),
        "whitespace": [c for c in range(0x110000) if chr(c).isspace()],
        "translate": {str(k): v for k, v in translate.items()},
        "kept_ranges": [list(r) for r in kept],
        "dropped_ranges": [list(r) for r in dropped],
        "cjk_ranges": [list(r) for r in tokenizer_lib._CJK_RANGES],
        "ignorable_ranges": [list(r) for r in tokenizer_lib._DEFAULT_IGNORABLE_RANGES],
        "combining_mark_ranges": _ranges(lambda c: unicodedata.category(chr(c)) == "Mn"),
        "casefold": casefold,
    }


def ort_source(node_modules=None):
    """The folder holding onnxruntime-web's dist files and the package's version.

    Raises:
        FileNotFoundError: the npm package is not installed (names the install command).
    """
    package = pathlib.Path(node_modules or NODE_MODULES) / ORT_PACKAGE
    manifest = package / "package.json"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"onnxruntime-web is not installed at {package}; {INSTALL_HINT}, or pass "
            "--node_modules DIR of an installation."
        )
    version = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    dist = package / "dist"
    missing = [name for name in ORT_FILES if not (dist / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"onnxruntime-web {version} at {package} lacks {missing}; install the version "
            f"pinned in web/package.json ({INSTALL_HINT})."
        )
    return dist, version


def export_web(model_dir, output_dir, node_modules=None):
    """Writes the static page for the export in `model_dir` into `output_dir`.

    Args:
        model_dir: a folder written by `python -m export.to_onnx` (``model.onnx``,
            ``vocab.txt``, ``tokenizer.json``); it is checked as the predictor checks it.
        output_dir: the page's folder (created; files of an earlier page are replaced).
        node_modules: optional folder with the npm package ``onnxruntime-web`` (default: the
            repository's ``web/node_modules``).

    Returns:
        A dict: ``files`` (name -> bytes), ``total_bytes``, ``onnxruntime_web`` (version),
        ``precision``.

    Raises:
        FileNotFoundError: the export or onnxruntime-web is missing.
        ValueError: the export is damaged, or asks for a text cleaning the page does not
            implement.
    """
    predictor = Predictor(model_dir)  # validates model, metadata and tokenizer files
    metadata = predictor.metadata
    if metadata["text_cleaning"] not in (CLEAN_TEXT, "none"):
        raise ValueError(
            f"The model asks for text cleaning {metadata['text_cleaning']!r}, which the web "
            f"page does not implement (it has {CLEAN_TEXT!r} and 'none'); re-export the model."
        )
    dist, version = ort_source(node_modules)
    output_dir = pathlib.Path(output_dir)
    if output_dir.is_file():
        raise ValueError(f"--output_dir {str(output_dir)!r} is a file; pass a folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".web-", dir=output_dir))
    try:
        for name in APP_FILES:
            shutil.copyfile(APP_DIR / name, staging / name)
        (staging / ORT_DIR).mkdir()
        for name in ORT_FILES:
            shutil.copyfile(dist / name, staging / ORT_DIR / name)
        licence = dist.parent / "LICENSE"
        if licence.is_file():
            shutil.copyfile(licence, staging / ORT_DIR / "LICENSE")
        shutil.copyfile(pathlib.Path(model_dir) / MODEL_FILE, staging / MODEL_FILE)
        tokenizer = predictor.tokenizer
        config = {
            "labels": predictor.labels,
            "max_length": predictor.max_length,
            "inputs": predictor.input_names,
            # ONNX element types, e.g. "int32" (from onnxruntime's "tensor(int32)").
            "input_types": {
                i.name: i.type[len("tensor(") : -1] for i in predictor.session.get_inputs()
            },
            "precision": metadata["precision"],
            "padding_invariant": metadata["padding_invariant"],
            "text_cleaning": metadata["text_cleaning"],
            "attention_spec": metadata.get("attention_spec"),
            "fusion": metadata.get("fusion"),
            "outputs": metadata.get("outputs", ["logits"]),
            "vocab_sha256": tokenizer.vocabulary_sha256,
            "onnxruntime_web": version,
            "model_file": MODEL_FILE,
        }
        _write_json(staging / CONFIG_FILE, config)
        _write_json(staging / tokenizer_lib.TOKENIZER_FILE, tokenizer.get_config())
        _write_json(staging / VOCAB_JSON, tokenizer.vocabulary)
        _write_json(staging / TABLES_FILE, text_tables())
        files = {}
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                name = path.relative_to(staging).as_posix()
                files[name] = path.stat().st_size
                target = output_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        return {
            "files": files,
            "total_bytes": sum(files.values()),
            "onnxruntime_web": version,
            "precision": metadata["precision"],
        }
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        json.dump(obj, handle, ensure_ascii=False, separators=(",", ":"))


def _main(argv):
    parser = cli.ArgumentParser(
        prog="python -m export.web",
        description="Write a static, offline web page that classifies texts with an exported "
        "keras_effattn model in the browser (onnxruntime-web, no install).",
    )
    parser.add_argument("--model_dir", required=True, help="Folder written by export.to_onnx.")
    parser.add_argument("--output_dir", required=True, help="Folder for the page.")
    parser.add_argument(
        "--node_modules", default=None,
        help="node_modules with onnxruntime-web (default: the repository's web/node_modules).",
    )
    parser.add_argument("--verbose", action="store_true", help="Tracebacks for input errors.")
    args = parser.parse_args(argv)
    result = export_web(args.model_dir, args.output_dir, node_modules=args.node_modules)
    print(
        f"wrote {args.output_dir}: {len(result['files'])} files, "
        f"{result['total_bytes'] / 1e6:.1f} MB ({result['precision']}, onnxruntime-web "
        f"{result['onnxruntime_web']}); serve it with `python -m http.server` in that folder"
    )
    return 0


def main(argv=None):
    """The CLI; returns the exit status (0 ok, 2 bad input, 1 internal error)."""
    return cli.guard(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
