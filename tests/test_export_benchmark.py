"""export.benchmark end to end on a tiny model: int8 recipes side by side, agreement with its
uncertainty, the optimum peer's switches; export.optimum_peer's timing loop on our own files."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from export import optimum_peer
from tests.conftest import REPO_ROOT
from tests.export_helpers import exported, tiny_classifier

pytestmark = pytest.mark.usefixtures("data_dir")


def _benchmark(tmp_path, data_dir, *args, path_first=None):
    model = tmp_path / "model.keras"
    if not model.exists():
        tiny_classifier("exact").save(model)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if path_first:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    # The benchmark's own int8 export gate asks 95 % agreement; this untrained model's labels
    # sit near ties, so 16 verification texts let one flip fail it: 64 allow three.
    return subprocess.run(
        [sys.executable, "-m", "export.benchmark", f"--model={model}", f"--data_dir={data_dir}",
         "--repeats=2", "--warmup=1", "--lengths=32", "--batch_sizes=1,2",
         "--agreement_per_class=8", "--verify_per_class=32", f"--output_dir={tmp_path / 'out'}",
         *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=1200)


@pytest.mark.slow
def test_recipes_side_by_side_with_agreement_intervals(tmp_path, data_dir):
    # optimum pins an older transformers, so it is not in the test environment: `auto` notes
    # the skip, `on` refuses with the install command.
    proc = _benchmark(tmp_path, data_dir, "--int8_recipes=default,reduce_range,float_attention",
                      "--optimum=auto", f"--optimum_path={tmp_path / 'nothing'}",
                      *(("--emulate_cpus=EPYC-v1", "--emulate_exports=int8,int8_reduce_range")
                        if shutil.which("qemu-x86_64") else ()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    backends = {(r["backend"], r["batch"]) for r in results["latency"]}
    assert backends == {(b, n) for b in ("keras", "onnx_fp32", "onnx_int8",
                                         "onnx_int8_reduce_range", "onnx_int8_float_attention")
                        for n in (1, 2)}
    agreement = results["agreement"]
    assert agreement["n"] == 16
    for name in ("fp32", "int8", "int8_reduce_range", "int8_float_attention"):
        entry = agreement[name]
        low, high = entry["agreement_ci95"]
        assert low <= entry["label_agreement"] <= high
        assert entry["flips"] == round((1 - entry["label_agreement"]) * 16)
        assert {"delta", "delta_ci95", "gained", "lost"} <= set(entry)
    assert agreement["fp32"]["label_agreement"] == 1.0
    # Every int8 file is measured as users get it: dynamic int8 depends on the batch, so the
    # recipes' folders say so too and run one text per call, like the verified export.
    assert agreement["fp32"]["batch_size"] == 16
    for name in ("int8", "int8_reduce_range", "int8_float_attention"):
        assert agreement[name]["batch_size"] == 1, name
    assert results["machine"]["cpu_isa"] and results["machine"]["cpu_model"]
    assert "optimum peer skipped" in results["optimum_peer"]["skipped"]
    # The same files' labels on an emulated AVX2 CPU (tests/test_export_emulated_cpu.py fails
    # under CI when QEMU is missing).
    if shutil.which("qemu-x86_64"):
        emulated = results["agreement_emulated"]["EPYC-v1"]
        assert "AVX2" in emulated["isa"] and "AVX-512" not in emulated["isa"]
        assert set(emulated) == {"isa", "wall_seconds", "int8", "int8_reduce_range"}
        for name in ("int8", "int8_reduce_range"):
            assert emulated[name]["n"] == 16
            assert 0.0 <= emulated[name]["same_labels_as_host"] <= 1.0
        assert set(results["targets"]["int8_label_agreement_emulated"]) == {"EPYC-v1"}
        assert results["emulation_pending"] == []
        assert "emulated CPUs" in (tmp_path / "out" / "results.md").read_text()
    text = (tmp_path / "out" / "results.md").read_text()
    assert "| int8_reduce_range |" in text and "95% CI" in text

    refused = _benchmark(tmp_path, data_dir, "--optimum=on",
                         f"--optimum_path={tmp_path / 'nothing'}")
    assert refused.returncode == 2
    assert "pip install --target" in refused.stderr


def test_bad_recipe_is_refused(tmp_path, data_dir):
    proc = _benchmark(tmp_path, data_dir, "--int8_recipes=default,fastest")
    assert proc.returncode == 2
    assert "--int8_recipes" in proc.stderr and "reduce_range" in proc.stderr


def test_emulated_export_outside_the_recipes_is_refused(tmp_path, data_dir):
    # Checked before QEMU is looked for, so this runs without it.
    proc = _benchmark(tmp_path, data_dir, "--emulate_cpus=EPYC-v1",
                      "--emulate_exports=int8,int8_compact")
    assert proc.returncode == 2
    assert "--emulate_exports" in proc.stderr and "int8_<recipe>" in proc.stderr


def _failing_qemu(folder):
    """A stand-in QEMU that lists EPYC-v1 but whose emulated runs fail."""
    fake = folder / "qemu-x86_64"
    folder.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nif [ "$2" = help ]; then echo "x86 EPYC-v1   AMD EPYC"; exit 0; fi\n'
                    'echo "emulated run died" >&2\nexit 1\n')
    fake.chmod(0o755)
    return folder


def test_unknown_emulated_cpu_is_refused_before_any_work(tmp_path, data_dir):
    proc = _benchmark(tmp_path, data_dir, "--emulate_cpus=EPYC-v1,Pentium-9000",
                      path_first=_failing_qemu(tmp_path / "bin"))
    assert proc.returncode != 0
    assert "Pentium-9000" in proc.stderr and "qemu-x86_64 -cpu help" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_host_results_are_on_disk_before_the_emulated_phase(tmp_path, data_dir):
    # The emulated phase takes hours at full size; a run that dies there (here: QEMU fails)
    # keeps the host's timings and agreement, and says which CPU was not measured.
    proc = _benchmark(tmp_path, data_dir, "--emulate_cpus=EPYC-v1", "--emulate_exports=int8",
                      path_first=_failing_qemu(tmp_path / "bin"))
    assert proc.returncode != 0
    assert "EPYC-v1" in proc.stderr and "emulated run died" in proc.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["backend"] for r in results["latency"]} == {"keras", "onnx_fp32", "onnx_int8"}
    assert results["agreement"]["int8"]["n"] == 16
    assert results["agreement_emulated"] == {}
    assert results["emulation_pending"] == ["EPYC-v1"]
    assert "Not measured yet (still running, or stopped): EPYC-v1." in (
        tmp_path / "out" / "results.md").read_text()


def test_peer_timing_loop_on_our_own_files():
    folder, _, _ = exported("exact")
    int8, _, _ = exported("exact", quantize="int8")
    rng = np.random.default_rng(0)
    batches = {(1, 16): rng.integers(1000, 2000, size=(1, 16)),
               (2, 24): rng.integers(1000, 2000, size=(2, 24))}
    timings = optimum_peer.time_models(
        {"fp32": folder / "model.onnx", "int8": int8 / "model.onnx"}, batches, repeats=2,
        warmup=1, threads=1)
    assert {(t["batch"], t["length"], t["model"]) for t in timings} == {
        (b, n, m) for (b, n) in batches for m in ("fp32", "int8")}
    assert all(t["seconds"] > 0 for t in timings)
