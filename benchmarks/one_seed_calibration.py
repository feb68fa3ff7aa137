"""Calibrate one-seed verdicts on this project's own 5-seed studies (issue 41).

Each committed study with five seeds per cell (reports/<name>.store) is cut into five one-seed sweeps: one seed,
the grid's own coarse rates only (no refinement), as a team that runs one seed at scale would have it. Every
transfer comparison of the grid is judged on each one-seed sweep, with the noise model a one-seed sweep gets,
and its 95% interval of the shift is checked against the shift the five seeds measure (paired, refined rates):

- coverage: the share of one-seed intervals that contain the 5-seed shift (goal: >= 93% overall, >= 85% in
  every study);
- contradictions: a one-seed *transfers* whose interval misses the 5-seed shift, or whose outcome the 5-seed
  verdict contradicts (*breaks*); a one-seed *breaks* where five seeds say *transfers*.

    python benchmarks/one_seed_calibration.py            # prints the table, writes benchmarks/results/...json
    python benchmarks/one_seed_calibration.py --quiet    # the JSON only

The numbers depend only on the committed records and the code, not on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mupcheck.analysis.noise import noise_model  # noqa: E402
from mupcheck.analysis.optima import find_optima  # noqa: E402
from mupcheck.analysis.transfer import judge  # noqa: E402
from mupcheck.outputs.verdicts import GridSuite  # noqa: E402
from mupcheck.plan import plan_grid  # noqa: E402
from mupcheck.spec import load_grid  # noqa: E402
from mupcheck.store import Store  # noqa: E402

__all__ = ["Case", "calibrate", "studies"]

GOAL_OVERALL, GOAL_STUDY = 0.93, 0.85


@dataclass(frozen=True)
class Case:
    """One comparison judged on one seed's coarse sweep, against the five seeds' shift."""

    study: str
    check: str
    seed: int
    truth: float  # the 5-seed paired shift (log2)
    truth_outcome: str
    shift: float
    interval: tuple[float, float] | None
    outcome: str
    noise: str

    @property
    def covered(self) -> bool | None:
        if self.interval is None or not math.isfinite(self.truth):
            return None
        return self.interval[0] <= self.truth <= self.interval[1]

    @property
    def contradicted(self) -> bool:
        """A decisive one-seed verdict that the five seeds contradict."""
        if self.outcome == "transfers":
            return self.covered is False or self.truth_outcome == "breaks"
        if self.outcome == "breaks":
            return self.truth_outcome == "transfers"
        return False


# The studies whose seeds measure the truth a one-seed sweep is checked against.
MIN_SEEDS = 5


def studies(root: Path = ROOT) -> list[str]:
    """The committed studies with MIN_SEEDS seeds per cell or more, trained by mupcheck's own engine, and their
    records beside them."""
    out = []
    for store in sorted((root / "reports").glob("*.store")):
        grid = load_grid(root / "grids" / f"{store.name[:-len('.store')]}.toml")
        if len(grid.seeds) >= MIN_SEEDS and grid.trainer is None:
            out.append(grid.name)
    return out


def calibrate(name: str, root: Path = ROOT) -> list[Case]:
    grid = load_grid(root / "grids" / f"{name}.toml")
    suite = GridSuite(plan_grid(grid, "cpu"), Store(root / "reports" / f"{name}.store"))
    df = suite.df
    coarse = df[df["lr_log2"].isin([float(v) for v in grid.lr_log2])]
    if grid.sweep:
        coarse = coarse[coarse["sweep_log2"].isin([float(v) for v in grid.sweep_log2])]
    cases = []
    for check_id, five in suite.verdicts.items():
        if suite.planned[check_id].kind != "transfer":
            continue
        comp = five.comparison
        for seed in grid.seeds:
            one = coarse[coarse["seed"] == seed]
            optima = find_optima(one, grid.stability.boundary_rise, grid.tuned)
            noise = noise_model(optima, comp.parametrization, grid.noise)
            v = judge(comp, optima, grid.transfer, noise=noise)
            cases.append(Case(name, check_id, seed, five.shift, five.outcome, v.shift, v.interval, v.outcome,
                              v.noise))
    return cases


def summary(cases: list[Case]) -> dict:
    judged = [c for c in cases if c.covered is not None]
    outcomes = Counter(c.outcome for c in cases)
    halves = sorted((c.interval[1] - c.interval[0]) / 2 for c in judged if c.interval is not None)
    return {"comparisons": len(cases), "with_interval": len(judged),
            "coverage": sum(bool(c.covered) for c in judged) / len(judged) if judged else math.nan,
            "median_half_width": halves[len(halves) // 2] if halves else math.nan,
            "outcomes": dict(outcomes),
            "contradicted": sum(c.contradicted for c in cases),
            "transfers_missing_truth": sum(c.outcome == "transfers" and c.covered is False for c in cases)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/<date>-one-seed.json)")
    args = parser.parse_args()
    start = time.perf_counter()
    by_study = {name: calibrate(name) for name in studies()}
    every = [c for cases in by_study.values() for c in cases]
    result = {"overall": summary(every), "studies": {n: summary(c) for n, c in by_study.items()},
              "goals": {"coverage_overall": GOAL_OVERALL, "coverage_every_study": GOAL_STUDY,
                        "transfers_missing_truth": 0},
              "seconds": round(time.perf_counter() - start, 1)}
    if not args.quiet:
        for n, s in [*result["studies"].items(), ("overall", result["overall"])]:
            print(f"{n:24s} {s['with_interval']:4d}/{s['comparisons']:<4d} coverage {100 * s['coverage']:5.1f}%  "
                  f"contradicted {s['contradicted']:3d}  transfers missing the truth {s['transfers_missing_truth']:3d}"
                  f"  median half-width {s['median_half_width']:.2f}  {s['outcomes']}")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d')}-one-seed.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
