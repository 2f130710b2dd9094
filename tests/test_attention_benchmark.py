"""Smoke test of experiments/attention_benchmark.py: tiny configs, real subprocess workers."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


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
            f"--output_dir={out}"]
    done = _run(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["variant"] for r in rows) == ["chunked", "favor", "fused", "linformer", "mha"]
    for row in rows:
        assert row["status"] == "ok" and row["fwd_ms"] > 0 and row["fwdbwd_ms"] > 0
        assert row["fwdbwd_peak_mb"] > 0
    assert {r["variant"]: r["speedup_fwdbwd_ms"] for r in rows}["mha"] == 1.0
    assert (out / "results.csv").read_text().startswith("variant,")
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
