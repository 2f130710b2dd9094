"""The test suite's own guards: a CI run never goes green by skipping the real-data tests."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# One cheap real-data test (reads two GLUE rows), run in a child pytest.
_DATA_TEST = "tests/test_data_glue.py::test_real_mrpc_first_row_keeps_quotes_and_drops_bom"


def _child_pytest(tmp_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["KERAS_EFFATTN_DATA"] = str(tmp_path / "no_such_data")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", _DATA_TEST],
        check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(tmp_path):
    local = _child_pytest(tmp_path, ci=None)
    assert local.returncode == 0, local.stdout[-2000:]
    assert "1 skipped" in local.stdout and "missing shared data" in local.stdout

    ci = _child_pytest(tmp_path, ci="true")
    assert ci.returncode == 1, ci.stdout[-2000:]
    assert "1 error" in ci.stdout or "1 failed" in ci.stdout  # fixture or test body
    assert "missing shared data" in ci.stdout and "CI must run the real-data tests" in ci.stdout


def _check_log(tmp_path, text, status):
    log = tmp_path / "pytest.log"
    log.write_text(text)
    return subprocess.run(["bash", str(REPO_ROOT / ".ci" / "check-test-log"), str(log),
                           str(status)], check=False, capture_output=True, text=True,
                          timeout=30).returncode


def test_ci_log_check_fails_on_data_skips_failures_and_no_tests(tmp_path):
    clean = "SKIPPED [1] tests/test_x.py:3: CPU-only expectation\n= 5 passed, 1 skipped =\n"
    assert _check_log(tmp_path, clean, 0) == 0
    data_skip = ("SKIPPED [2] tests/conftest.py:40: missing shared data: data not found\n"
                 "= 5 passed, 2 skipped =\n")
    assert _check_log(tmp_path, data_skip, 0) == 1
    assert _check_log(tmp_path, "= 1 failed, 4 passed =\n", 1) == 1
    assert _check_log(tmp_path, "= no tests ran =\n", 5) == 1


def test_ci_run_uses_the_log_check():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert "check-test-log" in script and "PIPESTATUS[0]" in script


def _experiments_imported_in_process():
    """The `experiments.*` modules some test file imports into the pytest process itself (import
    statements only: code in strings runs in a child process)."""
    import ast

    names = set()
    for path in (REPO_ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "experiments":
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[1] for a in node.names
                             if a.name.startswith("experiments."))
    return sorted(names)


def test_scripts_imported_by_tests_can_share_one_process():
    """Scripts define absl flags at import. The whole suite runs in one pytest process, so two
    scripts that tests import in-process must not define the same flag (a `DuplicateFlagError`
    then fails whichever test imports second, depending on the order and `-k`). Scripts that
    would clash are run in subprocesses instead, like tests/test_experiments_scripts.py does."""
    names = _experiments_imported_in_process()
    assert "train" in names  # the scan finds what it should
    code = "; ".join(f"import experiments.{n}" for n in names)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=False,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, f"importing {names} together failed:\n{proc.stderr[-2000:]}"
