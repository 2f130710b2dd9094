"""export/cli.py: the exit-status contract every script follows (0 ok; 2 and one line for bad
input; 1 and a traceback for an internal error), the quiet TensorFlow start-up, and the
predictor's and exporter's command lines under it. Scripts run in subprocesses only where the
contract is about the process (flag parsing, stderr, exit status)."""

import os
import subprocess
import sys
import textwrap

import pytest

from keras_effattn_runtime import cli
from keras_effattn_runtime import predict as predict_lib
from tests.conftest import REPO_ROOT

NOISE = ("cuInit", "oneDNN", "cpu_feature_guard", "cudart_stub", "absl::InitializeLog")


def _run(argv, env=None, timeout=600):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


# ------------------------------------------------------------------------------ guard
def _decode_error():
    try:
        b"caf\xe9".decode("utf-8")
    except UnicodeDecodeError as error:
        return error
    raise AssertionError("latin-1 bytes decoded as UTF-8")


@pytest.mark.parametrize("error", [
    cli.UsageError("--x=3 is bad; pass --x=1"),
    ValueError("labels outside [0, 2);\nfix the labels"),
    FileNotFoundError(2, "No such file or directory", "missing.txt"),
    PermissionError(13, "Permission denied", "secret.txt"),
    IsADirectoryError(21, "Is a directory", "folder"),
    _decode_error(),
])
def test_bad_input_is_exit_2_with_one_line(error, capsys):
    def main(argv):
        raise error

    assert cli.guard(main, []) == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert out == ""
    if isinstance(error, UnicodeDecodeError):
        assert "not UTF-8" in line and "iconv" in line
    elif isinstance(error, OSError):
        assert error.filename in line and error.strerror in line and "; " in line
    else:
        assert " ".join(str(error).split("\n")) in line


def test_internal_error_is_exit_1_with_traceback(capsys):
    def main(argv):
        return {}["missing"]  # a bug, not bad input

    assert cli.guard(main, []) == 1
    err = capsys.readouterr()[1]
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err


def test_status_passthrough_and_verbose_traceback(capsys):
    assert cli.guard(lambda argv: None, []) == 0
    assert cli.guard(lambda argv: 3, []) == 3
    with pytest.raises(SystemExit):
        cli.guard(lambda argv: sys.exit(5), [])

    def bad(argv):
        raise ValueError("bad value; use a good one")

    assert cli.guard(bad, ["--verbose"]) == 2
    err = capsys.readouterr()[1]
    assert "Traceback" in err and err.strip().endswith("error: bad value; use a good one")


def test_is_verbose():
    assert cli.is_verbose(["--verbose"]) and cli.is_verbose(["--verbose=true"])
    assert not cli.is_verbose([]) and not cli.is_verbose(["--verbose=false"])
    assert not cli.is_verbose(["--verbose", "--noverbose"])
    assert not cli.is_verbose(["--", "--verbose"])


def test_quiet_tensorflow_sets_the_log_level_unless_verbose(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    cli.quiet_tensorflow(["--verbose"])
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    cli.quiet_tensorflow([])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # the user's own choice wins
    cli.quiet_tensorflow([])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_filtered_stderr_drops_only_tensorflow_noise(capfd):
    with cli.filtered_stderr():
        os.write(2, b"I0000 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n")
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"a real warning the user must see\n")
    err = capfd.readouterr()[1]
    assert err == "a real warning the user must see\n"


def test_argument_parser_errors_are_usage_errors():
    parser = cli.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int)
    with pytest.raises(cli.UsageError, match="--n: invalid int value.*see `tool --help`"):
        parser.parse_args(["--n", "x"])


# ------------------------------------------------------------------------------ run_absl
ABSL_SCRIPT = textwrap.dedent("""
    import sys
    from absl import flags
    from keras_effattn_runtime import cli
    flags.DEFINE_integer("n", 1, "A count.", lower_bound=1)
    flags.DEFINE_string("fail", None, "value, internal or none.")
    def main(argv):
        if flags.FLAGS.fail == "value":
            raise ValueError("--fail=value is bad input; pass --fail=none")
        if flags.FLAGS.fail == "internal":
            raise RuntimeError("an internal error")
        print("ran with n =", flags.FLAGS.n)
    cli.run_absl(main)
""")


def test_run_absl_exit_statuses():
    ok = _run(["-c", ABSL_SCRIPT, "--n=3"])
    assert ok.returncode == 0 and "ran with n = 3" in ok.stdout, ok.stderr
    for argv, expected in ((["--n=0"], "--n"), (["--n=abc"], "--n"), (["--typo=1"], "typo"),
                           (["--fail=value"], "--fail=value is bad input")):
        bad = _run(["-c", ABSL_SCRIPT, *argv])
        assert bad.returncode == 2, (argv, bad.stderr)
        assert expected in _one_error_line(bad.stderr)
    internal = _run(["-c", ABSL_SCRIPT, "--fail=internal"])
    assert internal.returncode == 1
    assert "Traceback (most recent call last)" in internal.stderr
    assert "RuntimeError: an internal error" in internal.stderr


# ------------------------------------------------------------------------------ scripts
@pytest.mark.slow
def test_train_typo_in_attention_exits_2_before_writing_and_hides_tensorflow_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--backbone=tiny", "--attention=exat*2",
         f"--output_dir={out}", "--energy=false"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_error_line(done.stderr)
    assert "--attention='exat*2'" in line and "Unknown attention kind 'exat'" in line
    assert not out.exists()
    assert not any(noise in done.stderr + done.stdout for noise in NOISE)


def test_to_onnx_bad_input_exits_2_with_one_line(tmp_path):
    missing = _run(["-m", "export.to_onnx", f"--model={tmp_path / 'none.keras'}",
                    f"--output_dir={tmp_path / 'out'}"])
    assert missing.returncode == 2
    assert "none.keras' does not exist" in _one_error_line(missing.stderr)
    model = tmp_path / "m.keras"
    model.write_bytes(b"not checked before the flags")
    bad_flag = _run(["-m", "export.to_onnx", f"--model={model}", "--opset=99",
                     f"--output_dir={tmp_path / 'out'}"])
    assert bad_flag.returncode == 2
    assert "--opset" in _one_error_line(bad_flag.stderr)
    texts = tmp_path / "texts.txt"
    texts.write_bytes("un très bon film\n".encode("latin-1"))
    not_utf8 = _run(["-m", "export.to_onnx", f"--model={model}", f"--texts={texts}",
                     f"--output_dir={tmp_path / 'out'}"])
    assert not_utf8.returncode == 2
    assert "is not UTF-8" in _one_error_line(not_utf8.stderr)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ predictor


def _tiny_onnx(path, op="Relu", opset=17):
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g",
                              [value("x", TensorProto.FLOAT, [1])],
                              [value("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_load_errors_tell_a_damaged_file_from_an_unsupported_model_and_a_runtime_failure(
        tmp_path, monkeypatch):
    good = _tiny_onnx(tmp_path / "good.onnx")
    assert predict_lib.load_session(good).get_inputs()[0].name == "x"
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((tmp_path / "good.onnx").read_bytes()[:20])
    with pytest.raises(ValueError, match="is not an ONNX model.*damaged, truncated"):
        predict_lib.load_session(str(truncated))
    for unsupported in (_tiny_onnx(tmp_path / "op.onnx", op="NoSuchOp"),
                        _tiny_onnx(tmp_path / "opset.onnx", opset=99)):
        with pytest.raises(ValueError, match="is an ONNX model this onnxruntime .* cannot run"):
            predict_lib.load_session(unsupported)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(predict_lib.ort, "InferenceSession", out_of_memory)
    with pytest.raises(RuntimeError, match="onnxruntime could not load .*MemoryError") as caught:
        predict_lib.load_session(good)
    assert "damaged" not in str(caught.value) and not isinstance(caught.value, ValueError)


def test_cli_input_that_is_not_utf8_is_one_line_exit_2(tmp_path, capsys):
    texts = tmp_path / "latin1.txt"
    texts.write_bytes("un film très beau\n".encode("latin-1"))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert predict_lib.main(["--model_dir", str(model_dir), "--input", str(texts)]) == 2
    err = capsys.readouterr()[1]
    assert len(err.strip().splitlines()) == 1, err
    assert str(texts) in err and "not UTF-8" in err and "iconv" in err
    assert "Traceback" not in err


def test_cli_usage_error_and_internal_error(tmp_path, capsys, monkeypatch):
    assert predict_lib.main(["--batch_size", "many", "text"]) == 2
    err = capsys.readouterr()[1]
    assert len(err.strip().splitlines()) == 1 and "--batch_size" in err and "--help" in err

    def bug(*args, **kwargs):
        raise KeyError("a bug in the predictor")

    monkeypatch.setattr(predict_lib, "Predictor", bug)
    assert predict_lib.main(["--model_dir", str(tmp_path), "text"]) == 1
    err = capsys.readouterr()[1]
    assert "Traceback (most recent call last)" in err and "a bug in the predictor" in err


def test_attention_benchmark_bad_number_list_exits_2_before_writing(tmp_path):
    out = tmp_path / "bench"
    done = _run(["-m", "experiments.attention_benchmark", "--lengths=128,5l2",
                 f"--output_dir={out}"])
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--lengths" in _one_error_line(done.stderr)
    assert not out.exists()
