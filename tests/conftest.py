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


MISSING_DATA = "missing shared data"


def in_ci():
    """True when the CI variable says this is a CI run (``CI=true``, as `.ci/run` gets it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_shared_data(path):
    """Returns `path` if it exists; otherwise skips the test, or fails it under CI.

    A CI run that skipped the real-data tests would go green without ever reading IMDB or
    exporting a model, so there a missing shared data folder is a failure, not a skip.
    """
    path = pathlib.Path(path)
    if path.exists():
        return path
    message = f"{MISSING_DATA}: {path} not found (set KERAS_EFFATTN_DATA)"
    if in_ci():
        pytest.fail(f"{message}; CI must run the real-data tests, so provide the data.",
                    pytrace=False)
    pytest.skip(message)


@pytest.fixture
def data_dir():
    return require_shared_data(shared_data_dir())


@pytest.fixture(autouse=True)
def _isolate_keras_state():
    """Each test starts float32 and seeded, and leaves no global policy behind."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
