"""The notebooks run top to bottom with their small settings, and match their jupytext twins.

Each notebook is executed by a fresh ``python3`` kernel of this interpreter (the
kernel inherits this process's environment: TFDS_DATA_DIR, the session's data
cache, PYTHONPATH pointing at this checkout), with the Agg backend, and its
figures and training workdirs in a temporary directory, never in the repository.
"""

import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import requires_binarized_mnist, requires_mnist

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# notebook -> (the PNGs it must write, the TFDS datasets it reads)
EXPECTED = {
    "01_elbo_from_scratch": (["01_elbo_gap.png", "01_gradient_variance.png"], []),
    "02_extend_a_loss": (["02_kl_per_unit.png", "02_reconstructions.png"],
                         [requires_binarized_mnist, requires_mnist]),
    "03_importance_sampling": (["03_iwae_bounds.png"], [requires_binarized_mnist]),
    "04_discrete_latents": (["04_voronoi.png", "04_vq_terms.png", "04_codebook_usage.png",
                             "04_prior_samples.png"], [requires_binarized_mnist]),
}


def notebook_names():
  return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_is_listed_and_has_a_text_twin():
  assert notebook_names() == sorted(EXPECTED)
  twins = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
  assert twins == notebook_names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_and_text_twin_have_the_same_cells_and_no_outputs(name):
  nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  nbformat.validate(nb)
  twin = jupytext.read(NOTEBOOKS / f"{name}.py")
  cells = [(c.cell_type, c.source.strip()) for c in nb.cells]
  twin_cells = [(c.cell_type, c.source.strip()) for c in twin.cells]
  assert cells == twin_cells, f"{name}.ipynb and {name}.py differ: run `jupytext --sync notebooks/{name}.py`"
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code), f"{name}.ipynb has outputs"
  assert nb.metadata.kernelspec.name == "python3"
  assert "FULL_RUN = False" in code[0].source  # the test runs the small setting


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.slow, *marks]) for name, (_, marks) in sorted(EXPECTED.items())])
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
  figures = tmp_path / "figures"
  monkeypatch.setenv("VAE_JAX_FIGURES", str(figures))
  monkeypatch.setenv("VAE_JAX_WORKDIR", str(tmp_path / "runs"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
  nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell(
      "import resource, sys\nusage = resource.getrusage(resource.RUSAGE_SELF)\n"
      "print(sys.prefix)\nprint(usage.ru_utime + usage.ru_stime)"))
  client = NotebookClient(nb, kernel_name="python3", timeout=300,
                          resources={"metadata": {"path": str(tmp_path)}})
  start = time.perf_counter()
  client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails
  seconds = time.perf_counter() - start
  prefix, cpu_seconds = nb.cells[-1].outputs[0]["text"].split()
  print(f"{name}: {seconds:.1f} s wall, kernel CPU {float(cpu_seconds):.1f} s")
  assert prefix == sys.prefix  # the kernel ran this interpreter
  for png in EXPECTED[name][0]:
    path = figures / png
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
