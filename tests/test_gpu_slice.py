"""benchmarks/gpu_slice.sh end to end on CPU (issue 38): the script a borrowed GPU runs first, here with
CPU-sized copies of the duration grids (benchmarks/gpu_slice_cpu/: the same keys and code path, a tiny model).
A first call trains the first stage and stops; a second call, given the first one's output as a fresh machine
would get it back (its store as store.tgz), skips what was done and trains only what is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ["benchmarks/gpu_slice_cpu/gpu_duration_constant.toml", "benchmarks/gpu_slice_cpu/gpu_duration_cosine.toml"]
SPEED = "--device cpu --grid benchmarks/gpu_slice_cpu/gpu_duration_cosine.toml --widths 16 --models 2 --steps 3 " \
        "--warmup-steps 1 --pool 0 --compile off"


def _slice(out: Path, previous: Path | None = None, **env: str) -> str:
    environ = {**os.environ, "PYTHON": sys.executable, "SLICE_GRIDS": " ".join(GRIDS), "SLICE_SPEED_ARGS": SPEED,
               "SLICE_SECONDS": "3600", **env}
    args = ["bash", str(ROOT / "benchmarks" / "gpu_slice.sh"), str(out)] + ([str(previous)] if previous else [])
    done = subprocess.run(args, env=environ, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return (out / "steps.log").read_text()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_the_gpu_slice_runs_in_stages_and_resumes_from_what_came_back(tmp_path):
    first = tmp_path / "first"
    steps = _slice(first, SLICE_STAGES="1,3:coarse", SLICE_SHARED_STAGES="all:coarse")
    assert {p.name for p in (first / "done").iterdir()} == {
        "pytest_gpu", "speed", "gpu_duration_constant_tokensall_coarse", "gpu_duration_cosine_tokens1_3_coarse"}
    assert "11 skipped" in (first / "pytest_gpu.log").read_text()  # no CUDA here: the GPU checks skip
    assert list((first / "speed").glob("*.json"))
    # The constant grid's budgets share one batched row per rate and seed: all four at the cost of the longest.
    log = (first / "gpu_duration_constant_tokensall_coarse.log").read_text()
    assert "(coarse runs only)" in log and "24 trained, 0 reused" in log
    log = (first / "gpu_duration_cosine_tokens1_3_coarse.log").read_text()
    assert "(only tokens 512, 2K) (coarse runs only)" in log and "12 trained, 0 reused" in log
    shared = [json.loads(p.read_text())["result"] for p in (first / "store" / "runs").glob("*.json")]
    assert sum(r.get("shared") is not None and r["engine"] == "fused" for r in shared) == 24  # the constant grid's
    report = (first / "reports" / "gpu_duration_cosine.md").read_text()
    assert "## Missing runs" in report and "start: 0 records" in steps  # a partial store is reported as such
    assert (first / "store.tgz").is_file()

    # As a fresh machine gets it: the first call's output without its store folder, only store.tgz.
    carried = tmp_path / "carried"
    shutil.copytree(first, carried, ignore=shutil.ignore_patterns("store"))
    second = tmp_path / "second"
    steps = _slice(second, carried)
    assert "start: 36 records in the store, 4 steps done before" in steps
    for name in ("pytest_gpu", "speed", "gpu_duration_constant_tokensall_coarse"):
        assert f"{name}: done before, skipped" in steps
    log = (second / "gpu_duration_cosine_tokens1_3.log").read_text()
    assert "12 reused" in log and "0 trained" not in log  # the refinement of the first stage's cells
    report = (second / "reports" / "gpu_duration_cosine.md").read_text()
    assert "## Missing runs" not in report and "| tokens | mup | tokens 512 -> 4K" in report
    assert len(list((second / "store" / "runs").glob("*.json"))) == 64
