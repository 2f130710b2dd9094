"""Output folders a user can lose: ``--overwrite`` deletes only folders keras_effattn made (or empty
ones), and the experiment scripts write to the git-ignored ``runs/`` unless told to publish.

The engine level calls `prepare_output_dir` / `train_and_evaluate`; the sweep level calls
`experiments.suite`'s folder functions; the script level runs the real entry points in a
subprocess, as a user does.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags

from experiments import aggregate, common, suite
from keras_effattn.training.fit import TrainConfig, prepare_output_dir, train_and_evaluate
from keras_effattn.utils import io
from tests.conftest import REPO_ROOT


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work", encoding="utf-8")
    return path


def _kept(path):
    return (path / "thesis.tex").read_text(encoding="utf-8") == "years of work"


def _tiny_run(folder, overwrite=False, learning_rate=1e-2):
    def build():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=learning_rate, energy=False,
                         jit_compile=False, tensorboard=False, save_model=False)
    return train_and_evaluate(config, build, (x, y), (x, y), folder, overwrite=overwrite,
                              verbose=0)


# --- engine level -------------------------------------------------------------------------------

def test_engine_overwrite_refuses_a_user_folder_and_keeps_its_files(tmp_path):
    folder = _user_folder(tmp_path / "mine")
    with pytest.raises(ValueError, match="Refusing to overwrite .*mine"):
        _tiny_run(folder, overwrite=True)
    assert _kept(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]  # nothing written


def test_engine_overwrite_of_the_working_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(_user_folder(tmp_path / "tree"))
    with pytest.raises(ValueError, match="not a folder keras_effattn created"):
        prepare_output_dir(".", "abc", overwrite=True)
    assert _kept(tmp_path / "tree")


def test_engine_overwrite_refuses_a_hand_made_config_json(tmp_path):
    folder = _user_folder(tmp_path / "fake")
    io.write_json(folder / "config.json", {"fingerprint": "abc"})
    io.write_json(folder / "status.json", {"status": "finished", "fingerprint": "abc"})
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        prepare_output_dir(folder, "def", overwrite=True)
    assert _kept(folder) and (folder / "config.json").is_file()


def test_engine_overwrite_replaces_a_previous_run_folder(tmp_path):
    folder = tmp_path / "run"
    first = _tiny_run(folder)
    (folder / "stale.txt").write_text("from the first run", encoding="utf-8")
    second = _tiny_run(folder, overwrite=True, learning_rate=5e-3)
    assert second["config_fingerprint"] != first["config_fingerprint"]
    assert not (folder / "stale.txt").exists()
    assert io.read_json(folder / "config.json")["config"]["learning_rate"] == 5e-3
    assert io.folder_owner(folder)["kind"] == "run"


def test_engine_claims_an_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert prepare_output_dir(folder, "abc", overwrite=True) == "new"
    assert io.folder_owner(folder) == io.claim_folder(tmp_path / "other", "run", "abc")


def test_remove_owned_folder_checks_kind_marker_and_links(tmp_path):
    sweep_dir = tmp_path / "sweep"
    io.claim_folder(sweep_dir, "sweep", "variants_imdb")
    (sweep_dir / "results.csv").write_text("run_id\n", encoding="utf-8")
    with pytest.raises(ValueError, match="sweep folder, not a run folder"):
        io.remove_owned_folder(sweep_dir, kinds=("run",))
    forged = _user_folder(tmp_path / "forged")
    io.write_json(forged / io.OWNER_FILE, {"owner": "keras_effattn", "kind": "run",
                                          "name": "x", "fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="Refusing"):
        io.remove_owned_folder(forged)
    assert _kept(forged)
    run_dir = tmp_path / "run"
    io.claim_folder(run_dir, "run", "abc")
    io.write_json(run_dir / "metrics.json", {"accuracy": 0.5})
    link = tmp_path / "link"
    link.symlink_to(run_dir, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        io.remove_owned_folder(link)
    io.remove_owned_folder(run_dir, kinds=("run",))
    assert not run_dir.exists()


# --- sweep level --------------------------------------------------------------------------------

def test_sweep_overwrite_refuses_a_user_folder_and_keeps_its_files(tmp_path):
    folder = _user_folder(tmp_path / "mine")
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        suite.claim_sweep_dir(folder, "variants_imdb", overwrite=True)
    with pytest.raises(ValueError, match="not made by an experiment script"):
        suite.claim_sweep_dir(folder, "variants_imdb")  # resuming into it is refused too
    assert _kept(folder) and not (folder / io.OWNER_FILE).exists()


def test_sweep_overwrite_replaces_its_own_folder_only(tmp_path):
    folder = tmp_path / "sweep"
    suite.claim_sweep_dir(folder, "variants_imdb")
    (folder / "results.csv").write_text("old", encoding="utf-8")
    suite.claim_sweep_dir(folder, "variants_imdb")  # resumed: kept
    assert (folder / "results.csv").is_file()
    with pytest.raises(ValueError, match="not to experiments.ablations"):
        suite.claim_sweep_dir(folder, "ablations", overwrite=False)
    suite.claim_sweep_dir(folder, "variants_imdb", overwrite=True)
    assert io.folder_contents(folder) == [] and io.folder_owner(folder)["name"] == "variants_imdb"
    empty = tmp_path / "empty"
    empty.mkdir()
    suite.claim_sweep_dir(empty, "seq_scaling", overwrite=True)
    assert io.folder_owner(empty)["kind"] == "sweep"


# --- where the scripts write --------------------------------------------------------------------

def _flag_values(*argv):
    values = flags.FlagValues()
    flags.DEFINE_bool("quick", False, "", flag_values=values)
    flags.DEFINE_enum("tier", "full", suite.TIERS, "", flag_values=values)
    flags.DEFINE_bool("publish", False, "", flag_values=values)
    flags.DEFINE_string("output_dir", None, "", flag_values=values)
    flags.DEFINE_integer("epochs", 3, "", flag_values=values)
    values(["prog", *argv])
    return values


def test_scripts_default_to_runs_not_results(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    results = (REPO_ROOT / "results").resolve()
    presets = {"quick": {"epochs": 1}, "cpu": {"epochs": 2}}
    for argv, expected in ((["--quick"], common.RUNS_DIR / "quick" / "energy"),
                           (["--tier=quick"], common.RUNS_DIR / "quick" / "energy"),
                           (["--tier=cpu"], common.RUNS_DIR / "cpu" / "energy"),
                           ([], common.RUNS_DIR / "full" / "energy")):
        settings = suite.settings_from_flags(_flag_values(*argv), ["epochs"], presets, "energy")
        out = os.path.realpath(settings["output_dir"])
        assert out == os.path.realpath(expected)
        assert not out.startswith(str(results))
    published = suite.settings_from_flags(_flag_values("--quick", "--publish"), ["epochs"],
                                          presets, "energy")
    assert os.path.realpath(published["output_dir"]) == str(results / "quick" / "energy")
    with pytest.raises(ValueError, match="pass one of them"):
        suite.settings_from_flags(_flag_values("--publish", "--output_dir=x"), [], presets,
                                  "energy")
    assert not str(aggregate.output_path()).startswith(str(results))
    assert aggregate.output_path(results, publish=True) == results / "summary.md"


def test_sweep_config_names_no_machine_path(tmp_path):
    folder = common.RUNS_DIR / "quick" / "energy"
    suite.write_sweep_config(tmp_path, "q?", {"output_dir": str(folder)})
    assert io.read_json(tmp_path / "config.json")["settings"]["output_dir"] == (
        os.path.join("runs", "quick", "energy"))


# --- script level -------------------------------------------------------------------------------

def _script(module, *argv, cwd=REPO_ROOT):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=env, check=False,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sweep_script_overwrite_of_the_working_directory_is_refused(tmp_path):
    tree = _user_folder(tmp_path / "tree")
    done = _script("experiments.variants_imdb", "--quick", "--output_dir=.", "--overwrite",
                   f"--data_dir={tmp_path}", cwd=tree)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Refusing to overwrite" in done.stderr and str(tree) in done.stderr
    assert sorted(p.name for p in tree.iterdir()) == ["thesis.tex"] and _kept(tree)


@pytest.mark.slow
def test_train_script_overwrite_of_a_user_folder_is_refused(tmp_path):
    from tests.test_train_script import _write_imdb

    source = _write_imdb(tmp_path / "data")
    mine = _user_folder(tmp_path / "mine")
    done = _script("experiments.train", f"--data_source={source}", "--backbone=tiny",
                   "--train_per_class=4", "--eval_per_class=2", "--max_length=16",
                   "--batch_size=4", "--epochs=1", "--energy=false", f"--output_dir={mine}",
                   "--overwrite")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Refusing to overwrite" in done.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"] and _kept(mine)


@pytest.mark.slow
def test_a_bad_spec_in_a_sweep_fails_before_any_folder_is_written(tmp_path):
    out = tmp_path / "seq"
    done = _script("experiments.seq_scaling", "--quick", f"--output_dir={out}",
                   "--variants=keras;favor(num_features=8);lowrank(kk=8)", "--lengths=16")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "lowrank(kk=8)" in done.stderr and "kk" in done.stderr
    assert not out.exists()


def test_export_benchmark_defaults_to_runs_not_results():
    code = "import export.benchmark as b; print(b.FLAGS['output_dir'].default)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300, check=True).stdout.strip().splitlines()[-1]
    assert os.path.realpath(out) == os.path.realpath(REPO_ROOT / "runs" / "export_benchmark")


def test_tier_presets_fill_only_flags_not_given_and_unknown_tiers_are_refused():
    presets = {"quick": {"epochs": 1}, "cpu": {"epochs": 2}}
    cpu = suite.settings_from_flags(_flag_values("--tier=cpu"), ["epochs"], presets, "energy")
    assert (cpu["tier"], cpu["quick"], cpu["epochs"]) == ("cpu", False, 2)
    given = suite.settings_from_flags(_flag_values("--tier=cpu", "--epochs=5"), ["epochs"],
                                      presets, "energy")
    assert given["epochs"] == 5
    full = suite.settings_from_flags(_flag_values(), ["epochs"], presets, "energy")
    assert (full["tier"], full["epochs"]) == ("full", 3)
    with pytest.raises(ValueError, match="has no --tier=cpu; pass one of quick, full"):
        suite.settings_from_flags(_flag_values("--tier=cpu"), ["epochs"],
                                  {"quick": {"epochs": 1}}, "energy")
    with pytest.raises(ValueError, match="--quick means --tier=quick"):
        suite.settings_from_flags(_flag_values("--quick", "--tier=cpu"), ["epochs"], presets,
                                  "energy")
    assert "tier" not in suite.row_settings(cpu)
