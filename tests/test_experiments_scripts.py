"""Smoke tests: each experiment script's real entry point in --quick mode with tiny flags.

Every script runs in its own subprocess (`python -m experiments.<name>`), as a user runs it: the
scripts define absl flags at import, so importing several of them into one process would clash.
Each test checks the files the script promises and that a second run resumes instead of
recomputing.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from experiments import sweep
from experiments.failures import failure_statistics, negation_count
from keras_effattn.utils import io
from tests.conftest import REPO_ROOT

# Tiny IMDB settings shared by the IMDB scripts.
TINY_IMDB = ["--backbone=tiny", "--epochs=1", "--batch_size=8", "--max_length=32",
             "--train_per_class=16", "--test_per_class=8"]


def run_script(name, *args, timeout=1200):  # a hang guard only, not a time check
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", *args], cwd=REPO_ROOT, env=env,
        check=False, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _rows(folder):
    return io.read_csv(folder / "results.csv")


@pytest.mark.slow
def test_variants_imdb_quick(tmp_path, data_dir):
    out = tmp_path / "variants"
    args = ["--quick", f"--data_dir={data_dir}", f"--output_dir={out}", *TINY_IMDB,
            "--variants=keras;favor(num_features=8)", "--seeds=0;1"]
    run_script("variants_imdb", *args)
    rows = _rows(out)
    assert [(r["variant"], r["seed"]) for r in rows] == [  # seed-major
        ("keras", "0"), ("favor(num_features=8)", "0"), ("keras", "1"),
        ("favor(num_features=8)", "1")]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 and float(r["epoch_seconds"]) > 0 for r in rows)
    summary = io.read_csv(out / "summary.csv")
    assert [s["variant"] for s in summary] == ["keras", "favor(num_features=8)"]
    assert summary[1]["accuracy_p_welch"] != "" or float(summary[1]["accuracy_std"]) == 0
    for name in ("summary.md", "accuracy.png", "epoch_time.png", "peak_memory.png",
                 "config.json", "runs/v=1_seed=1/DONE", "runs/v=1_seed=1/metrics.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["settings"]["quick"] is True
    # Every row carries the settings that made it.
    assert {(r["epochs"], r["max_length"], r["backbone"], r["train_per_class"]) for r in rows} == {
        ("1", "32", "tiny", "16")}
    # ... and the conditions it ran under.
    for r in rows:
        assert float(r["wall_seconds"]) > 0 and r["cpu_model"] and r["cpu_isa"]
        assert r["load_1min_start"] != "" and r["load_1min_end"] != ""
    # A second run finds every row finished and recomputes nothing.
    stamp = (out / "runs/v=0_seed=0/row.json").stat().st_mtime_ns
    run_script("variants_imdb", *args)
    assert (out / "runs/v=0_seed=0/row.json").stat().st_mtime_ns == stamp
    # Another setting into the same folder is refused before anything is written or trained.
    config = (out / "config.json").read_bytes()
    changed = subprocess.run(
        [sys.executable, "-m", "experiments.variants_imdb", *args, "--epochs=2"], cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False, capture_output=True,
        text=True, timeout=1200)
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "epochs: 1 -> 2" in changed.stderr and "--overwrite" in changed.stderr
    assert (out / "runs/v=0_seed=0/row.json").stat().st_mtime_ns == stamp
    assert (out / "config.json").read_bytes() == config
    assert _rows(out) == rows


@pytest.mark.slow
def test_seq_scaling_quick(tmp_path):
    out = tmp_path / "seq"
    run_script("seq_scaling", "--quick", f"--output_dir={out}", "--lengths=16;64",
               "--variants=keras;lowrank(k=8)", "--batch_size=2", "--steps=2", "--accuracy", "--train_per_class=8", "--test_per_class=8",
               "--train_batch_size=8")
    rows = _rows(out)
    assert [(r["variant"], r["length"]) for r in rows] == [
        ("keras", "16"), ("lowrank(k=8)", "16"), ("keras", "64"), ("lowrank(k=8)", "64")]
    assert all(float(r["train_step_ms"]) > 0 for r in rows)
    assert [float(r["train_step_vs_baseline"]) for r in rows if r["variant"] == "keras"] == [1, 1]
    # Accuracy mode: each (variant, length) fine-tuned at that length, with an interval, the
    # paired difference to the baseline and the share of test reviews the length truncates.
    for r in rows:
        assert float(r["accuracy_ci_low"]) <= float(r["accuracy"]) <= float(r["accuracy_ci_high"])
        assert (r["accuracy_vs_baseline"] == "") == (r["variant"] == "keras")
    shares = {r["length"]: float(r["truncated_share"]) for r in rows}
    assert shares["16"] >= shares["64"] and shares["16"] == 1.0
    for name in ("step_time.png", "throughput.png", "peak_memory.png", "accuracy.png",
                 "summary.md"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_glue_lowrank_quick(tmp_path, data_dir):
    out = tmp_path / "glue"
    run_script("glue_lowrank", "--quick", f"--data_dir={data_dir}", f"--output_dir={out}",
               "--tasks=MRPC;STS-B", "--variants=keras;lowrank(k=none,qkv_rank=4)",
               "--train_examples=32", "--train_caps=MRPC=24", "--dev_examples=16",
               "--zero_shot=lowrank(k=none,qkv_rank=4)", "--batch_size=8", "--max_length=32",
               "--mlm_max_words=16", "--mlm_train_chunks=16", "--mlm_eval_chunks=8")
    all_rows = _rows(out)
    # Each task: the baseline, the variant, and the baseline with rank-4 factors swapped in
    # untrained (its row evaluated on the same dev set with the task's metric).
    zero = [r for r in all_rows if r["variant"].startswith("zero-shot")]
    assert [(r["task"], r["variant"]) for r in zero] == [
        ("MRPC", "zero-shot lowrank(k=none,qkv_rank=4)"),
        ("STS-B", "zero-shot lowrank(k=none,qkv_rank=4)")]
    assert all(r["glue_score"] != "" and r["zero_shot_of"] == "keras" for r in zero)
    rows = [r for r in all_rows if not r["variant"].startswith("zero-shot")]
    # Per-task caps: MRPC trained on 24 examples, STS-B on --train_examples.
    assert [int(r["train_examples"]) for r in rows] == [24, 24, 32, 32]
    # A text-pair classification task and the text-pair regression task, each with its metric.
    assert [(r["task"], r["glue_metric"]) for r in rows] == (
        [("MRPC", "f1")] * 2 + [("STS-B", "pearson")] * 2)
    assert all(-1.0 <= float(r["glue_score"]) <= 1.0 for r in all_rows)
    for row in rows[2:]:
        assert row["glue_spearman"] != "" and row["accuracy"] == ""
        metrics = io.read_json(out / "glue" / "runs" / row["run_id"] / "metrics.json")
        assert metrics["task"] == "regression"
        assert float(row["glue_score"]) == pytest.approx(metrics["evaluation"]["pearson"])
    ppl = io.read_csv(out / "perplexity.csv")
    assert [(r["stage"], r["variant"]) for r in ppl] == [
        ("adapt", "keras"), ("zero-shot", "lowrank(k=none,qkv_rank=4)"), ("continue", "keras"),
        ("continue", "lowrank(k=none,qkv_rank=4)")]
    assert all(1.0 < float(r["perplexity"]) < 1e6 for r in ppl)
    assert all(r["masking"] == "whole-word" for r in ppl)
    # Every row is scored on the same masked tokens; the adapted model is kept for the swaps.
    assert len({r["masked_tokens"] for r in ppl}) == 1
    assert ppl[1]["train_seconds"] == "" and float(ppl[2]["train_steps"]) == 2  # 16 chunks / 8
    assert (out / "wikitext" / "runs" / ppl[0]["run_id"] / "model.keras").is_file()
    summary = (out / "summary.md").read_text()
    assert "valid split and evaluated on the test split" in summary
    for name in ("glue_scores.png", "perplexity.png", "config.json"):
        assert (out / name).is_file(), name
    # One part alone: the GLUE rows are all finished (skipped), and the summary keeps the
    # WikiText rows the switched-off part left.
    run_script("glue_lowrank", "--quick", f"--data_dir={data_dir}", f"--output_dir={out}",
               "--tasks=MRPC;STS-B", "--variants=keras;lowrank(k=none,qkv_rank=4)",
               "--train_examples=32", "--train_caps=MRPC=24", "--dev_examples=16",
               "--zero_shot=lowrank(k=none,qkv_rank=4)", "--batch_size=8", "--max_length=32",
               "--noperplexity")
    assert _rows(out) == all_rows
    summary_again = (out / "summary.md").read_text()
    assert "## WikiText-2 masked-LM perplexity" in summary_again
    # The kept part's table is the same, numbers formatted alike.
    assert summary_again.split("## WikiText-2")[1] == summary.split("## WikiText-2")[1]
    # A fresh checkout has the finished rows but no models (they are not kept in git): a
    # zero-shot row still to run trains its baseline again beside it instead of failing.
    glue_runs = out / "glue" / "runs"
    baseline_run, zero_run = rows[0]["run_id"], zero[0]["run_id"]
    (glue_runs / baseline_run / "model.keras").unlink()
    shutil.rmtree(glue_runs / zero_run)
    run_script("glue_lowrank", "--quick", f"--data_dir={data_dir}", f"--output_dir={out}",
               "--tasks=MRPC;STS-B", "--variants=keras;lowrank(k=none,qkv_rank=4)",
               "--train_examples=32", "--train_caps=MRPC=24", "--dev_examples=16",
               "--zero_shot=lowrank(k=none,qkv_rank=4)", "--batch_size=8", "--max_length=32",
               "--noperplexity")
    again = {r["run_id"]: r for r in _rows(out)}
    assert again[zero_run]["baseline_retrained"] == "True"
    assert -1.0 <= float(again[zero_run]["baseline_retrained_glue_score"]) <= 1.0
    assert again[zero_run]["inference_peak_rss_mb"] == ""  # measured after training: dropped
    assert (glue_runs / zero_run / "baseline" / "model.keras").is_file()
    assert not (glue_runs / baseline_run / "model.keras").exists()
    assert "baseline_retrained_glue_score" in (out / "summary.md").read_text()
    for row in all_rows:
        if row["run_id"] != zero_run:
            assert again[row["run_id"]]["glue_score"] == row["glue_score"], row["run_id"]


def test_glue_lowrank_names_an_unknown_task(tmp_path, data_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.glue_lowrank", "--quick", f"--data_dir={data_dir}",
         f"--output_dir={tmp_path}", "--tasks=STS-C"],
        cwd=REPO_ROOT, env=env, check=False, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode != 0
    assert "Unknown GLUE task 'STS-C'" in proc.stderr


@pytest.mark.slow
def test_energy_study_quick(tmp_path, data_dir):
    out = tmp_path / "energy"
    run_script("energy_study", "--quick", f"--data_dir={data_dir}", f"--output_dir={out}",
               *TINY_IMDB, "--settings=baseline;label_smoothing;sgd")
    rows = _rows(out)
    assert [r["setting"] for r in rows] == ["baseline", "label_smoothing", "sgd"]
    assert rows[2]["optimizer"] == "sgd"
    assert all(float(r["validation_loss"]) > 0 and float(r["minutes"]) > 0 for r in rows)
    config = io.read_json(out / "runs/label_smoothing/config.json")["config"]
    assert config["label_smoothing"] == 0.1 and config["energy"] is True
    for name in ("tradeoff.png", "energy.png", "summary.md"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_ablations_quick(tmp_path, data_dir):
    out = tmp_path / "ablations"
    run_script("ablations", "--quick", f"--data_dir={data_dir}", f"--output_dir={out}",
               *TINY_IMDB, "--groups=freeze;heads;lowrank_init;hybrid", "--freeze=0;2",
               "--heads=2;4")
    rows = _rows(out)
    assert [(r["group"], r["value"]) for r in rows] == [
        ("freeze", "0"), ("freeze", "2"), ("heads", "2"), ("heads", "4"),
        ("lowrank_init", "random"), ("lowrank_init", "segment_mean"),
        ("hybrid", "exact,favor"), ("hybrid", "favor,exact")]
    inits = [r["attention"] for r in rows if r["group"] == "lowrank_init"]
    assert inits == [f"lowrank(k=16,max_length={r['max_length']})" for r in rows[4:5]] + [
        f"lowrank(k=16,max_length={rows[5]['max_length']},projection_initializer=segment_mean)"]
    frozen = {r["value"]: int(r["trainable_params"]) for r in rows if r["group"] == "freeze"}
    assert frozen["2"] < frozen["0"]
    for name in ("freeze.png", "heads.png", "hybrid.png", "summary.md"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_analysis_quick(tmp_path, data_dir):
    out, work = tmp_path / "analysis", tmp_path / "model"
    run_script("analysis", "--quick", f"--data_dir={data_dir}", f"--output_dir={out}",
               f"--work_dir={work}", *TINY_IMDB, "--glue_task=RTE",
               "--attention_max_length=16")
    for name in ("eda_imdb_train.png", "eda_imdb_test.png", "eda_glue_RTE.png", "eda.json",
                 "confusion_matrix.png", "per_class.csv", "failure_cases.csv",
                 "failure_stats.json", "error_by_length.png", "attention_tokens_0.png",
                 "attention_layers_0.png", "summary.md"):
        assert (out / name).is_file(), name
    stats = io.read_json(out / "failure_stats.json")
    assert stats["errors"]["count"] + stats["correct"]["count"] == 16
    # At length 32 nearly every review is truncated; the two groups cover all 16.
    by_cut = stats["error_rate_by_truncation"]
    assert by_cut["whole"]["count"] + by_cut["truncated"]["count"] == 16
    assert by_cut["truncated"]["count"] >= 14
    cases = io.read_csv(out / "failure_cases.csv")
    confidence = [float(c["confidence"]) for c in cases]
    assert confidence == sorted(confidence, reverse=True)
    assert all(0.5 <= c <= 1.0 for c in confidence)
    assert not any(p.suffix == ".keras" for p in out.rglob("*"))  # the model stays in work_dir
    assert (work / "model.keras").is_file()


def test_aggregate_builds_one_table_from_run_folders(tmp_path):
    def fake(folder, rows):
        sweep.run_sweep(rows, lambda row, d: {}, tmp_path / folder)

    fake("variants_imdb", [
        {"run_id": f"v{v}s{s}", "variant": name, "seed": s, "accuracy": acc + 0.01 * s,
         "epoch_seconds": 10.0, "peak_host_rss_mb": 900.0, "energy_kwh": None}
        for v, (name, acc) in enumerate((("keras", 0.8), ("favor", 0.7))) for s in (0, 1, 2)])
    fake("glue_lowrank/wikitext", [{"run_id": "m0", "variant": "keras", "perplexity": 123.4}])
    fake("variants_latency", [{"run_id": f"r{r}", "variant": "keras", "round": r,
                               "latency_ms_per_sample": 40.0 + 2 * r} for r in range(3)])
    run_script("aggregate", f"--results_dir={tmp_path}", "--publish")
    text = (tmp_path / "summary.md").read_text()
    assert "| variants_imdb | keras | test accuracy | 0.810 ± 0.010 |" in text
    assert "favor | test accuracy | 0.710 ± 0.010 (p=" in text
    assert "trained on valid, evaluated on test" in text and "123.4" in text
    assert ("| variants_latency | keras | inference latency (all kinds in one run) | "
            "42.00 ± 2.00 ms/review |") in text
    assert "Not run yet: `seq_scaling`" in text
    assert (tmp_path / "summary_accuracy_vs_time.png").is_file()


def test_aggregate_puts_research_tiers_first_and_labels_quick_mode(tmp_path):
    from experiments import aggregate

    def fake(folder, accuracy):
        sweep.run_sweep([{"run_id": f"s{s}", "variant": "keras", "seed": s,
                          "accuracy": accuracy, "epoch_seconds": 1.0} for s in (0, 1)],
                        lambda row, d: {}, tmp_path / folder)

    fake("quick/variants_imdb", 0.61)
    fake("cpu/variants_imdb", 0.87)
    rows, missing = aggregate.aggregate(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    cpu, quick = text.index("## CPU tier"), text.index("## Quick mode: smoke tests only")
    assert cpu < text.index("0.870") < quick < text.index("0.610")
    assert [r["tier"] for r in rows] == ["cpu", "quick"]
    assert "cpu/seq_scaling" in missing and "quick/seq_scaling" in missing


def test_aggregate_names_a_missing_folder(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.aggregate", f"--results_dir={tmp_path / 'none'}"],
        cwd=REPO_ROOT, env=env, check=False, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode != 0 and "results_dir" in proc.stderr


def test_failure_statistics_by_hand():
    texts = ["good film", "not good at all", "I didn't like it, never again", "fine"]
    stats = failure_statistics(texts, [1, 0, 0, 1], [1, 1, 1, 1])
    assert stats["errors"]["count"] == 2 and stats["correct"]["count"] == 2
    assert stats["errors"]["share_with_negation"] == 1.0
    assert stats["correct"]["share_with_negation"] == 0.0
    assert stats["errors"]["mean_words"] == pytest.approx((4 + 6) / 2)
    assert stats["errors"]["negations_per_100_words"] == pytest.approx(100 * 3 / 10)
    assert negation_count("Can't, won't, NOT, nothing") == 3
    with pytest.raises(ValueError, match="one label and one prediction"):
        failure_statistics(texts, [1, 0], [1, 1])


GLUE_PLAN = """
import json, pathlib, sys
import numpy as np
from experiments import glue_lowrank as g

settings = {"output_dir": "x", "quick": True, "backbone": "tiny", "variants": "keras;lowrank(k=8)",
            "tasks": "mrpc;STS-B", "epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
            "weight_decay": 0.01, "max_length": 32, "train_examples": 32, "dev_examples": 16,
            "glue": True, "perplexity": True, "mlm_max_words": 16, "mlm_train_chunks": 16,
            "mlm_eval_chunks": 8, "mlm_adapt_epochs": 2, "mlm_epochs": 1, "mlm_learning_rate": 1e-3,
            "precision": "float32", "jit_compile": False, "seed": 0}
variants, glue_rows, mlm_rows = g.plan(settings)


def make_arrays():
    n = 5
    ids = np.arange(n * 4).reshape(n, 4)
    return {"token_ids": ids, "padding_mask": ids > 0, "mask_positions": ids[:, :2],
            "mask_ids": ids[:, :2], "mask_weights": np.ones((n, 2))}


chunks = [f"chunk {i}" for i in range(5)]
folder = pathlib.Path(sys.argv[1])
key = g.eval_mask_key(settings, chunks)
other = g.eval_mask_key({**settings, "max_length": 64}, chunks)
edited = g.eval_mask_key(settings, chunks[:4] + ["edited"])
cache = g.eval_mask_cache(folder, key)
batches = g.shared_eval_batches(make_arrays, 2, cache, key)
again = g.shared_eval_batches(lambda: 1 / 0, 2, cache, key)  # read back, not made again
assert all((a[1] == b[1]).all() for a, b in zip(batches, again))
no_glue = g.plan({**settings, "glue": False})
assert no_glue[1] == [] and no_glue[2] == mlm_rows
try:
    g.shared_eval_batches(make_arrays, 2, cache, other)
    refused = ""
except ValueError as error:
    refused = str(error)
print(json.dumps({"glue": glue_rows, "mlm": mlm_rows, "batches": len(batches),
                  "paths": [str(g.eval_mask_cache(folder, k)) for k in (key, other, edited)],
                  "refused": refused}))
"""


ABLATION_PLAN = """
import json
from absl import flags
from experiments import ablations as a

settings = {name: flags.FLAGS[name].default for name in a.NAMES}
settings.update(a.CPU, output_dir="x")
rows, specs = a.plan(settings)
print(json.dumps(a.same_runs(settings, rows, specs)))
"""


@pytest.mark.slow
def test_variants_latency_quick(tmp_path, data_dir):
    out = tmp_path / "latency"
    args = ["--quick", f"--data_dir={data_dir}", f"--output_dir={out}", "--max_length=32",
            "--test_per_class=4", "--batch_size=4", "--variants=keras;favor(num_features=8)"]
    run_script("variants_latency", *args)
    rows = _rows(out)
    assert [(r["round"], r["variant"]) for r in rows] == [  # round-major: variants in turn
        ("0", "keras"), ("0", "favor(num_features=8)"), ("1", "keras"),
        ("1", "favor(num_features=8)")]
    assert all(float(r["latency_ms_per_sample"]) > 0 and r["num_examples"] == "8" for r in rows)
    latency = {(r["round"], r["variant"]): float(r["latency_ms_per_sample"]) for r in rows}
    summary = io.read_csv(out / "summary.csv")
    assert [s["variant"] for s in summary] == ["keras", "favor(num_features=8)"]
    assert float(summary[0]["vs_baseline_mean"]) == 1.0
    ratios = [latency[k, "favor(num_features=8)"] / latency[k, "keras"] for k in ("0", "1")]
    assert float(summary[1]["vs_baseline_mean"]) == pytest.approx(sum(ratios) / 2)
    assert float(summary[1]["latency_ms_per_sample_mean"]) == pytest.approx(
        (latency["0", "favor(num_features=8)"] + latency["1", "favor(num_features=8)"]) / 2)
    text = (out / "summary.md").read_text()
    assert "8 test reviews" in text and "All 4 runs on CPU" in text
    assert (out / "latency.png").is_file()
    # A second run finds every row finished; another length is refused.
    stamp = (out / "runs/round=1_v=1/row.json").stat().st_mtime_ns
    run_script("variants_latency", *args)
    assert (out / "runs/round=1_v=1/row.json").stat().st_mtime_ns == stamp
    changed = subprocess.run(
        [sys.executable, "-m", "experiments.variants_latency", *args, "--max_length=48"],
        cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False,
        capture_output=True, text=True, timeout=1200)
    assert changed.returncode == 2 and "max_length: 32 -> 48" in changed.stderr


def test_ablations_cpu_tier_trains_the_shared_base_once():
    # Freeze 0, 1 epoch, batch 16 and no layer-wise decay are one configuration at the CPU
    # tier: trained once, shared by the four groups (in a subprocess: the script's flags).
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", ABLATION_PLAN], cwd=REPO_ROOT, env=env,
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = "group=freeze_value=0"
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "group=epochs_value=1": base, "group=batch_value=16": base,
        "group=layer_decay_value=1.0": base}


@pytest.mark.slow
def test_glue_lowrank_rows_and_mask_cache_carry_their_settings(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", GLUE_PLAN, str(tmp_path)], cwd=REPO_ROOT,
                          env=env, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    glue, mlm = out["glue"], out["mlm"]
    assert [(r["task"], r["variant"]) for r in glue] == [
        ("MRPC", "keras"), ("MRPC", "lowrank(k=8)"), ("STS-B", "keras"), ("STS-B", "lowrank(k=8)")]
    for key in ("epochs", "learning_rate", "max_length", "backbone", "precision",
                "train_examples", "dev_examples", "seed"):
        assert key in glue[0], key
    assert "mlm_epochs" not in glue[0] and "epochs" not in mlm[0]
    for key in ("mlm_adapt_epochs", "mlm_epochs", "mlm_learning_rate", "mlm_train_chunks",
                "max_length", "backbone"):
        assert key in mlm[0], key
    # The standard model is adapted first; the swap of each efficient variant is scored
    # untrained, then every variant (the standard one too) continues with the same budget.
    assert [(r["stage"], r["variant"]) for r in mlm] == [
        ("adapt", "keras"), ("zero-shot", "lowrank(k=8)"), ("continue", "keras"),
        ("continue", "lowrank(k=8)")]
    # The evaluation masks are cached per key: other settings or text get another file, and a
    # cache read under another key is refused instead of reused.
    assert out["batches"] == 3 and len(set(out["paths"])) == 3
    assert "made with other settings" in out["refused"]


@pytest.mark.slow
def test_zero_shot_swap_writes_results_and_resumes(tmp_path, data_dir):
    def run(*variants):
        args = [f"--data_dir={data_dir}", f"--output_dir={tmp_path}", "--num_reviews=2",
                "--max_length=16", "--batch_size=2", "--seeds=0"]
        run_script("zero_shot_swap", *args, *[f"--variant={v}" for v in variants])
        return _rows(tmp_path)

    first = run("exact", "exact*4,favor(num_features=16)*2")
    assert [r["variant"] for r in first] == ["exact", "exact*4,favor(num_features=16)*2"]
    assert float(first[0]["cls_cosine_min"]) == pytest.approx(1.0, abs=1e-6)
    assert float(first[1]["mean_cosine_mean"]) < 1.0
    second = run("exact", "exact*4,favor(num_features=16)*2", "lowrank(k=8)")
    assert second[:2] == first  # finished rows are kept, not recomputed
    assert len(second) == 3
    for name in ("config.json", "results.json", "results.md"):
        assert (tmp_path / name).is_file()
    assert "`lowrank(k=8)`" in (tmp_path / "results.md").read_text()
