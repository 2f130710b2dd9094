"""Packaging: setup.cfg ships every subpackage, and the TensorFlow-free runtime installs on its own
in a fresh virtual environment and predicts from an exported folder there."""

import configparser
import json
import os
import subprocess
import sys
import venv

import numpy as np
import pytest
import setuptools

from tests.conftest import REPO_ROOT
from tests.export_helpers import ALL_KINDS, exported, imdb

RUNTIME = REPO_ROOT / "export" / "runtime"


def _listed_packages():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    return set(config["options"]["packages"].split())


def test_setup_cfg_lists_every_package():
    found = set(setuptools.find_packages(str(REPO_ROOT), include=["keras_effattn",
                                                                  "keras_effattn.*"]))
    found |= set(setuptools.find_packages(str(RUNTIME), include=["keras_effattn_runtime*"]))
    assert found == _listed_packages()


def test_runtime_package_imports_nothing_of_keras_effattn_or_tensorflow():
    """Everything in the runtime is importable with the runtime's own dependencies."""
    code = (
        "import sys, importlib, pkgutil, keras_effattn_runtime as r\n"
        "for m in pkgutil.iter_modules(r.__path__):\n"
        "    importlib.import_module(f'keras_effattn_runtime.{m.name}')\n"
        "bad = [m for m in ('tensorflow', 'keras', 'keras_hub', 'keras_effattn', 'export')\n"
        "       if m in sys.modules]\n"
        "sys.exit(f'imported {bad}' if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=RUNTIME, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_runtime_installs_alone_in_a_fresh_venv_and_predicts(tmp_path):
    """`pip install export/runtime` into a new venv (numpy and onnxruntime from the index, no
    TensorFlow), then the installed `effattn-predict` and `Predictor` classify raw texts from an
    exported folder, outside the checkout, exactly as the checkout's predictor does."""
    folder, _, _ = exported(ALL_KINDS)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(RUNTIME)], capture_output=True, text=True, check=False, timeout=900, env=env)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]

    texts, _ = imdb(per_class=3, seed=7)
    texts[0] = "A <i>great</i> film!!! Loved it -- really&hellip;"
    (tmp_path / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    code = (
        "import importlib.util, json, sys\n"
        "from keras_effattn_runtime import Predictor\n"
        "absent = [m for m in ('tensorflow', 'keras', 'keras_effattn', 'export')\n"
        "          if importlib.util.find_spec(m) is not None]\n"
        "assert not absent, f'installed: {absent}'\n"
        "texts = open(sys.argv[2]).read().splitlines()\n"
        "print(json.dumps(Predictor(sys.argv[1]).predict_logits(texts).tolist()))\n"
    )
    ran = subprocess.run([str(python), "-c", code, str(folder), str(tmp_path / "texts.txt")],
                         cwd=tmp_path, capture_output=True, text=True, check=False, env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    from keras_effattn_runtime.predict import Predictor

    expected = Predictor(folder).predict_logits([t.replace("\n", " ") for t in texts])
    np.testing.assert_allclose(np.asarray(json.loads(ran.stdout)), expected, atol=1e-6)

    command = subprocess.run(
        [str(env_dir / "bin" / "effattn-predict"), "--model_dir", str(folder), "--json",
         texts[0]], cwd=tmp_path, capture_output=True, text=True, check=False, env=env)
    assert command.returncode == 0, command.stderr[-2000:]
    first = json.loads(command.stdout.strip().splitlines()[0])
    assert first["label"] in ("neg", "pos")
