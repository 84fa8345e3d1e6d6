"""examples/getting_started.ipynb runs from top to bottom (on a tiny budget)."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "getting_started.ipynb"


def test_getting_started_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESGEN_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("BAYESGEN_NOTEBOOK_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, tmp_path / "executed.ipynb")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 5  # data, the run's samples, sampler steps, two methods, inpainting
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Run(BSI, data=moons" in text
    assert "BSI:" in text and "BFN:" in text and "nats/dim" in text
    assert (tmp_path / "runs" / "moons-bsi" / "ema.safetensors").is_file()
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert "## 5. Inpainting: conditioning by inference" in headings
    assert "tweedie: x₂ mean" in text and "replace: x₂ mean" in text
