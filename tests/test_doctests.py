"""Every docstring example runs: one test per module of keras_effattn/, experiments/, export/.

A module is collected when its source holds a ``>>>`` example (read as text, so collection
imports nothing). Each test imports the module and runs its doctests with ELLIPSIS and
NORMALIZE_WHITESPACE from an empty working folder, so an example that reads or writes files
relative to the repository fails here. A failure shows doctest's own report for that module.
"""

import doctest
import importlib
import io

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("keras_effattn", "experiments", "export")
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples():
    names = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if ">>>" not in path.read_text(encoding="utf-8"):
                continue
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


MODULES = _modules_with_examples()


def test_the_library_has_examples_to_run():
    layers = {"keras_effattn.layers.fused_attention", "keras_effattn.layers.favor_attention",
              "keras_effattn.layers.low_rank_attention", "keras_effattn.ops.exact",
              "keras_effattn.ops.favor", "keras_effattn.ops.lowrank",
              "keras_effattn.ops.reference"}
    assert layers <= set(MODULES), sorted(layers - set(MODULES))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0, f"{name} has '>>>' in its source but doctest finds no example"
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in tests:
        runner.run(test, out=report.write)
    if runner.failures:
        pytest.fail(f"{runner.failures} of {runner.tries} examples failed in {name}:\n"
                    f"{report.getvalue()}", pytrace=False)
