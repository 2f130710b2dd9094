"""Run metadata: package versions, the device, the host and the git commit.

Written into every run's ``config.json`` so a result folder says what produced it.

Example:

>>> info = run_metadata()
>>> sorted(info)[:3]
['device', 'git', 'host']
"""

import importlib.metadata
import os
import pathlib
import platform
import subprocess
import sys

PACKAGES = (
    "keras_effattn",
    "tensorflow",
    "keras",
    "keras-hub",
    "tensorflow-text",
    "tensorflow-datasets",
    "numpy",
    "codecarbon",
    "tf2onnx",
    "onnxruntime",
)


def package_versions(packages=PACKAGES):
    """Returns ``{name: version or None}`` for the given distribution names."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info():
    """Describes the accelerators TensorFlow sees and the host CPU.

    Returns:
        dict with ``kind`` ("GPU", "TPU" or "CPU"), ``gpus`` (names), ``cpu_count`` and
        ``cpu_model``.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    tpus = tf.config.list_logical_devices("TPU")
    kind = "TPU" if tpus else ("GPU" if gpus else "CPU")
    return {
        "kind": kind,
        "gpus": names,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
    }


def _cpu_model():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit(path=None):
    """Returns ``{"commit", "dirty"}`` for the git checkout holding `path` (this package by
    default), or ``{"commit": None, "dirty": None}`` outside a checkout or without git."""
    cwd = pathlib.Path(path) if path else pathlib.Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def run_metadata():
    """Everything above in one dict: versions, device, host, python and git."""
    return {
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "device": device_info(),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
        "git": git_commit(),
    }
