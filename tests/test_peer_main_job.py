"""experiments/peers.py (behind experiments.peer_main_job and experiments.torch_peer): the main
job against the transformers + PyTorch loop a user would write instead."""

import json
import subprocess
import sys

import pytest

from experiments import peers
from tests.conftest import REPO_ROOT


def _write(path, payload):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(payload))


def test_rows_from_both_layouts_and_speedups(tmp_path):
    _write(tmp_path / "ours", {
        "precision": "mixed_bfloat16",
        "training": {"train_seconds": 200.0, "train_samples_per_s": 20.0},
        "evaluation": {"accuracy": 0.875, "macro_f1": 0.874, "inference": {"seconds": 50.0}},
    })
    _write(tmp_path / "peer", {
        "precision": "float32", "train_seconds": 300.0, "train_samples_per_s": 13.3,
        "eval_seconds": 60.0, "accuracy": 0.87, "macro_f1": 0.869,
    })
    rows = peers.with_speedups([
        peers.read_side("keras_effattn auto", tmp_path / "ours"),
        peers.read_side("transformers + PyTorch float32", tmp_path / "peer"),
    ])
    ours, peer = rows
    assert ours["eval_seconds"] == 50.0 and ours["precision"] == "mixed_bfloat16"
    assert ours["speedup_vs_transformers + PyTorch float32"] == pytest.approx(1.5)
    assert not any(key.startswith("speedup_vs_") for key in peer)
    text = peers.markdown(rows, {"cpu": "Test CPU", "cpu_isa": "AVX2"})
    assert "Test CPU; AVX2" in text
    assert "| keras_effattn auto | mixed_bfloat16 | 200 | 20.00 | 50 | 0.8750 |" in text
    assert "keras_effattn auto vs transformers + PyTorch float32: 1.50x" in text


def test_side_commands_share_the_data_flags(tmp_path):
    settings = {"precisions": ["float32", "auto"], "torch_precisions": ["bfloat16"],
                "train_per_class": 8, "eval_per_class": 4, "seed": 3, "data_dir": "d"}
    sides = peers.side_commands(settings, tmp_path)
    assert [name for name, _, _ in sides] == [
        "keras_effattn float32", "keras_effattn auto", "transformers + PyTorch bfloat16"]
    for _, out, argv in sides:
        assert out.parent == tmp_path
        for flag in ("--train_per_class=8", "--eval_per_class=4", "--seed=3", "--data_dir=d"):
            assert flag in argv
    assert "--precision=auto" in sides[1][2] and "experiments.train" in sides[1][2]
    assert "experiments.torch_peer" in sides[2][2]


@pytest.mark.parametrize("flag, message", [
    ("--precisions=bf16", "--precisions ['bf16']: choose from"),
    ("--torch_precisions=float16", "--torch_precisions ['float16']: choose from"),
])
def test_bad_precisions_exit_2_with_the_fix(tmp_path, flag, message):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.peer_main_job", flag,
         f"--output_dir={tmp_path / 'out'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_torch_peer_optimizer_groups_and_schedule():
    torch = pytest.importorskip("torch")
    from experiments.peers import optimizer_and_schedule

    model = torch.nn.Module()
    model.dense = torch.nn.Linear(2, 2)
    model.LayerNorm = torch.nn.LayerNorm(2)
    model.frozen = torch.nn.Linear(2, 2)
    model.frozen.weight.requires_grad_(False)
    optimizer, schedule = optimizer_and_schedule(model, total_steps=20, learning_rate=1.0,
                                                 torch=torch)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [torch.Size([2, 2])]  # dense.weight only
    assert len(plain["params"]) == 4  # dense.bias, LayerNorm weight+bias, frozen.bias
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.5)  # 2 warmup steps: 1/2, then the peak
    assert rates[1] == pytest.approx(1.0) and max(rates) == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(1 / 18) and rates == sorted(rates[:2]) + sorted(
        rates[2:], reverse=True)


@pytest.mark.slow
def test_torch_peer_trains_on_real_reviews(tmp_path, data_dir):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "peer"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.torch_peer", f"--output_dir={out}",
         f"--data_dir={data_dir}", "--train_per_class=8", "--eval_per_class=4",
         "--max_length=32", "--max_train_steps=1", "--precision=bfloat16"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 1 and metrics["precision"] == "bfloat16"
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["train_seconds"] > 0
    assert metrics["settings"]["max_length"] == 32 and metrics["cpu_isa"]
