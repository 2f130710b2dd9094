"""An exported model's answers on another CPU's kernels, by running it under QEMU's CPU emulation.

onnxruntime picks its int8 matmul kernels by the instruction sets the CPU reports: without
VNNI (AVX2 only), uint8 x int8 products are summed in saturating 16-bit pairs; AVX-512 VNNI and
AMX accumulate in 32 bits. So an int8 export can give different labels on the two kinds of CPU,
and a check on one of them says little about the other. ``qemu-x86_64 -cpu MODEL`` (Debian's
``qemu-user``) runs the same Python, onnxruntime and model on an emulated CPU whose CPUID reports
only that model's instruction sets (QEMU 7.2 emulates up to AVX2 and FMA, no AVX-512), so
onnxruntime takes that CPU's kernels. Only the answers mean anything there: the times do not.

The child imports numpy, onnxruntime and ``keras_effattn_runtime`` only (no TensorFlow). Every
vector instruction is translated, so it runs about two orders of magnitude slower than the host:
1,000 IMDB reviews of the MiniLM-L6 int8 export took 90 min on a 2-core Zen 4 EPYC.

Example:
    logits = emulated_cpu.predict_logits({"int8": "exported/int8"}, texts, cpu="EPYC-v1")
    logits["isa"]  # ['AVX2', 'FMA3'], what onnxruntime saw
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

QEMU = "qemu-x86_64"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# numpy's CPUID features that decide onnxruntime's int8 / fp32 kernels, with their usual names.
ISA_FEATURES = {
    "AVX2": "AVX2",
    "FMA3": "FMA3",
    "AVX512F": "AVX-512",
    "AVX512VNNI": "AVX-512 VNNI",
    "AVXVNNI": "AVX-VNNI",
    "AVX512_SPR": "AVX-512 FP16 (Sapphire Rapids)",
}


def guest_isa():
    """The instruction sets of `ISA_FEATURES` this process's CPU reports (through CPUID)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return [name for key, name in ISA_FEATURES.items() if features.get(key)]


def qemu_command(cpu):
    """The command prefix that runs a program on the emulated `cpu`.

    Raises:
        FileNotFoundError: ``qemu-x86_64`` is not installed (with the install command).
    """
    path = shutil.which(QEMU)
    if path is None:
        raise FileNotFoundError(
            f"Emulating the {cpu!r} CPU needs {QEMU}; install it with "
            "`apt-get install qemu-user` (Debian/Ubuntu), or leave out --emulate_cpus.")
    return [path, "-cpu", cpu]


def check_cpu(cpu):
    """`qemu_command(cpu)`, after checking that QEMU emulates `cpu` (a model name, optionally
    with ``,+feature`` options).

    Cheap (``qemu-x86_64 -cpu help``), so a long benchmark can call it before its first step.

    Raises:
        FileNotFoundError: QEMU is missing (with the install command).
        ValueError: QEMU has no such CPU model (naming some it has).
    """
    command = qemu_command(cpu)
    listing = subprocess.run([command[0], "-cpu", "help"], capture_output=True, text=True,
                             check=False, timeout=60).stdout
    models = {line.split()[1] for line in listing.splitlines()
              if line.startswith("x86 ") and len(line.split()) > 1}
    if cpu.split(",")[0] not in models:
        raise ValueError(f"QEMU has no CPU model {cpu!r}; list them with `{QEMU} -cpu help` "
                         "(e.g. EPYC-v1 for Zen 1, Haswell-v4: both AVX2 without VNNI).")
    return command


def predict_logits(model_dirs, texts, cpu, threads=None, timeout=7200):
    """Logits of each exported folder for `texts`, computed on the emulated `cpu`.

    Each folder is run as users run it (`keras_effattn_runtime.predict.Predictor`: its batch
    size and padding), so they compare with the host's `Predictor` logits text for text.

    Args:
        model_dirs: dict name -> export folder.
        texts: list of str.
        cpu: a QEMU CPU model (``qemu-x86_64 -cpu help``), e.g. ``"EPYC-v1"`` (Zen 1: AVX2, no
            VNNI) or ``"Haswell-v4"``.
        threads: onnxruntime intra-op threads in the emulated process.
        timeout: seconds before the emulated process is stopped.

    Returns:
        dict with ``isa`` (what the emulated CPU reported) and ``logits`` (name -> [N, C]).

    Raises:
        FileNotFoundError: QEMU is missing.
        ValueError: QEMU does not know `cpu`.
        RuntimeError: the emulated process failed (its last output lines in the message).
    """
    import numpy as np

    command = check_cpu(cpu)
    with tempfile.TemporaryDirectory(prefix="emulated_cpu_") as work:
        work = pathlib.Path(work)
        job = {"model_dirs": {k: os.fspath(v) for k, v in model_dirs.items()},
               "texts": list(texts), "threads": threads, "output": str(work / "logits.npz")}
        (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
        proc = subprocess.run(
            command + [sys.executable, "-m", "export.emulated_cpu", str(work / "job.json")],
            cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=timeout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise RuntimeError(f"The predictor failed on the emulated {cpu} CPU:\n{tail}")
        with np.load(work / "logits.npz") as data:
            logits = {name: data[name] for name in model_dirs}
        isa = json.loads((work / "isa.json").read_text(encoding="utf-8"))
    return {"isa": isa, "logits": logits}


def _run_job(job_file):
    """The emulated side: predicts every folder of the job and writes the logits."""
    import numpy as np

    from keras_effattn_runtime.predict import Predictor

    job_file = pathlib.Path(job_file)
    job = json.loads(job_file.read_text(encoding="utf-8"))
    logits = {name: Predictor(folder, threads=job["threads"]).predict_logits(job["texts"])
              for name, folder in job["model_dirs"].items()}
    np.savez(job["output"], **logits)
    (job_file.parent / "isa.json").write_text(json.dumps(guest_isa()), encoding="utf-8")


if __name__ == "__main__":
    _run_job(sys.argv[1])
