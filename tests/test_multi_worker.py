"""`strategy="multi_worker"`: two worker processes on this machine (``TF_CONFIG`` on 127.0.0.1
ports) train the tiny classifier with `tf.distribute.MultiWorkerMirroredStrategy` through the
engine, and end with the weights of a single-process run of the same global batch. Only the
chief writes the run folder. Plus `get_strategy("multi_worker")`'s errors for a bad TF_CONFIG.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_effattn.training import distribute
from keras_effattn.utils import io
from keras_effattn.utils.saving import load_for_inference

TESTS = pathlib.Path(__file__).resolve().parent
WORKER = TESTS / "multiworker_worker.py"
TIMEOUT_S = 480


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start(tmp_path, name, strategy, output_dir, tf_config=None):
    temp = tmp_path / f"tmp-{name}"  # each process's own temp dir (where a non-chief writes)
    temp.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp)}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed in _wait_all)
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), strategy, str(output_dir), str(tmp_path / f"{name}.json")],
        cwd=TESTS.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    return name, proc, log, temp


def _wait_all(tmp_path, started):
    """Waits for every process; all are killed at the first failure (a worker left alone would
    wait for its peer's collective ops) or at the timeout."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(proc.poll() is None for _, proc, _, _ in started):
            failed = [(name, proc) for name, proc, _, _ in started if proc.poll()]
            assert time.monotonic() < deadline, f"timed out after {TIMEOUT_S} s"
            if failed:
                break
            time.sleep(0.5)
        for name, proc, _, _ in sorted(started, key=lambda s: s[1].poll() is None):
            log = (tmp_path / f"{name}.log").read_text()[-4000:]
            assert proc.poll() == 0, f"{name} exited {proc.returncode}:\n{log}"
    finally:
        for _, proc, log, _ in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name, *_ in started}


@pytest.mark.slow
def test_two_workers_equal_one_process_with_the_same_global_batch(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    shared = tmp_path / "run"  # the same command on every worker: the same output_dir
    started = [
        _start(tmp_path, f"worker{i}", "multi_worker", shared,
               {"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ]
    started.append(_start(tmp_path, "single", "default", tmp_path / "single"))
    out = _wait_all(tmp_path, started)

    assert [out[f"worker{i}"]["replicas"] for i in range(2)] == [2, 2]
    assert out["single"]["replicas"] == 1
    # The chief (worker 0) wrote the run folder; worker 1 wrote its own copy in its temp dir
    # while training and deleted it at the end.
    assert out["worker0"]["worker_folders_during_training"] == []
    assert len(out["worker1"]["worker_folders_during_training"]) == 1
    assert out["worker1"]["worker_folders_during_training"][0].endswith("_worker1")
    for name, *_, temp in started:
        assert not any(temp.glob("keras_effattn_worker_*")), name
    assert (shared / "DONE").is_file()
    metrics = io.read_json(shared / "metrics.json")
    assert metrics["training"]["replicas"] == 2

    # Same global batch (8: 4 per worker), same data order: the same training.
    single = io.read_json(tmp_path / "single" / "metrics.json")
    for name in ("worker0", "worker1"):
        assert out[name]["evaluation"]["predictions"] == out["single"]["evaluation"]["predictions"]
        assert out[name]["evaluation"]["loss"] == pytest.approx(
            out["single"]["evaluation"]["loss"], rel=1e-5)
    assert metrics["training"]["final_train_loss"] == pytest.approx(
        single["training"]["final_train_loss"], rel=1e-5)
    rows, single_rows = io.read_csv(shared / "epochs.csv"), io.read_csv(
        tmp_path / "single" / "epochs.csv")
    assert len(rows) == len(single_rows) == 2
    for row, single_row in zip(rows, single_rows):
        for key in ("loss", "accuracy", "learning_rate"):
            assert float(row[key]) == pytest.approx(float(single_row[key]), rel=1e-5), key
    model = load_for_inference(shared / "model.keras")
    reference = load_for_inference(tmp_path / "single" / "model.keras")
    for weight, expected in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(np.asarray(weight), np.asarray(expected), atol=1e-5,
                                   rtol=1e-5, err_msg=weight.path)


GOOD = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("text, match", [
    (None, "needs the TF_CONFIG environment variable"),
    ("", "needs the TF_CONFIG environment variable"),
    ("{cluster: 1}", "TF_CONFIG is not valid JSON"),
    (json.dumps({"task": GOOD["task"]}), "has no 'cluster'"),
    (json.dumps({"cluster": {"worker": []}, "task": GOOD["task"]}), "has no 'cluster'"),
    (json.dumps({"cluster": GOOD["cluster"]}), "has no 'task'"),
    (json.dumps({**GOOD, "task": {"type": "worker", "index": 2}}), "is not in its cluster"),
    (json.dumps({**GOOD, "task": {"type": "chief", "index": 0}}), "is not in its cluster"),
], ids=["unset", "empty", "not-json", "no-cluster", "empty-cluster", "no-task", "bad-index",
        "bad-type"])
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, text, match):
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(ValueError, match=match):
        distribute.get_strategy("multi_worker")


def test_check_tf_config_accepts_a_valid_one():
    assert distribute.check_tf_config(json.dumps(GOOD)) == GOOD


def test_without_multi_worker_every_process_is_chief():
    strategy = distribute.get_strategy("default")
    assert not distribute.is_multi_worker(strategy)
    assert distribute.is_chief(strategy)
