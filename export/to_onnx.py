"""Exports a trained keras_effattn text classifier to ONNX, verified against Keras.

Writes into ``--output_dir``: ``model.onnx`` (dynamic batch and sequence axes, metadata: labels,
max length, tokenizer kind and vocab hash, text cleaning, attention spec, checkpoint hash,
versions), the tokenizer files the TensorFlow-free predictor needs (``vocab.txt``,
``tokenizer.json``) and ``export_report.json``. The model is verified with onnxruntime on real
texts, cleaned as the predictor will clean them (the model's own cleaning), over several batch sizes
and lengths: a maximum absolute logit difference for fp32, label agreement for int8/fp16.
Exit status (`keras_effattn_runtime.cli`): 0 on success; 2 and one line on stderr for bad input (a missing or
non-UTF-8 file, a bad flag value), checked before the model is loaded; 1 when verification
fails, in which case the command writes nothing final (the report goes to
``export_report.failed.json`` for diagnosis) and leaves an earlier export untouched; 1 with a
traceback for an internal error.

TensorFlow lowers exact GELU (``tf.nn.gelu(approximate=False)``) to ``Erfc``, which tf2onnx 1.17
cannot convert (Keras' own ``model.export(format="onnx")`` writes a graph onnxruntime refuses).
`convert_to_onnx` handles it in the converter with the exact identity erfc(x) = 1 - erf(x)
(ONNX ``Erf``); the model itself is not changed.

Examples:
    python -m export.to_onnx --model results/train/model.keras --output_dir exported/minilm
    python -m export.to_onnx --model results/train/model.keras --output_dir exported/int8 \
        --quantize int8 --num_texts 2000 --min_agreement 0.995
"""

import hashlib
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import zipfile

import numpy as np

from export import fusion as fusion_lib
from export import quantize as quantize_lib
from export import verify
from keras_effattn_runtime import cli
from keras_effattn_runtime import metadata as meta
from keras_effattn_runtime.predict import text_cleaner
from keras_effattn_runtime.tokenizer import WordPieceTokenizer, sha256_file

MODEL_FILE = "model.onnx"
REPORT_FILE = "export_report.json"
FAILED_REPORT_FILE = "export_report.failed.json"
DEFAULT_OPSET = 17
MIN_OPSET = 13  # Erf, dynamic Slice/Unsqueeze axes as inputs and tf2onnx's tested range
MAX_OPSET = 18  # the newest opset tf2onnx 1.17 emits
ID_INPUTS = ("token_ids", "padding_mask", "segment_ids")
_HALF_DTYPES = ("float16", "bfloat16")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class ParityError(RuntimeError):
    """The exported model disagrees with Keras beyond the tolerances; `.report` says how."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------- converter
def _erfc_handler(ctx, node, name, args):
    """tf2onnx handler: ``Erfc(x)`` -> ``1 - Erf(x)`` (exact; ONNX has Erf but not Erfc)."""
    from tf2onnx import utils

    x = node.input[0]
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(x))
    erf = ctx.make_node("Erf", [x], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}/one"), np.array(1, dtype=dtype))
    shapes, dtypes, output = node.output_shapes, node.output_dtypes, node.output[0]
    ctx.remove_node(node.name)
    ctx.make_node(
        "Sub",
        [one.output[0], erf.output[0]],
        outputs=[output],
        name=node.name,
        shapes=shapes,
        dtypes=dtypes,
    )


def model_inputs(model):
    """The model's id inputs as ``{name: dtype string}`` (token_ids, padding_mask[, segment_ids]).

    Raises:
        ValueError: the model does not take a dict of id inputs.
    """
    structure = getattr(model, "input", None)
    if not isinstance(structure, dict) or "token_ids" not in structure:
        raise ValueError(
            "export needs a classifier called on {'token_ids': int32[B, T], 'padding_mask': "
            f"[B, T]}} (a KerasHub text classifier); {type(model).__name__} takes "
            f"{type(structure).__name__}."
        )
    unknown = sorted(set(structure) - set(ID_INPUTS))
    if unknown:
        raise ValueError(
            f"The model takes inputs {unknown} beyond {ID_INPUTS}; the TensorFlow-free "
            "predictor only produces token ids, padding and segment ids."
        )
    return {name: str(structure[name].dtype) for name in ID_INPUTS if name in structure}


def convert_to_onnx(model, path, opset=DEFAULT_OPSET):
    """Converts the id-level graph of `model` to ONNX with dynamic batch and sequence axes.

    Args:
        model: a Keras classifier taking ``{"token_ids", "padding_mask"[, "segment_ids"]}``
            and returning logits ``[B, C]`` (or a dict of outputs with ``"logits"``, e.g.
            from `keras_effattn.models.attention_maps.attention_output_model`); it must
            compute in float32.
        path: where to write the ONNX file.
        opset: int, ONNX opset in [13, 18], default 17.

    Returns:
        The list of input names of the ONNX graph (its outputs: ``"logits"``, and any other
        entry of a dict output such as ``"attention"`` ``[B, T]``).
    """
    import tensorflow as tf
    import tf2onnx

    _check_opset(opset)
    _check_float32(model)
    inputs = model_inputs(model)
    signature = [
        {
            name: tf.TensorSpec([None, None], tf.as_dtype(dtype), name=name)
            for name, dtype in inputs.items()
        }
    ]

    @tf.function(input_signature=signature)
    def classify(features):
        outputs = model(features, training=False)
        return dict(outputs) if isinstance(outputs, dict) else {"logits": outputs}

    _patch_tf2onnx()
    from keras_effattn.ops.exact import without_xla

    with without_xla():  # tf2onnx cannot read XLA-compiled function calls
        onnx_model, _ = tf2onnx.convert.from_function(
            classify,
            input_signature=signature,
            opset=opset,
            custom_op_handlers={"Erfc": (_erfc_handler, [])},
        )
    used = {n.op_type for n in onnx_model.graph.node if n.domain == ""}
    unsupported = sorted(used - _onnx_ops(opset))
    if unsupported:
        raise ValueError(
            f"tf2onnx left TensorFlow ops {unsupported} unconverted at opset {opset}; try "
            "another --opset or add a handler in export/to_onnx.py."
        )
    for value in list(onnx_model.graph.input) + list(onnx_model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for index, dim_name in ((0, "batch"), (1, "sequence")):
            if index < len(dims) and not dims[index].HasField("dim_value"):
                if value.name == "logits" and index == 1:
                    continue
                dims[index].dim_param = dim_name
    import onnx

    onnx.save(onnx_model, path)
    return list(inputs)


def _onnx_ops(opset):
    import onnx.defs

    return {
        schema.name
        for schema in onnx.defs.get_all_schemas_with_history()
        if schema.domain == "" and schema.since_version <= opset
    }


def _patch_tf2onnx():
    # tf2onnx 1.17 still uses np.object/np.cast etc.; Keras ships the numpy-2 patch it uses for
    # its own ONNX export. Reuse it rather than copying it.
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError as error:  # pragma: no cover - depends on the Keras version
        raise ValueError(
            "This Keras has no keras.src.export.tf2onnx_lib (numpy-2 patch for tf2onnx); "
            "install keras>=3.6."
        ) from error
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()


def _check_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not (
        MIN_OPSET <= opset <= MAX_OPSET
    ):
        raise ValueError(
            f"opset must be an int in [{MIN_OPSET}, {MAX_OPSET}] (tf2onnx 1.17's range with Erf), "
            f"got {opset!r}; the default is {DEFAULT_OPSET}."
        )


def _check_float32(model):
    mixed = sorted(
        {
            layer.dtype_policy.name
            for layer in _all_layers(model)
            if layer.dtype_policy.compute_dtype in _HALF_DTYPES
        }
    )
    if mixed:
        raise ValueError(
            f"The model computes in {mixed}; export in float32: load it with "
            "`export.to_onnx.load_float32(path)` (or rebuild it under a float32 policy) and "
            "use --quantize fp16 for a half-precision file."
        )


def _all_layers(model):
    seen, stack, out = set(), [model], []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        stack.extend(getattr(layer, "_layers", []) or [])
    return [layer for layer in out if hasattr(layer, "dtype_policy")]


def load_float32(path):
    """Loads a ``.keras`` classifier with every dtype policy forced to float32.

    A model trained under ``mixed_float16``/``mixed_bfloat16`` keeps float32 variables, so its
    float32 copy holds the same weights and computes at full precision, as export requires.

    Args:
        path: a ``.keras`` file.

    Returns:
        The loaded Keras model, computing in float32.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a ``.keras`` file.
    """
    from keras_effattn.utils.saving import load_for_inference

    path = check_model_path(path)
    model = load_for_inference(path)
    if not any(layer.dtype_policy.compute_dtype in _HALF_DTYPES for layer in _all_layers(model)):
        return model
    # Rewrite the dtype policies in the archive's config.json and load that copy: weights and
    # assets (the tokenizer vocabulary) come back exactly as saved.
    with tempfile.TemporaryDirectory() as tmp:
        patched = os.path.join(tmp, "float32.keras")
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(patched, "w") as target:
            for item in source.infolist():
                data = source.read(item.filename)
                if item.filename == "config.json":
                    config = _force_float32(json.loads(data))
                    data = json.dumps(config).encode("utf-8")
                target.writestr(item, data)
        return load_for_inference(patched)


def _force_float32(config):
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(
            config.get("config"), dict
        ):
            name = config["config"].get("name", "")
            if name.startswith("mixed_"):
                return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _force_float32(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_force_float32(value) for value in config]
    if isinstance(config, str) and config.startswith("mixed_"):
        return "float32"
    return config


# --------------------------------------------------------------------------------- metadata
def describe_attention(model):
    """The model's per-layer attention spec (`keras_effattn.describe_attention`)."""
    from keras_effattn import describe_attention as describe

    return str(describe(model))


def weights_sha256(model):
    """sha256 over the model's weights (names, shapes and bytes), for in-memory exports."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable.numpy()))
        digest.update(f"{variable.path}:{value.dtype}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def package_versions():
    """Versions of the packages an export depends on (absent ones as "not installed")."""
    from keras_effattn.utils.metadata import package_versions as versions_of

    names = ("keras_effattn", "tensorflow", "keras", "keras-hub", "tf2onnx", "onnx",
             "onnxruntime", "numpy")
    versions = {name: version or "not installed" for name, version in versions_of(names).items()}
    versions["python"] = platform.python_version()
    return versions


def write_metadata(path, values):
    """Sets our metadata `values` (`keras_effattn_runtime.metadata`) in the ONNX file at `path`,
    keeping its other metadata."""
    import onnx

    model = onnx.load(path)
    props = meta.to_props(values)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "keras_effattn"
    model.doc_string = "keras_effattn text classifier: token ids -> logits"
    onnx.save(model, path)


# --------------------------------------------------------------------------------- export
def model_text_cleaning(model, requested=None):
    """The text cleaning an export records: ``(name, source)``.

    `source` is ``"model"`` (``model.preprocessor.text_cleaning``, saved with the model),
    ``"argument"`` (`requested`, for a model without one) or ``"assumed"`` (neither: a model
    from before cleaning moved into the preprocessor, trained on ``read_imdb(clean=True)``
    text, gets ``"keras_effattn.clean_text"``).

    Raises:
        ValueError: `requested` is not a known cleaning, or differs from the model's own.
    """
    if requested is not None and requested not in meta.TEXT_CLEANINGS:
        raise ValueError(
            f"text_cleaning must be one of {meta.TEXT_CLEANINGS}, got {requested!r}: "
            f"'{meta.CLEAN_TEXT}' for a model trained on cleaned text, 'none' for one trained "
            "on raw text."
        )
    own = getattr(getattr(model, "preprocessor", None), "text_cleaning", None)
    if own is not None:
        if requested is not None and requested != own:
            raise ValueError(
                f"text_cleaning={requested!r} differs from the model's own {own!r} (saved in its "
                "preprocessor, applied in training and predict); drop --text_cleaning to use it."
            )
        return own, "model"
    if requested is not None:
        return requested, "argument"
    return meta.CLEAN_TEXT, "assumed"


def export_onnx(
    model,
    output_dir,
    texts,
    labels=None,
    label_names=None,
    quantize=None,
    opset=DEFAULT_OPSET,
    optimize=True,
    fusion="all",
    max_abs_diff=verify.DEFAULT_MAX_ABS_DIFF,
    min_agreement=0.99,
    source_path=None,
    text_cleaning=None,
    attention_output=False,
    int8_recipe="default",
):
    """Exports, verifies and writes a classifier for TensorFlow-free deployment.

    Args:
        model: a float32 Keras text classifier with ``.preprocessor`` (KerasHub, WordPiece
            tokenizer, ``sequence_length``), called on id inputs and returning logits [B, C].
        output_dir: folder for ``model.onnx``, ``vocab.txt``, ``tokenizer.json`` and
            ``export_report.json`` (created if missing).
        texts: list of str, at least 8 real texts used for verification, raw (as deployment
            will see them): they are cleaned as `text_cleaning` says before verification.
        labels: optional list of int gold labels for `texts`; adds accuracy and the
            quantisation accuracy delta to the report.
        label_names: optional list of class names (default ``class_0`` ...).
        quantize: None (fp32), ``"int8"`` (dynamic) or ``"fp16"``.
        int8_recipe: a name of `export.quantize.INT8_RECIPES`, default ``"default"`` (per-token
            int8 for the feed-forward output projections, dynamic int8 with 7-bit weights
            elsewhere; needs onnxruntime >= 1.22 to run); ``"compact"`` gives the smallest
            file, ``"uint8_float_ffn_output"`` the previous default. Used with
            ``quantize="int8"``.
        opset: int in [13, 18], default 17.
        optimize: bool, default True. Offline graph optimisation (`quantize.optimize_graph`).
        fusion: ``"all"`` (default: layer norm, GELU and self-attention fused into single
            nodes, the attention ones onnxruntime contrib ops, so the file needs onnxruntime),
            ``"portable"`` (layer norm only; standard ONNX ops) or ``"none"``. Ignored
            without `optimize`. See `export.fusion`.
        max_abs_diff: float, default 1e-4. fp32 tolerance on logits (every batch and length).
        min_agreement: float, default 0.99. Minimum label agreement with Keras of an int8/fp16
            model (fp32 must agree on every label).
        source_path: optional path of the ``.keras`` file, hashed into the metadata; without it
            the weights are hashed.
        text_cleaning: None (default: the model's own, ``model.preprocessor.text_cleaning``,
            which `keras_effattn.build_classifier` saves with every model; a model without one
            predates it and was trained on text cleaned by ``read_imdb(clean=True)``, so
            ``"keras_effattn.clean_text"`` is assumed and the report says so), or
            ``"keras_effattn.clean_text"`` / ``"none"``, which must then equal the model's own
            when it has one. Recorded in the metadata; the predictor cleans each text with it
            before tokenizing, and verification runs on texts cleaned the same way
            (`keras_effattn_runtime.predict.text_cleaner`).
        attention_output: bool, default False. Add a second output, ``attention`` ``[B, T]``:
            the attention the top layer pays to each token from the positions the classifier
            pools, averaged over heads
            (`keras_effattn.models.attention_maps.attention_output_model`); the predictor's
            ``explain`` and the web page's per-word view read it. It costs one unfused
            attention layer; the logits are unchanged and verified as always, the attention
            output against Keras within `max_abs_diff`.

    Returns:
        The report dict (also written as ``export_report.json``).

    Raises:
        ParityError: verification failed; nothing final was written.
        ValueError: bad arguments or an unsupported model.

    Example:
    ```python
    report = export_onnx(classifier, "exported", texts=reviews, labels=gold, quantize="int8")
    report["verification"]["final"]["label_agreement"]
    ```
    """
    if quantize not in (None, *quantize_lib.QUANTIZE_MODES):
        raise ValueError(
            f"quantize must be None, 'int8' or 'fp16', got {quantize!r}."
        )
    if int8_recipe not in quantize_lib.INT8_RECIPES:
        raise ValueError(
            f"int8_recipe must be one of {sorted(quantize_lib.INT8_RECIPES)}, got {int8_recipe!r}."
        )
    _check_opset(opset)
    if fusion not in fusion_lib.FUSION_LEVELS:
        raise ValueError(f"fusion must be one of {fusion_lib.FUSION_LEVELS}, got {fusion!r}.")
    text_cleaning, cleaning_source = model_text_cleaning(model, text_cleaning)
    texts = _check_texts(texts)
    # Verify on what deployment feeds the model: the predictor's own cleaning of raw texts.
    clean = text_cleaner(text_cleaning)
    texts = [clean(t) for t in texts]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(texts),):
            raise ValueError(
                f"labels must have one int per text ({len(texts)}), got shape {labels.shape}."
            )
    for name, value, low, high in (
        ("max_abs_diff", max_abs_diff, 0.0, np.inf),
        ("min_agreement", min_agreement, 0.0, 1.0),
    ):
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is None:
        raise ValueError(
            "The model has no .preprocessor; export needs the KerasHub preprocessor to ship "
            "the same tokenization. Build the classifier with keras_effattn.build_classifier."
        )
    tokenizer = WordPieceTokenizer.from_keras_hub(preprocessor)
    graph_model = model
    if attention_output:
        from keras_effattn.models.attention_maps import attention_output_model

        graph_model = attention_output_model(model)
    num_classes = int(model.output.shape[-1]) if hasattr(model, "output") else None
    if label_names is None:
        label_names = [f"class_{i}" for i in range(num_classes)]
    label_names = [str(x) for x in label_names]
    if num_classes is not None and len(label_names) != num_classes:
        raise ValueError(
            f"label_names has {len(label_names)} names but the model has {num_classes} classes; "
            "pass one name per logit column."
        )
    precision = quantize or "fp32"

    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir))
    try:
        fp32_path = str(staging / "model_fp32.onnx")
        input_names = convert_to_onnx(graph_model, fp32_path, opset=opset)
        fused = None
        if optimize:
            fused = quantize_lib.optimize_graph(fp32_path, fp32_path, fusion=fusion)
        final_path = str(staging / MODEL_FILE)
        if quantize:
            options = quantize_lib.INT8_RECIPES[int8_recipe] if quantize == "int8" else {}
            quantize_lib.quantize(fp32_path, final_path, quantize, **options)
        else:
            shutil.copyfile(fp32_path, final_path)

        verification = verify.verify_export(
            model,
            preprocessor,
            tokenizer,
            fp32_path,
            final_path if quantize else None,
            texts,
            labels=labels,
            max_abs_diff=max_abs_diff,
            min_agreement=min_agreement,
            attention_model=graph_model if attention_output else None,
        )
        values = {
            "format": meta.FORMAT,
            "labels": label_names,
            "max_length": tokenizer.sequence_length,
            "inputs": input_names,
            "precision": precision,
            "padding_invariant": verification["padding_invariant"],
            "batch_invariant": verification["batch_invariant"],
            "tokenizer": tokenizer.get_config(),
            "tokenizer_kind": tokenizer.get_config()["kind"],
            "vocab_sha256": tokenizer.vocabulary_sha256,
            "attention_spec": describe_attention(model),
            "source_sha256": sha256_file(source_path) if source_path else weights_sha256(model),
            "source": "keras file" if source_path else "in-memory weights",
            "versions": package_versions(),
            "opset": opset,
            "fusion": fusion if optimize else "none",
            "text_cleaning": text_cleaning,
            "outputs": ["logits", "attention"] if attention_output else ["logits"],
        }
        if quantize == "int8":
            values["int8_recipe"] = int8_recipe
        write_metadata(final_path, values)
        tokenizer.save(staging)
        report = {
            "ok": verification["ok"],
            "model_file": MODEL_FILE,
            "precision": precision,
            "int8_recipe": int8_recipe if quantize == "int8" else None,
            "opset": opset,
            "optimized": bool(optimize),
            "fusion": {"level": fusion if optimize else "none", "fused": fused},
            "inputs": input_names,
            "labels": label_names,
            "max_length": tokenizer.sequence_length,
            "text_cleaning": text_cleaning,
            "text_cleaning_source": cleaning_source,
            "outputs": values["outputs"],
            "attention_spec": values["attention_spec"],
            "source_sha256": values["source_sha256"],
            "vocab_sha256": values["vocab_sha256"],
            "file_bytes": {
                "fp32": os.path.getsize(fp32_path),
                precision: os.path.getsize(final_path),
            },
            "thresholds": {"max_abs_diff": max_abs_diff, "min_agreement": min_agreement},
            "verification": verification,
            "versions": values["versions"],
        }
        if not verification["ok"]:
            _write_json(output_dir / FAILED_REPORT_FILE, report)
            raise ParityError(
                "ONNX verification failed: " + "; ".join(verification["failures"])
                + f". Nothing was written; see {output_dir / FAILED_REPORT_FILE}.",
                report,
            )
        _write_json(staging / REPORT_FILE, report)
        # Publish: tokenizer and report first, model.onnx last, each by an atomic rename.
        for name in ("vocab.txt", "tokenizer.json", REPORT_FILE, MODEL_FILE):
            os.replace(staging / name, output_dir / name)
        stale = output_dir / FAILED_REPORT_FILE
        if stale.exists():
            stale.unlink()
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_texts(texts):
    if isinstance(texts, str) or texts is None:
        raise ValueError(
            "texts must be a list of real texts for verification (e.g. IMDB test reviews), "
            f"got {type(texts).__name__}."
        )
    texts = list(texts)
    if len(texts) < 8:
        raise ValueError(f"texts must hold at least 8 texts for verification, got {len(texts)}.")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must all be str.")
    return texts


def _write_json(path, obj):
    from keras_effattn.utils.io import write_json

    write_json(path, obj)


# --------------------------------------------------------------------------------- CLI
def _flags():
    from absl import flags

    flags.DEFINE_string("model", None, "Trained classifier, a .keras file.")
    flags.DEFINE_string("output_dir", None, "Folder for model.onnx, tokenizer files, report.")
    flags.DEFINE_enum("quantize", None, list(quantize_lib.QUANTIZE_MODES), "int8 or fp16.")
    flags.DEFINE_enum("int8_recipe", "default", list(quantize_lib.INT8_RECIPES),
                      "How int8 quantises (export.quantize.INT8_RECIPES): 'default' (per-token "
                      "int8 for the feed-forward outputs), 'blockwise' (closest to fp32, "
                      "slower), 'compact' (smallest file), ...")
    flags.DEFINE_integer("opset", DEFAULT_OPSET, f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}).",
                         lower_bound=MIN_OPSET, upper_bound=MAX_OPSET)
    flags.DEFINE_bool("optimize", True, "Offline graph optimisation (basic level).")
    flags.DEFINE_enum(
        "fusion", "all", list(fusion_lib.FUSION_LEVELS),
        "Pattern fusions after optimisation: all (layer norm, GELU, attention; onnxruntime "
        "contrib ops), portable (layer norm only, standard ONNX) or none.",
    )
    flags.DEFINE_enum(
        "text_cleaning", None, list(meta.TEXT_CLEANINGS),
        "Cleaning recorded for the predictor (default: the model's own, saved in its "
        f"preprocessor; {meta.CLEAN_TEXT} for older models without one). Given explicitly, it "
        "must equal the model's own.",
    )
    flags.DEFINE_string(
        "texts", None,
        "Verification texts, one per line, raw (default: IMDB test reviews); cleaned as the "
        "model's text cleaning says.",
    )
    flags.DEFINE_string(
        "data_dir", str(REPO_ROOT.parent / "shared" / "data"), "Folder with aclImdb_v1.tar.gz."
    )
    flags.DEFINE_integer(
        "num_texts", 1000, "Number of verification texts (IMDB: balanced). 1,000 resolve a "
        "0.99 agreement gate (10 flips allowed); far fewer let one text decide it.")
    flags.DEFINE_float("max_abs_diff", verify.DEFAULT_MAX_ABS_DIFF, "fp32 tolerance on logits.")
    flags.DEFINE_float("min_agreement", 0.99, "Minimum label agreement for int8/fp16.")
    flags.DEFINE_list("labels", None, "Class names (default: neg,pos for 2 classes).")
    flags.DEFINE_bool(
        "attention_output", None,
        "Add an 'attention' output (the top layer's attention per token) for the predictor's "
        "explain and the web page's per-word view (default: on with --web, else off).")
    flags.DEFINE_integer("seed", 0, "Chooses the IMDB verification sample.")
    flags.DEFINE_string(
        "web", None, "Also write the static browser page of the export into this folder "
        "(python -m export.web; needs `npm ci --prefix web`).",
    )
    flags.mark_flags_as_required(["model", "output_dir"])
    return flags.FLAGS


def check_model_path(path, flag="--model"):
    """Checks that `path` is an existing ``.keras`` file (before anything loads it).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a ``.keras`` file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{flag} {path!r} does not exist; pass a trained .keras file (a training run "
            "folder's model.keras)."
        )
    if not path.endswith(".keras"):
        raise ValueError(f"{flag} must be a .keras file (keras 3 format), got {path!r}.")
    return path


def _read_texts_file(path, limit):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--texts {path!r} does not exist; pass a UTF-8 file with one "
                                "text per line.")
    try:
        with open(path, encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
    except UnicodeDecodeError as error:
        raise ValueError(
            f"--texts {path!r} is not UTF-8 text ({error.reason} at byte {error.start}); "
            "convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    return texts[:limit]


def _imdb_archive(flag_values):
    archive = pathlib.Path(flag_values.data_dir) / "aclImdb_v1.tar.gz"
    if not archive.is_file():
        raise FileNotFoundError(
            f"No {archive.name} in --data_dir {flag_values.data_dir!r} for the verification "
            "texts; pass --data_dir with the shared data or --texts FILE (one text per line)."
        )
    return archive


def _verification_texts(flag_values):
    if flag_values.texts:
        return _read_texts_file(flag_values.texts, flag_values.num_texts), None
    from keras_effattn.data import read_imdb

    archive = _imdb_archive(flag_values)
    data = read_imdb(
        str(archive),
        "test",
        max_per_class=max(4, flag_values.num_texts // 2),
        seed=flag_values.seed,
        clean=False,  # raw, as deployment sees them; export_onnx applies the model's cleaning
    )
    return list(data.texts), np.asarray(data.labels)


def main(argv):
    """Checks the inputs, loads the .keras model, exports and verifies it; returns the exit
    status (bad input raises, for `keras_effattn_runtime.cli` to report with status 2)."""
    del argv
    from absl import flags

    flag_values = flags.FLAGS
    # Every input is checked before the (slow) model load and before anything is written.
    check_model_path(flag_values.model)
    if flag_values.texts:
        _read_texts_file(flag_values.texts, flag_values.num_texts)
    else:
        _imdb_archive(flag_values)
    if pathlib.Path(flag_values.output_dir).is_file():
        raise ValueError(f"--output_dir {flag_values.output_dir!r} is a file; pass a folder.")
    if flag_values.web:
        from export import web

        web.ort_source()  # onnxruntime-web installed? (FileNotFoundError names the fix)
    try:
        model = load_float32(flag_values.model)
        texts, labels = _verification_texts(flag_values)
        label_names = flag_values.labels
        if label_names is None and int(model.output.shape[-1]) == 2 and labels is not None:
            label_names = ["neg", "pos"]
        report = export_onnx(
            model,
            flag_values.output_dir,
            texts,
            labels=labels,
            label_names=label_names,
            quantize=flag_values.quantize,
            opset=flag_values.opset,
            optimize=flag_values.optimize,
            fusion=flag_values.fusion,
            max_abs_diff=flag_values.max_abs_diff,
            min_agreement=flag_values.min_agreement,
            source_path=flag_values.model,
            text_cleaning=flag_values.text_cleaning,
            attention_output=(bool(flag_values.web) if flag_values.attention_output is None
                              else flag_values.attention_output),
            int8_recipe=flag_values.int8_recipe,
        )
    except ParityError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    final = report["verification"]["final"]
    low, high = final["agreement_ci95"]
    print(
        f"wrote {pathlib.Path(flag_values.output_dir) / MODEL_FILE} ({report['precision']}, "
        f"{report['file_bytes'][report['precision']] / 1e6:.1f} MB): max |Δlogit| "
        f"{final['max_abs_diff']:.2e}, label agreement {final['label_agreement']:.4f} "
        f"(95% CI {low:.4f}-{high:.4f}, {final['flips']} of {final['n']} labels changed)"
    )
    for warning in report["verification"].get("warnings", []):
        print(f"warning: {warning}")
    if flag_values.web:
        page = web.export_web(flag_values.output_dir, flag_values.web)
        print(f"wrote the web page {flag_values.web} ({page['total_bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    _flags()
    cli.run_absl(main)
