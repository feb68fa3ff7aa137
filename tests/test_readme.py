"""The README's promises: its test command is what CI runs, and its user-model example works."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import torch

from mupcheck.engine.data import load_data
from mupcheck.engine.fused import train_fused
from mupcheck.engine.models import build_model, has_base_shapes
from mupcheck.engine.solo import train_run

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_install_and_test_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert first_block[0].startswith("pip install") and "pytest grids/" in first_block[0]
    assert first_block[1].startswith("python -m pytest")
    assert "README.md" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command


def test_readme_user_model_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n# mypkg/models\.py\n(.*?)```", README, re.S).group(1)
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    from helpers import write_grid

    from mupcheck.spec import load_grid, run_configs

    try:
        grid = load_grid(write_grid(tmp_path, model="mypkg.models:build"))
        configs = run_configs(grid)  # muP comes first; take an SP run too
        for cfg in (configs[0], configs[-1]):
            model = build_model(cfg, 256)
            assert has_base_shapes(model)
            assert model(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 256)
        # A user model like this one can be batched: fused members train as their solo runs do.
        group = [cfg, dataclasses.replace(cfg, lr_log2=-6.0)]
        data = load_data("synthetic")
        fused = train_fused(group, data, dtype=torch.float64)
        for member, result in zip(group, fused):
            assert result.engine == "fused"
            assert result.loss == pytest.approx(train_run(member, data, dtype=torch.float64).loss, rel=1e-9)
    finally:
        for name in ("mypkg", "mypkg.models"):
            sys.modules.pop(name, None)
