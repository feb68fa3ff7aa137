"""The pytest plugin through pytester: ids, verdicts, strict xfails, no-train skips, xdist, reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import TINY_GRID, fake_result

from mupcheck.plan import plan_grid
from mupcheck.spec import load_grid
from mupcheck.store import Store


def _grid(pytester, extra: str = "", lrs: str = "[-8, -6]", seeds: str = "[0, 1, 2]") -> Path:
    grids = pytester.path / "grids"
    grids.mkdir(exist_ok=True)
    path = grids / "tiny.toml"
    path.write_text(TINY_GRID.format(model="gpt", extra=extra).replace("lr_log2 = [-8, -6]", f"lr_log2 = {lrs}")
                    .replace("seeds = [0]", f"seeds = {seeds}"))
    return path


def _fill_store(grid_path: Path, store_root: Path, optimum) -> None:
    """Records whose loss curve has its minimum at optimum(parametrization, width, tokens), moved a little
    by each seed (0.02 log2 per seed index, in every cell alike): known verdicts with tight intervals."""
    plan = plan_grid(load_grid(grid_path))
    store = Store(store_root)
    for cfg in plan.configs:
        x0 = optimum(cfg.parametrization, cfg.width, cfg.tokens) + 0.02 * cfg.seed * (1 + (cfg.width > 16))
        loss = 0.1 * (cfg.lr_log2 - x0) ** 2 + 3.0
        store.save_result(plan.key(cfg), plan.key_material(cfg), fake_result(loss))


# Enough learning rates that every optimum below is bracketed, a quarter octave apart: the local fit, whose
# intervals are the seeds' alone (rates farther apart add the interpolant's resolution).
LR5 = "[" + ", ".join(f"{-11 + 0.25 * k:g}" for k in range(33)) + "]"


def _outcomes(result) -> dict[str, str]:
    """item id -> outcome, from `pytest -v` output (xdist puts the outcome first)."""
    out = result.stdout.str()
    after = re.finditer(r"::(\w+\[[^\]]+\]) (PASSED|FAILED|XFAIL|XPASS|SKIPPED)", out)
    before = re.finditer(r"(PASSED|FAILED|XFAIL|XPASS|SKIPPED) \S+::(\w+\[[^\]]+\])", out)
    return {m.group(1): m.group(2) for m in after} | {m.group(2): m.group(1) for m in before}


def test_items_read_like_findings_and_verdicts_follow_the_data(pytester):
    grid = _grid(pytester, lrs=LR5)
    # muP keeps its optimum; SP's moves by two octaves
    _fill_store(grid, pytester.path / "store", lambda par, w, t: -7.0 if par == "mup" else -7.0 - (w == 32) * 2.0)
    result = pytester.runpytest("grids/tiny.toml", "-v", "--mupcheck-store", "store", "--mupcheck-no-train",
                                "--mupcheck-reports", "out", "-p", "no:cacheprovider")
    # The SP control's transferred rate also lands past the wider model's stability boundary.
    assert _outcomes(result) == {"lint[mup]": "PASSED", "width[mup tokens=2K 16->32]": "PASSED",
                                 "width[sp tokens=2K 16->32]": "FAILED", "wider[mup tokens=2K]": "PASSED",
                                 "stability_width[mup tokens=2K 16->32]": "PASSED",
                                 "stability_width[sp tokens=2K 16->32]": "FAILED"}
    out = result.stdout.str()
    assert "width 16 -> 32 at tokens 2K (sp): BREAKS: optimum moved -1.98 log2 (95% interval" in out
    assert "Traceback" not in out
    assert (pytester.path / "out" / "tiny.md").is_file()


def test_implementation_checks_are_items(pytester):
    coord = "[coord_check]\nwidths = [16, 32, 64, 128]\nsteps = 2\nparametrization = [\"mup\", \"sp\"]\n"
    grid = _grid(pytester, extra=coord, lrs=LR5)
    _fill_store(grid, pytester.path / "store", lambda par, w, t: -7.0)
    result = pytester.runpytest("grids/tiny.toml", "-v", "--mupcheck-store", "store", "--mupcheck-no-train",
                                "--mupcheck-reports", "out", "-p", "no:cacheprovider")
    outcomes = _outcomes(result)
    assert outcomes["lint[mup]"] == "PASSED" and outcomes["coord[mup]"] == "PASSED"
    assert outcomes["coord[sp]"] == "FAILED"  # the SP twin fails the coordinate check: the check has power
    assert outcomes["wider[mup tokens=2K]"] == "PASSED"
    assert "grow with width" in result.stdout.str()
    report = (pytester.path / "out" / "tiny.md").read_text()
    assert "## Is the muP implementation right?" in report and "| coord[sp] | FAIL |" in report
    assert (pytester.path / "out" / "tiny" / "coord_check_mup.png").is_file()


def test_power_rule_items_repair_a_drift(pytester):
    import math

    grid = _grid(pytester, extra='parametrization = ["mup"]\n[transfer]\nlr_rule = "power"\n', lrs=LR5)
    grid.write_text(grid.read_text().replace('parametrization = ["mup", "sp"]\n', "")
                    .replace("tokens = [2048]", "tokens = [2048, 4096, 8192, 16384]"))
    _fill_store(grid, pytester.path / "store", lambda par, w, t: -5.0 - 0.5 * math.log2(t / 2048))
    result = pytester.runpytest("grids/tiny.toml", "-v", "--mupcheck-store", "store", "--mupcheck-no-train",
                                "--mupcheck-reports", "out", "-p", "no:cacheprovider")
    outcomes = _outcomes(result)
    assert outcomes["tokens[mup width=16 2K->16K]"] == "FAILED"  # moved -1.5 log2 without a rule
    assert outcomes["rule_tokens[mup width=16 2K->16K]"] == "PASSED"  # the power rule fitted on 2K-8K predicts it
    assert "rule_tokens[mup width=16 2K->8K]" not in outcomes  # 8K was used to fit beta
    report = (pytester.path / "out" / "tiny.md").read_text()
    assert "## Drift along tokens" in report and "-0.50 log2" in report and "**Power rule**" in report


def test_expected_break_is_a_strict_xfail(pytester):
    grid = _grid(pytester, extra='[transfer]\nexpect_break = ["sp:width"]\n', lrs=LR5)
    store = pytester.path / "store"
    _fill_store(grid, store, lambda par, w, t: -7.0 if par == "mup" else -7.0 - (w == 32) * 2.0)
    args = ["grids/tiny.toml", "-v", "--mupcheck-store", "store", "--mupcheck-no-report", "-p", "no:cacheprovider"]
    result = pytester.runpytest(*args)
    assert _outcomes(result)["width[sp tokens=2K 16->32]"] == "XFAIL"
    result.assert_outcomes(passed=4, xfailed=1)  # lint, width, wider and stability of muP
    assert "stability_width[sp" not in result.stdout.str()  # an expected break has no stability item
    # Now SP transfers too: the expected break did not happen, and the strict xfail fails.
    _fill_store(grid, store, lambda par, w, t: -7.0)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=4, failed=1)
    assert "XPASS(strict)" in result.stdout.str()


def test_inconclusive_is_a_skip_with_its_reason_or_a_failure_on_request(pytester):
    grid = _grid(pytester, lrs=LR5, seeds="[0]")
    # The wider cell's optimum lies above the measured rates (censored): nothing can say where it is.
    _fill_store(grid, pytester.path / "store", lambda par, w, t: -7.0 if w == 16 else -2.0)
    args = ["grids/tiny.toml", "-v", "-rs", "--mupcheck-store", "store", "--mupcheck-no-report", "-p",
            "no:cacheprovider"]
    result = pytester.runpytest(*args)
    assert _outcomes(result)["width[mup tokens=2K 16->32]"] == "SKIPPED"
    assert "inconclusive: width 16 -> 32 at tokens 2K (mup): INCONCLUSIVE" in result.stdout.str()
    assert "censored on the upper edge" in result.stdout.str() and result.ret == 0
    strict = pytester.runpytest(*args, "--mupcheck-inconclusive=fail")
    assert _outcomes(strict)["width[mup tokens=2K 16->32]"] == "FAILED" and strict.ret == 1


def test_no_train_skips_and_lists_missing_runs(pytester):
    _grid(pytester)
    result = pytester.runpytest("grids/tiny.toml", "-rs", "--mupcheck-store", "store", "--mupcheck-no-train",
                                "--mupcheck-no-report", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=5)  # lint needs no runs
    assert "24 run(s) missing from the store" in result.stdout.str()
    assert "gpt mup width=16 depth=1 batch=4 tokens=2K lr=2^-8 seed=0" in result.stdout.str()


def test_malformed_grid_is_a_clean_collection_error(pytester):
    grid = _grid(pytester)
    grid.write_text(grid.read_text().replace("widths = [16, 32]", "widths = [32, 16]"))
    result = pytester.runpytest("grids/tiny.toml", "--mupcheck-store", "store", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "grids/tiny.toml: `widths`: must be strictly increasing" in out and "Traceback" not in out


def test_trains_missing_runs_then_judges_and_xdist_agrees(pytester):
    """Real training: one process and two xdist workers give the same verdicts; one report."""
    _grid(pytester)
    single = pytester.runpytest("grids/", "-v", "--mupcheck-store", "s1", "--mupcheck-reports", "r1",
                                "-p", "no:cacheprovider")
    assert "24/24 runs (24 trained, 0 reused, 0 diverged)" in single.stderr.str() + single.stdout.str()
    parallel = pytester.runpytest("grids/", "-v", "-n", "2", "--mupcheck-store", "s2", "--mupcheck-reports", "r2",
                                  "--mupcheck-progress", "0.5", "-p", "no:cacheprovider")
    assert re.search(r"mupcheck: runs in the store: tiny \d+/24", parallel.stdout.str())  # progress under xdist
    assert _outcomes(single) and _outcomes(single) == _outcomes(parallel)
    assert len(list((pytester.path / "s2" / "runs").glob("*.json"))) == 24
    assert parallel.stdout.str().count("mupcheck report: ") == 1
    assert [p.name for p in (pytester.path / "r2").glob("*.md")] == ["tiny.md"]
    assert "24 trained, 0 reused" in (pytester.path / "r2" / "tiny.md").read_text()


def test_xdist_workers_split_a_grid_of_one_group(pytester):
    """Eight runs that form one batched group, on two xdist workers: the group is split in halves, one per
    worker, never trained as one group of eight. A worker that starts late (a loaded machine) finds the other's
    half held and splits what is left into smaller pieces, down to a run alone: so the test asserts the halves
    and that batching happened, not that every run was batched."""
    grid = _grid(pytester, extra='parametrization = ["mup"]\n', lrs="[-9, -8, -7, -6]", seeds="[0]")
    grid.write_text(grid.read_text().replace('parametrization = ["mup", "sp"]\n', "")
                    .replace("widths = [16, 32]", "widths = [16]").replace("tokens = [2048]", "tokens = [2048, 4096]"))
    result = pytester.runpytest("grids/", "-n", "2", "--mupcheck-store", "s", "--mupcheck-fuse", "8",
                                "--mupcheck-no-report", "-p", "no:cacheprovider")
    assert result.ret in (0, 5), result.stdout.str()  # 5: every verdict skipped (inconclusive) is fine here
    plan = plan_grid(load_grid(grid))
    store = Store(pytester.path / "s")
    results = [store.load(plan.key(c)).result for c in plan.configs]
    members = [r.fused.members if r.engine == "fused" else 1 for r in results]
    assert max(members) == 4 and members.count(4) >= 4, members


def test_the_report_counts_refinement_runs_among_those_trained_this_session(pytester):
    """Real training of a refined grid: the report's tally covers the refinement phase too (it once counted
    the coarse runs only: '105 trained' of a 195-run study)."""
    _grid(pytester, extra='[refine]\nstep_log2 = 0.5\nspan_log2 = 1.0\n', lrs=LR5, seeds="[0]")
    args = ["grids/tiny.toml", "--mupcheck-store", "store", "--mupcheck-reports", "out", "-p", "no:cacheprovider"]
    pytester.runpytest(*args)
    runs = len(list((pytester.path / "store" / "runs").glob("*.json")))
    assert runs > 20  # 20 coarse runs, and refinement runs beside them
    report = (pytester.path / "out" / "tiny.md").read_text()
    assert f"{runs} runs." in report and f"{runs} trained, 0 reused from the store" in report
    pytester.runpytest(*args)
    assert f"0 trained, {runs} reused from the store" in (pytester.path / "out" / "tiny.md").read_text()


def test_a_run_stored_just_before_the_session_is_not_counted_as_trained_in_it(tmp_path):
    """Record dates are whole seconds: a run stored in the second a session starts (the previous session's
    last) was counted as trained by the new one, which made the test above flaky under load."""
    import os
    import time

    import pandas as pd

    from mupcheck.outputs.suite import _trained_since

    store = Store(tmp_path / "store")
    store.save_result("a" * 16, {}, fake_result())
    store.save_result("b" * 16, {}, fake_result())
    started = time.time()
    # The files' times are set, not waited for: the kernel stamps a file with a coarse clock (a few ms
    # behind time.time()), so a file written right after `started` could carry an earlier time.
    os.utime(store.path("a" * 16), (started - 0.01, started - 0.01))  # stored 10 ms before the session began
    os.utime(store.path("b" * 16), (started + 0.01, started + 0.01))
    frame = pd.DataFrame({"key": ["a" * 16, "b" * 16]})
    assert _trained_since(frame, store, started) == "1 trained, 1 reused from the store"


def test_a_cuda_grid_is_skipped_with_its_reason_where_there_is_no_gpu(pytester, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # in-process run: same on any machine
    path = _grid(pytester)
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    result = pytester.runpytest_inprocess("grids/tiny.toml", "-rs", "--mupcheck-store", "store",
                                          "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=6)
    assert "tiny.toml trains on 'cuda', and torch sees no CUDA device here" in result.stdout.str()
    runs = pytester.path / "store" / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # nothing trained


def test_a_partial_store_judges_the_complete_cells_and_lists_the_rest(pytester):
    """--mupcheck-no-train on a partly trained grid (issues 35 and 38): the cells whose runs are all in are judged,
    a check that needs a cell with runs missing is inconclusive and says which, the report lists the missing
    cells, and the exit status says it: 0 (skips), 1 under --mupcheck-inconclusive=fail, a gate's choice."""
    grid = _grid(pytester, lrs=LR5)
    _fill_store(grid, pytester.path / "store", lambda par, w, t: -7.0 if par == "mup" else -7.0 - (w == 32) * 2.0)
    plan = plan_grid(load_grid(grid))
    store = Store(pytester.path / "store")
    removed = [c for c in plan.configs if c.parametrization == "sp" and c.width == 32 and c.lr_log2 > -4]
    for cfg in removed:
        store.path(plan.key(cfg)).unlink()
    args = ["grids/tiny.toml", "-v", "-rs", "--mupcheck-store", "store", "--mupcheck-no-train", "--mupcheck-reports",
            "out", "-p", "no:cacheprovider"]
    result = pytester.runpytest(*args)
    outcomes = _outcomes(result)
    assert outcomes["width[mup tokens=2K 16->32]"] == "PASSED"
    assert outcomes["width[sp tokens=2K 16->32]"] == "SKIPPED"
    out = result.stdout.str()
    assert f"runs missing from the store in sp width=32 tokens=2K ({len(removed)} run(s))" in out
    assert result.ret == 0
    report = (pytester.path / "out" / "tiny.md").read_text()
    assert "## Missing runs" in report and f"| sp width=32 tokens=2K | {len(removed)} |" in report
    assert pytester.runpytest(*args, "--mupcheck-inconclusive=fail").ret == 1


def test_a_borderline_pass_passes_and_says_so_in_a_warning(pytester):
    """Issue 41: a verdict whose deciding bound lies within 0.05 log2 of its band's edge stands, and is marked.
    Three seeds move the wider cell's optimum by +0.10, +0.12 and +0.14 log2: the shift's interval is +0.07 ..
    +0.17 (Student's t, 2 degrees of freedom), 0.03 inside a fixed band of +-0.2."""
    rows = ["width,lr_log2,seed,loss"]
    for width, moves in ((32, (0.0, 0.0, 0.0)), (64, (0.10, 0.12, 0.14))):
        for seed, move in enumerate(moves):
            for k in range(25):
                x = -10.0 + 0.25 * k
                rows.append(f"{width},{x},{seed},{3.0 + 0.05 * (x - (-7.0 + move)) ** 2}")
    (pytester.path / "runs.csv").write_text("\n".join(rows) + "\n")
    (pytester.path / "edge.toml").write_text('name = "edge"\nresults = "runs.csv"\nparametrization = "mup"\n'
                                             "[transfer]\ntolerance_log2 = 0.2\n")
    result = pytester.runpytest("edge.toml", "-v", "--mupcheck-no-report", "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert _outcomes(result)["width[mup 32->64]"] == "PASSED", out
    assert "BorderlineVerdict" in out and "borderline: the shift's interval ends 0.03 log2 inside" in out
