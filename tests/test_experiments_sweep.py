"""Tests for the sweep runner (resume, skip, stale settings) and the statistics helpers."""

import math
import pathlib

import numpy as np
import pytest

from experiments import stats, suite, sweep
from keras_effattn.utils import io


def _rows(values):
    return [{"run_id": sweep.run_id_of(x=x), "x": x} for x in values]


def test_runs_every_row_and_writes_the_table(tmp_path):
    results = sweep.run_sweep(_rows([1, 2, 3]), lambda row, d: {"y": row["x"] * 10}, tmp_path)
    assert [r["y"] for r in results] == [10, 20, 30]
    table = io.read_csv(tmp_path / "results.csv")
    assert [row["y"] for row in table] == ["10", "20", "30"]
    assert list(table[0])[:3] == ["run_id", "x", "y"]
    assert io.read_json(tmp_path / "results.json")["rows"][1]["run_dir"] == "runs/x=2"


def test_resume_skips_finished_rows(tmp_path):
    calls = []

    def crash_on_three(row, run_dir):
        calls.append(row["x"])
        if row["x"] == 3:
            raise RuntimeError("killed")
        (run_dir / "artefact.txt").write_text("ok")
        return {"y": row["x"]}

    with pytest.raises(RuntimeError):
        sweep.run_sweep(_rows([1, 2, 3]), crash_on_three, tmp_path)
    assert len(io.read_csv(tmp_path / "results.csv")) == 2  # finished rows are on disk
    calls.clear()
    seen = []
    results = sweep.run_sweep(
        _rows([1, 2, 3]), lambda row, d: {"y": -row["x"]}, tmp_path,
        on_row_done=lambda result, skipped: seen.append(skipped),
    )
    assert [r["y"] for r in results] == [1, 2, -3]  # rows 1 and 2 read back, not recomputed
    assert seen == [True, True, False]
    assert [r["x"] for r in sweep.load_finished(tmp_path)] == [1, 2, 3]


def test_a_row_with_the_same_run_takes_its_results_without_training(tmp_path):
    calls = []

    def run(row, run_dir):
        calls.append(row["run_id"])
        return {"y": row["x"] * 10}

    rows = [{"run_id": "a", "x": 1, "group": "g1"}, {"run_id": "b", "x": 2, "group": "g1"},
            {"run_id": "c", "x": 1, "group": "g2"}]
    results = sweep.run_sweep(rows, run, tmp_path, same_run_as={"c": "a"})
    assert calls == ["a", "b"]
    assert results[2]["y"] == 10 and results[2]["group"] == "g2"
    assert results[2]["same_run_as"] == "a" and results[2]["run_dir"] == "runs/a"
    # Read back on resume, like any finished row.
    again = sweep.run_sweep(rows, run, tmp_path, same_run_as={"c": "a"})
    assert calls == ["a", "b"] and again[2] == results[2]
    with pytest.raises(ValueError, match="not an earlier row"):
        sweep.run_sweep(rows, run, tmp_path / "x", same_run_as={"a": "c"})


def test_changed_settings_of_a_finished_row_are_refused(tmp_path):
    sweep.run_sweep([{"run_id": "a", "lr": 0.1}], lambda row, d: {"y": 1}, tmp_path)
    with pytest.raises(ValueError, match=r"'a' made with other settings \(lr: 0.1 -> 0.2\)"):
        sweep.run_sweep([{"run_id": "a", "lr": 0.2}], lambda row, d: {"y": 1}, tmp_path)


def _row(run_id, variant, **settings):
    base = {"epochs": 1, "learning_rate": 1e-3, "max_length": 32, "backbone": "tiny",
            "precision": "float32", "train_per_class": 16}
    return {"run_id": run_id, "variant": variant, **base, **settings}


def test_a_changed_setting_is_refused_before_any_row_runs(tmp_path):
    calls = []

    def run_fn(row, run_dir):
        calls.append(row["run_id"])
        return {"accuracy": 0.5 + row["epochs"]}

    sweep.run_sweep([_row("v0", "keras"), _row("v1", "favor")], run_fn, tmp_path)
    table = (tmp_path / "results.csv").read_bytes()
    assert io.read_csv(tmp_path / "results.csv")[0]["epochs"] == "1"  # rows carry settings
    calls.clear()
    # A new row first, then the finished ones with more epochs and another length.
    rows = [_row("v2", "lowrank"), *(_row(r, v, epochs=2, max_length=64)
                                     for r, v in (("v0", "keras"), ("v1", "favor")))]
    rows[0].update(epochs=2, max_length=64)
    with pytest.raises(ValueError) as error:
        sweep.run_sweep(rows, run_fn, tmp_path)
    message = str(error.value)
    assert "epochs: 1 -> 2" in message and "max_length: 32 -> 64" in message
    assert "--overwrite" in message and "--output_dir" in message and "1 more run" in message
    assert calls == []  # nothing ran, not even the new row
    assert (tmp_path / "results.csv").read_bytes() == table
    assert [r["accuracy"] for r in sweep.load_finished(tmp_path)] == [1.5, 1.5]


def test_a_started_row_with_other_settings_is_refused(tmp_path):
    def crash(row, run_dir):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        sweep.run_sweep([_row("v0", "keras")], crash, tmp_path)
    with pytest.raises(ValueError, match="learning_rate: 0.001 -> 0.002"):
        sweep.check_settings([_row("v0", "keras", learning_rate=2e-3)], tmp_path)
    sweep.check_settings([_row("v0", "keras")], tmp_path)  # the same settings resume


def test_row_settings_carry_everything_but_the_enumerating_lists():
    settings = {"quick": True, "output_dir": "runs/x", "variants": "keras;exact", "seeds": "0;1",
                "epochs": 3, "learning_rate": 1e-3, "precision": "float32"}
    assert suite.row_settings(settings, ("variants", "seeds")) == {
        "epochs": 3, "learning_rate": 1e-3, "precision": "float32"}


@pytest.mark.parametrize(
    "rows, message",
    [
        ([], "no rows"),
        ([{"x": 1}], "run_id"),
        ([{"run_id": "a"}, {"run_id": "a"}], "twice"),
        ([{"run_id": "../escape"}], "folder"),
    ],
    ids=["empty", "no-run-id", "duplicate", "unsafe-name"],
)
def test_bad_rows(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        sweep.run_sweep(rows, lambda row, d: {}, tmp_path)


def test_run_fn_must_return_a_dict(tmp_path):
    with pytest.raises(ValueError, match="dict"):
        sweep.run_sweep(_rows([1]), lambda row, d: 3.0, tmp_path)


def test_run_id_of_is_folder_safe():
    assert sweep.run_id_of(variant="favor(num_features=8)", seed=1) == (
        "variant=favor-num_features=8-_seed=1"
    )


def test_mean_std_matches_numpy():
    values = [0.8, 0.9, "", None, 0.7]
    out = stats.mean_std(values)
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(0.8)
    assert out["std"] == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert math.isnan(stats.mean_std([1.0])["std"])


def test_welch_matches_scipy_and_handles_small_groups():
    from scipy import stats as scipy_stats

    a, b = [0.81, 0.83, 0.80, 0.82], [0.78, 0.79, 0.80]
    expected = scipy_stats.ttest_ind(a, b, equal_var=False)
    out = stats.welch_ttest(a, b)
    assert out["t"] == pytest.approx(expected.statistic)
    assert out["p"] == pytest.approx(expected.pvalue)
    assert math.isnan(stats.welch_ttest([0.8], [0.7, 0.6])["p"])
    assert math.isnan(stats.welch_ttest([0.8, 0.8], [0.8, 0.8])["p"])


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.9).astype(float)
    b = (rng.random(400) < 0.6).astype(float)
    out = stats.paired_bootstrap(a, b, num_resamples=2000)
    assert out["p"] < 0.01 and out["ci_low"] > 0
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    same = stats.paired_bootstrap(a, a.copy(), num_resamples=2000)
    assert same["diff"] == 0.0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        stats.paired_bootstrap([1, 0], [1])


def test_compare_groups_against_a_baseline():
    rows = [
        {"variant": "exact", "accuracy": 0.80}, {"variant": "exact", "accuracy": 0.82},
        {"variant": "favor", "accuracy": 0.70}, {"variant": "favor", "accuracy": 0.72},
    ]
    summary = stats.compare_groups(rows, "variant", ["accuracy"], baseline="exact")
    assert [s["variant"] for s in summary] == ["exact", "favor"]
    assert summary[1]["accuracy_diff"] == pytest.approx(-0.10)
    assert summary[1]["accuracy_p_welch"] < 0.05
    assert math.isnan(summary[0]["accuracy_p_welch"])
    with pytest.raises(ValueError, match="Baseline"):
        stats.compare_groups(rows, "variant", ["accuracy"], baseline="lowrank")


def test_format_mean_std():
    assert stats.format_mean_std(0.8123, 0.0042) == "0.812 ± 0.004"
    assert stats.format_mean_std(0.8, float("nan")) == "0.800"
    assert stats.format_mean_std("", "") == "n/a"


def test_prepare_sweep_refuses_a_changed_setting_before_rewriting_config(tmp_path):
    out = tmp_path / "sweep"
    settings = {"output_dir": str(out), "quick": True, "epochs": 1}
    rows = [{"run_id": "a", "epochs": 1}]
    suite.prepare_sweep(settings, "demo", "q?", [(rows, ""), ([], "part-switched-off")])
    sweep.run_sweep(rows, lambda row, d: {"y": 1}, out)
    config = (out / "config.json").read_bytes()
    with pytest.raises(ValueError, match="epochs: 1 -> 2"):
        suite.prepare_sweep({**settings, "epochs": 2}, "demo", "q?",
                            [([{"run_id": "a", "epochs": 2}], "")])
    assert (out / "config.json").read_bytes() == config
    assert io.read_json(out / "config.json")["settings"]["epochs"] == 1


def test_run_devices_say_when_a_resumed_sweep_mixes_machines(tmp_path):
    zen4 = {"kind": "CPU", "cpu_model": "AMD EPYC (family 25, model 17)",
            "cpu_isa": "AVX2, AVX-512", "gpus": []}
    xeon = {"kind": "CPU", "cpu_model": "Intel Xeon", "cpu_isa": "AVX2, AVX-512, AMX",
            "gpus": []}
    for name, device in (("a", zen4), ("b", zen4), ("c", xeon)):
        io.write_json(tmp_path / "runs" / name / "config.json", {"metadata": {"device": device}})
    rows = [{"run_dir": f"runs/{name}"} for name in "abc"]
    one = suite.run_devices(tmp_path, rows[:2])
    assert one == {"CPU: AMD EPYC (family 25, model 17) (AVX2, AVX-512)": 2}
    assert suite.devices_note(one).startswith("All 2 runs on CPU: AMD EPYC")
    mixed = suite.run_devices(tmp_path, rows + [{"run_dir": "runs/missing"}])
    assert list(mixed.values()) == [2, 1, 1] and "unknown device" in mixed
    note = suite.devices_note(mixed)
    assert note.startswith("**Rows from 3 machines**") and "1 on CPU: Intel Xeon" in note


def test_a_child_runs_its_share_of_new_rows_then_exits_3(tmp_path, monkeypatch):
    monkeypatch.setenv(sweep.ROWS_PER_PROCESS_ENV, "1")
    monkeypatch.setattr(sweep, "_new_rows_run", 0)
    ran = []

    def run_fn(row, run_dir):
        ran.append(row["x"])
        return {"y": row["x"]}

    with pytest.raises(SystemExit) as stopped:
        sweep.run_sweep(_rows([1, 2, 3]), run_fn, tmp_path)
    assert stopped.value.code == sweep.ROWS_REMAIN_EXIT and ran == [1]
    monkeypatch.setattr(sweep, "_new_rows_run", 0)  # the next child
    with pytest.raises(SystemExit):
        sweep.run_sweep(_rows([1, 2, 3]), run_fn, tmp_path)
    monkeypatch.setattr(sweep, "_new_rows_run", 0)
    results = sweep.run_sweep(_rows([1, 2, 3]), run_fn, tmp_path)  # runs the last one, no exit
    assert ran == [1, 2, 3] and [r["y"] for r in results] == [1, 2, 3]
    assert [r["rows_before_in_process"] for r in results] == [0, 0, 0]
    assert suite.fresh_processes(results)


def test_rows_record_how_many_rows_their_process_ran_before(tmp_path, monkeypatch):
    monkeypatch.delenv(sweep.ROWS_PER_PROCESS_ENV, raising=False)
    monkeypatch.setattr(sweep, "_new_rows_run", 0)
    results = sweep.run_sweep(_rows([1, 2, 3]), lambda row, run_dir: {}, tmp_path)
    assert [r["rows_before_in_process"] for r in results] == [0, 1, 2]
    assert not suite.fresh_processes(results)
    assert suite.SHARED_PROCESS_NOTE in suite.conditions_note(tmp_path, results)
    assert suite.SHARED_PROCESS_NOTE not in suite.conditions_note(tmp_path, results[:1])


def _fresh_sweep(out, *args):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != sweep.ROWS_PER_PROCESS_ENV}
    return subprocess.run(
        [sys.executable, "-m", "tests.fresh_process_sweep", f"--output_dir={out}",
         "--fresh_process_per_row", *args], cwd=pathlib.Path(__file__).resolve().parents[1],
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=600,
        check=False)


@pytest.mark.slow
def test_fresh_process_per_row_runs_each_row_in_its_own_process(tmp_path):
    proc = _fresh_sweep(tmp_path / "ok")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = io.read_csv(tmp_path / "ok" / "results.csv")
    pids = [int(r["pid"]) for r in rows]
    assert len(set(pids)) == 3 and suite.fresh_processes(rows)
    # The child of the last row found no row left and wrote the summary.
    summary = (tmp_path / "ok" / "summary.txt").read_text()
    assert summary == f"3 rows, summarised by {pids[-1]}"
    # A failing row stops the loop with that child's status; the rows before it are kept.
    failed = _fresh_sweep(tmp_path / "bad", "--fail_on=r1")
    assert failed.returncode == 1 and "row r1 failed" in failed.stderr
    assert [r["run_id"] for r in io.read_csv(tmp_path / "bad" / "results.csv")] == ["r0"]
