"""experiments/attention_benchmark.py: the analytic FLOP counter behind its roofline columns, and
a smoke test with tiny configs and real subprocess workers."""

import json
import os
import subprocess
import sys

import pytest

from keras_effattn.training.benchmark import attention_flops, training_flops_per_step
from tests.conftest import REPO_ROOT


def test_attention_flops_match_hand_counts():
    n, d, heads, dh = 512, 768, 12, 64
    projections = 4 * 2 * n * d * d
    exact = projections + 2 * 2 * heads * n * n * dh
    for variant in ("mha", "exact", "fused", "chunked"):
        assert attention_flops(variant, n, 1, heads, dh, mode="fwd") == exact
        assert attention_flops(variant, n, 1, heads, dh, mode="fwd_bwd") == 3 * exact
    assert attention_flops("fused", n, mode="fwd_bwd") == 9_663_676_416  # ~9.7 GFLOP
    # FAVOR+ (M = 64): two feature maps [n, H] x [H, M] and two linear products per head.
    favor = projections + 2 * 2 * heads * n * 64 * dh + 2 * 2 * heads * n * 64 * dh
    assert attention_flops("favor", n, 1, heads, dh, num_features=64, mode="fwd") == favor
    # Linformer (k = 128): E^T K and F^T V over the N*H width, reduced Q K'^T and P V'.
    linformer = projections + 2 * 2 * 128 * n * d + 2 * 2 * heads * n * 128 * dh
    assert attention_flops("linformer", n, 1, heads, dh, linformer_k=128, mode="fwd") == linformer
    # Batch scales linearly; a model width D != N*H changes only the projections.
    assert attention_flops("mha", n, 3, heads, dh) == 3 * attention_flops("mha", n, 1, heads, dh)
    assert (attention_flops("mha", 16, 1, 2, 4, model_dim=10, mode="fwd")
            == 4 * 2 * 16 * 10 * 8 + 2 * 2 * 2 * 16 * 16 * 4)
    # Same convention as the training-step counter (an encoder layer without its FFN).
    size = {"num_layers": 1, "num_heads": heads, "hidden_dim": d, "intermediate_dim": 0,
            "sequence_length": n}
    assert attention_flops("fused", n, 2, heads, dh) == training_flops_per_step(size, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"variant": "sparse"}, "variant must be one of"),
    ({"mode": "bwd"}, "mode must be one of"),
    ({"length": 0}, "length must be a positive int"),
    ({"num_features": 2.5}, "num_features must be a positive int"),
])
def test_attention_flops_rejects_bad_arguments(kwargs, match):
    args = {"variant": "favor", "length": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        attention_flops(**args)


def _run(argv):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.attention_benchmark", *argv], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_tiny_benchmark_writes_rows_skips_over_budget_and_resumes(tmp_path):
    out = tmp_path / "bench"
    argv = ["--variants=mha,fused,chunked,favor,linformer", "--lengths=33", "--batch_sizes=1",
            "--no_dropout_lengths=", "--num_heads=2", "--head_dim=8", "--chunk_size=16",
            "--num_features=16", "--linformer_k=16", "--repeats=1", "--warmup=0",
            "--peak_matmul_size=128", f"--output_dir={out}"]
    done = _run(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["variant"] for r in rows) == ["chunked", "favor", "fused", "linformer", "mha"]
    for row in rows:
        assert row["status"] == "ok" and row["fwd_ms"] > 0 and row["fwdbwd_ms"] > 0
        assert row["fwdbwd_peak_mb"] > 0
    assert {r["variant"]: r["speedup_fwdbwd_ms"] for r in rows}["mha"] == 1.0
    assert (out / "results.csv").read_text().startswith("variant,")

    # Roofline columns: analytic FLOPs, one matmul peak for the run, MHA's time over the bound.
    peak = json.loads((out / "config.json").read_text())["runs"][-1]["matmul_peak_gflops"]
    assert peak > 0
    mha_ms = {r["variant"]: r["fwdbwd_ms"] for r in rows}["mha"]
    for row in rows:
        flops = attention_flops(row["variant"], 33, 1, 2, 8, num_features=16, linformer_k=16)
        assert row["gflop_fwd_bwd"] == pytest.approx(flops / 1e9, rel=1e-3)
        assert row["achieved_gflops"] == pytest.approx(
            row["gflop_fwd_bwd"] / (row["fwdbwd_ms"] / 1e3), rel=1e-2)
        assert row["matmul_peak_gflops"] == pytest.approx(peak, rel=1e-2)
        assert row["fraction_of_peak"] > 0 and row["roofline_ms"] > 0
        assert row["fraction_of_peak"] == pytest.approx(
            row["achieved_gflops"] / row["matmul_peak_gflops"], rel=1e-2)
        assert row["roofline_ms"] == pytest.approx(1e3 * row["gflop_fwd_bwd"] / peak, rel=1e-2)
        assert row["max_speedup_vs_mha"] == pytest.approx(mha_ms / row["roofline_ms"], rel=1e-2)
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"gflop_fwd_bwd", "achieved_gflops", "fraction_of_peak", "roofline_ms",
            "max_speedup_vs_mha"} <= set(header)
    assert "roofline ms" in done.stdout and "GFLOP/s (roofline_ms" in done.stdout
    assert (out / "attention_benchmark.png").stat().st_size > 0

    # A second run with the same rows finished is a resume: nothing is re-measured.
    before = (out / "results.json").read_text()
    again = _run(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["rows"] == json.loads(before)["rows"]

    # A budget far below any layer's need records a skip instead of running out of memory.
    skipped = _run([*argv[:-1], "--variants=mha", "--lengths=4096", "--num_heads=12",
                    "--head_dim=64", "--memory_budget_gb=0.001", f"--output_dir={tmp_path / 's'}"])
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    rows = json.loads((tmp_path / "s" / "results.json").read_text())["rows"]
    assert rows and all(r["status"] != "ok" for r in rows)

    # Without the peak the analytic columns stay, the roofline ones are left empty.
    no_peak = _run([*argv[:-2], "--variants=mha", "--measure_peak=false",
                    f"--output_dir={tmp_path / 'p'}"])
    assert no_peak.returncode == 0, no_peak.stderr[-3000:]
    [row] = json.loads((tmp_path / "p" / "results.json").read_text())["rows"]
    assert row["status"] == "ok" and row["gflop_fwd_bwd"] > 0 and row["achieved_gflops"] > 0
    for key in ("matmul_peak_gflops", "fraction_of_peak", "roofline_ms", "max_speedup_vs_mha"):
        assert row.get(key) is None
    assert "matmul_peak_gflops" not in json.loads((tmp_path / "p" / "config.json").read_text())[
        "runs"][-1]


def test_bad_flags_raise_clear_errors(tmp_path):
    for flag, match in (("--variants=mha,sparse", "Unknown --variants"),
                        ("--peak_matmul_size=0", "--peak_matmul_size must be >= 1")):
        done = _run([flag, "--lengths=16", f"--output_dir={tmp_path}"])
        assert done.returncode != 0 and match in done.stderr


@pytest.mark.slow
def test_pytorch_sdpa_peer_row_and_ratios_in_the_same_run(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "peer"
    argv = ["--variants=mha,chunked,torch_sdpa", "--lengths=40", "--batch_sizes=1",
            "--dropouts=0.0", "--no_dropout_lengths=", "--num_heads=2", "--head_dim=8",
            "--chunk_size=16", "--repeats=1", "--warmup=0", "--measure_peak=false",
            f"--output_dir={out}"]
    done = _run(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    peer = rows["torch_sdpa"]
    assert peer["status"] == "ok" and peer["fwdbwd_ms"] > 0 and peer["torch_version"]
    assert peer["gflop_fwd_bwd"] == rows["mha"]["gflop_fwd_bwd"]  # the same arithmetic
    assert peer["fwdbwd_vs_torch_sdpa"] == 1.0
    chunked = rows["chunked"]
    assert chunked["fwdbwd_vs_torch_sdpa"] == pytest.approx(
        chunked["fwdbwd_ms"] / peer["fwdbwd_ms"], rel=1e-2)
    assert "f+b vs torch" in done.stdout
