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
        dict with ``kind`` ("GPU", "TPU" or "CPU"), ``gpus`` (names), ``cpu_count``,
        ``cpu_model`` and ``cpu_isa`` (`cpu_isa`).
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
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
    }


# CPU features that change int8 / bf16 speed and results, in the order they are named.
_ISA_FLAGS = (
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("amx_bf16", "AMX-BF16"),
    ("amx_int8", "AMX-INT8"),
)


def cpu_flags():
    """The host CPU's feature flags (the ``flags`` line of ``/proc/cpuinfo``; empty elsewhere)."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_bf16_units(flags=None):
    """Whether the CPU multiplies bfloat16 natively (AMX-BF16 or AVX-512 BF16), which makes
    ``mixed_bfloat16`` faster than float32 there (elsewhere it is emulated and slower)."""
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def cpu_isa(flags_text=None):
    """The host CPU's vector / matrix instruction sets that matter for int8 and bf16 speed.

    Args:
        flags_text: the ``flags`` line of ``/proc/cpuinfo`` (read from the host when None).

    Returns:
        A string such as ``"AVX2"`` or ``"AVX2, AVX-512, AVX-512 VNNI, AVX-512 BF16, AMX-BF16,
        AMX-INT8"``; ``"unknown"`` where the flags cannot be read (not Linux).

    >>> cpu_isa("fpu sse2 avx avx2 fma")
    'AVX2'
    >>> cpu_isa("avx2 avx512f avx512_vnni amx_int8")
    'AVX2, AVX-512, AVX-512 VNNI, AMX-INT8'
    """
    if flags_text is None:
        if not pathlib.Path("/proc/cpuinfo").is_file():
            return "unknown"
        present = cpu_flags()
    else:
        present = set(flags_text.split())
    return ", ".join(name for flag, name in _ISA_FLAGS if flag in present) or "no AVX2"


def load_average():
    """The 1-minute load average (None where the OS has none): how busy the CPU was."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_model(cpuinfo_text=None):
    r"""The CPU's model name with its family and model numbers, which tell apart CPUs that a
    virtual machine names alike (an "AMD EPYC" may be a Zen 1 without AVX-512 or a Zen 4 with
    AVX-512 BF16).

    Args:
        cpuinfo_text: the text of ``/proc/cpuinfo`` (read from the host when None).

    >>> cpu_model("cpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n")
    'AMD EPYC (family 25, model 17)'
    """
    if cpuinfo_text is None:
        cpuinfo = pathlib.Path("/proc/cpuinfo")
        if not cpuinfo.is_file():
            return platform.processor() or platform.machine()
        cpuinfo_text = cpuinfo.read_text(errors="replace")
    fields = {}
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if fields.get("cpu family") and fields.get("model"):
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


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
