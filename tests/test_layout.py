"""The layout's promises: persistence and analysis know nothing of torch, and loading the pytest
plugin (which every pytest run in an environment with mupcheck does) does not import it."""

from __future__ import annotations

import subprocess
import sys

import pytest

TORCH_FREE = ["mupcheck.outputs.plugin", "mupcheck.spec", "mupcheck.store", "mupcheck.result",
              "mupcheck.provenance", "mupcheck.frame", "mupcheck.analysis.optima", "mupcheck.analysis.transfer",
              "mupcheck.analysis.drift", "mupcheck.analysis.stability", "mupcheck.analysis.noise",
              "mupcheck.sources.tables"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_does_not_import_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'mup') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} imports {out.strip()}"


@pytest.mark.parametrize("module", ["mupcheck.outputs.plugin", "mupcheck.spec"])
def test_parsing_a_grid_does_not_import_pandas(module):
    """pandas costs 0.8 s to import: parsing a grid (what every pytest collection of a grid does) leaves it
    to the grids that read results (mupcheck.sources)."""
    code = f"import sys, {module}; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
