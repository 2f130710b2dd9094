"""examples/quickstart.ipynb runs end to end (nbclient), as a user runs it from examples/."""

import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_end_to_end(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("KERAS_EFFATTN_DATA", str(data_dir))
    monkeypatch.setenv("QUICKSTART_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    # The kernel is this interpreter (the kernelspec's "python" is looked up on PATH).
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(output.get("text", "") for cell in notebook.cells
                     if cell.cell_type == "code" for output in cell.get("outputs", []))
    assert "favor" in text and "keras_effattn.clean_text" in text
    assert "test accuracy" in text
    assert "label agreement 1.000" in text
    assert (tmp_path / "out" / "onnx" / "model.onnx").is_file()
    assert (tmp_path / "out" / "quickstart.png").is_file()
    predictions = [line for line in text.splitlines() if line.startswith(("pos ", "neg "))]
    assert len(predictions) == 2
