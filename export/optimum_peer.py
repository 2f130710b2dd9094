"""The peer a user would pick instead of our export: Hugging Face optimum's ONNX export and its
dynamic int8, timed beside our exported models in one process.

`export.benchmark` runs this module in a child process (optimum pins its own transformers, so
it often lives in a separate ``pip install --target`` folder that the child puts first on its
path). Given a job file, it

1. exports the same architecture from the pretrained Hugging Face folder with
   ``ORTModelForSequenceClassification.from_pretrained(folder, export=True)`` (the BERT encoder
   with a fresh 2-class head: latency does not depend on the head's weights);
2. quantises it as optimum's documentation does for CPUs: ``ORTQuantizer`` with
   ``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)`` on CPUs with
   AVX-512 VNNI, ``.avx2(...)`` elsewhere;
3. times optimum's fp32 and int8 models and our ONNX files (``ours``) with the same
   onnxruntime session options (`keras_effattn_runtime.predict.session_options`) on the same
   token ids, every model in turn in every repeat, medians reported.

It writes ``{"versions", "quantization", "timings": [{"batch", "length", "model", "seconds"}]}``
to the job's ``output``.

Usage (by `export.benchmark`): ``python -m export.optimum_peer JOB.json``
"""

import json
import pathlib
import statistics
import sys
import time

import numpy as np


def export_optimum(hf_folder, out_dir, vnni):
    """optimum's fp32 export and dynamic int8 of `hf_folder` (its VNNI config when `vnni`, the
    CPU's flag as the parent read it); returns paths and the config."""
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    out_dir = pathlib.Path(out_dir)
    fp32_dir, int8_dir = out_dir / "fp32", out_dir / "int8"
    # The folder's BERT config has no num_labels: transformers' default head is 2 classes.
    model = ORTModelForSequenceClassification.from_pretrained(hf_folder, export=True)
    model.save_pretrained(fp32_dir)
    factory = AutoQuantizationConfig.avx512_vnni if vnni else AutoQuantizationConfig.avx2
    config = factory(is_static=False, per_channel=True)
    quantizer = ORTQuantizer.from_pretrained(fp32_dir)
    quantizer.quantize(save_dir=int8_dir, quantization_config=config)
    int8_file = next(p for p in int8_dir.glob("*.onnx"))
    return {"fp32": fp32_dir / "model.onnx", "int8": int8_file}, {
        "config": "avx512_vnni" if vnni else "avx2",
        "per_channel": True,
        "reduce_range": bool(getattr(config, "reduce_range", False)),
    }


def _feeds(session, token_ids):
    mask = (token_ids != 0).astype(np.int64)
    feeds = {}
    for spec in session.get_inputs():
        dtype = np.int64 if spec.type == "tensor(int64)" else np.int32
        if spec.name in ("input_ids", "token_ids"):
            feeds[spec.name] = token_ids.astype(dtype)
        elif spec.name in ("attention_mask", "padding_mask"):
            feeds[spec.name] = mask.astype(dtype)
        else:  # token_type_ids / segment_ids
            feeds[spec.name] = np.zeros_like(token_ids, dtype=dtype)
    return feeds


def time_models(paths, batches, repeats, warmup, threads):
    """Median seconds per call of each ONNX file on each batch, models timed in turn."""
    import onnxruntime as ort

    from keras_effattn_runtime.predict import session_options

    sessions = {
        name: ort.InferenceSession(str(path), session_options(threads),
                                   providers=["CPUExecutionProvider"])
        for name, path in paths.items()
    }
    timings = []
    for (batch_size, length), token_ids in batches.items():
        feeds = {name: _feeds(s, token_ids) for name, s in sessions.items()}
        for name, session in sessions.items():
            for _ in range(warmup):
                session.run(None, feeds[name])
        seconds = {name: [] for name in sessions}
        for _ in range(repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, feeds[name])
                seconds[name].append(time.perf_counter() - start)
        for name, values in seconds.items():
            timings.append({"batch": batch_size, "length": length, "model": name,
                            "seconds": statistics.median(values)})
    return timings


def main(argv):
    job = json.loads(pathlib.Path(argv[1]).read_text(encoding="utf-8"))
    import onnxruntime
    import optimum
    import transformers

    paths, quantization = export_optimum(job["hf_folder"], job["work_dir"], job["vnni"])
    models = {"optimum_fp32": paths["fp32"], "optimum_int8": paths["int8"],
              **{f"ours_{k}": v for k, v in job["ours"].items()}}
    arrays = np.load(job["token_ids"])
    batches = {}
    for key in arrays.files:  # "b{batch}_s{length}"
        batch_size, length = (int(part[1:]) for part in key.split("_"))
        batches[(batch_size, length)] = arrays[key]
    timings = time_models(models, batches, job["repeats"], job["warmup"], job["threads"])
    result = {
        "versions": {"optimum": getattr(optimum, "__version__", None) or _version("optimum"),
                     "transformers": transformers.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "quantization": quantization,
        "file_bytes": {name: pathlib.Path(path).stat().st_size for name, path in models.items()},
        "timings": timings,
    }
    pathlib.Path(job["output"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def _version(name):
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
