"""Shared test fixtures: quiet TensorFlow, seeded randomness, no leaked precision policy."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The project's shared datasets: $KERAS_EFFATTN_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("KERAS_EFFATTN_DATA")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def data_dir():
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set KERAS_EFFATTN_DATA)")
    return path


@pytest.fixture(autouse=True)
def _isolate_keras_state():
    """Each test starts float32 and seeded, and leaves no global policy behind."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
