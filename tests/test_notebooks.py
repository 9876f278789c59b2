from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, cvppp_dir, monkeypatch):
    """Every notebook runs without an error (their cells assert what they show), in the small
    setting they read from ``HARMONIC_NOTEBOOK_SMALL``."""
    monkeypatch.setenv("HARMONIC_NOTEBOOK_SMALL", "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # the kernel gets a user's one CPU device
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("SBD" in o.get("text", "") for o in outputs)
