"""export.emulated_cpu: an export's answers on an emulated AVX2 CPU (QEMU), whatever the host.

The first test shows that the emulation reaches onnxruntime's kernel choice: without VNNI,
uint8 x int8 products are summed in 16-bit pairs that saturate, so a MatMulInteger of 255s by
127s gives 32,767 per pair there and the exact sum on VNNI / AMX CPUs.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from export import emulated_cpu
from keras_effattn_runtime.predict import Predictor
from tests.conftest import REPO_ROOT, in_ci
from tests.export_helpers import exported, imdb

AVX2_CPU = "EPYC-v1"  # Zen 1: AVX2 and FMA, no AVX-512, no VNNI
K = 64

SATURATION = textwrap.dedent(f"""
    import json
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from export.emulated_cpu import guest_isa
    weight = numpy_helper.from_array(np.full(({K}, 8), 127, np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "saturation",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [2, {K}])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {{"a": np.full((2, {K}), 255, np.uint8)}})[0]
    print(json.dumps({{"y": int(y[0, 0]), "isa": guest_isa()}}))
""")


@pytest.fixture(scope="module", autouse=True)
def _qemu():
    if shutil.which(emulated_cpu.QEMU) is None:
        message = f"missing {emulated_cpu.QEMU}: run `apt-get install qemu-user`"
        if in_ci():
            pytest.fail(f"{message}; CI must run the emulated-CPU tests.", pytrace=False)
        pytest.skip(message)


def test_emulated_avx2_cpu_takes_the_saturating_int8_kernel(tmp_path):
    script = tmp_path / "saturation.py"
    script.write_text(SATURATION)
    proc = subprocess.run(
        emulated_cpu.qemu_command(AVX2_CPU) + [sys.executable, str(script)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
        text=True, check=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "AVX2" in result["isa"] and "AVX-512" not in result["isa"]
    assert "AVX-512 VNNI" not in result["isa"]
    # 32 saturated pairs, not the exact 64 * 255 * 127 = 2,072,640.
    assert result["y"] == (K // 2) * 32767


def test_emulated_predictions_match_the_host_on_tiny_exports():
    fp32, _, _ = exported("exact")
    int8, _, _ = exported("exact", quantize="int8")
    texts, _ = imdb(per_class=6, seed=3)
    run = emulated_cpu.predict_logits({"fp32": fp32, "int8": int8}, texts, AVX2_CPU, threads=1)
    assert run["isa"][:1] == ["AVX2"] and "AVX-512" not in run["isa"]
    for name, folder in (("fp32", fp32), ("int8", int8)):
        host = Predictor(folder, threads=1).predict_logits(texts)
        logits = run["logits"][name]
        assert logits.shape == host.shape == (12, 2)
        # Other kernels, other rounding: close, not necessarily equal. This tiny model's int8
        # values stay far from 16-bit saturation.
        np.testing.assert_allclose(logits, host, atol=1e-4 if name == "fp32" else 1e-2)


def test_unknown_cpu_model_names_the_list_command():
    folder, _, _ = exported("exact")
    with pytest.raises(ValueError, match="qemu-x86_64 -cpu help"):
        emulated_cpu.predict_logits({"fp32": folder}, ["a film"], "Pentium-9000")


def test_missing_qemu_says_how_to_install(monkeypatch):
    monkeypatch.setattr(emulated_cpu.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install qemu-user"):
        emulated_cpu.qemu_command(AVX2_CPU)
