"""What shared runs save on CPU, measured in one run: a slice of each committed horizon grid trained twice, once
with every budget of a rate and seed sharing one run (`share_runs = true`, the default) and once with every
budget alone (`share_runs = false`), one process, one thread; then both stores judged.

    python benchmarks/shared_runs.py                     # writes benchmarks/results/<date>-shared-runs.json
    python benchmarks/shared_runs.py --rates -6 -5 --seeds 0 1 --repeats 1

For each grid: the wall time of each sweep (the fastest of `--repeats`, run in alternating order), their ratio
(issue 44's goals: constant at most 0.55x, WSD at most 0.65x), and whether the two stores hold the same numbers
(every record's losses and checkpoints, bit for bit) and give the same report (its verdicts, cells and laws).
The WSD row is the constant horizon grid with `schedule = "wsd"`: no WSD horizon grid is committed. The cosine
grid shares nothing (its schedule depends on the budget from the first step after warmup): its row shows the
ratio of 1 that the plan says, measured. Refinement is off in both sweeps: they are one sweep each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mupcheck.outputs.report import write_report  # noqa: E402
from mupcheck.outputs.verdicts import GridSuite  # noqa: E402
from mupcheck.plan import Plan, plan_grid  # noqa: E402
from mupcheck.provenance import git_commit, package_version, torch_version, utc_now  # noqa: E402
from mupcheck.spec import Grid, load_grid  # noqa: E402
from mupcheck.store import Store  # noqa: E402
from mupcheck.sweep.local import run_grid  # noqa: E402

GRIDS = {"constant": ("cpu_horizon_constant.toml", ""), "wsd": ("cpu_horizon_constant.toml", 'schedule = "wsd"\n'),
         "cosine": ("cpu_horizon_cosine.toml", "")}
# Report fields that say how and when a sweep ran, not what it found.
_HOW = {"provenance", "generated", "date", "wall_time_s", "store", "grid_path", "path", "command"}


def _slice(folder: Path, name: str, base: str, extra: str, rates: list[float], seeds: list[int], share: bool,
           grids: Path) -> Path:
    """A grid file that extends the committed one with fewer rates and seeds, sharing on or off."""
    path = folder / f"{name}_{'shared' if share else 'alone'}.toml"
    path.write_text(f'extends = "{(grids / base).resolve()}"\nname = "{name}"\nlr_log2 = {rates}\nseeds = {seeds}\n'
                    f"share_runs = {'true' if share else 'false'}\n{extra}")
    return path


def _grid(path: Path) -> Grid:
    """The slice's grid without `[refine]`: the benchmark compares one sweep with another, and a report of a
    refined grid would wait for rates that only a refinement round trains."""
    return dataclasses.replace(load_grid(path), refine=None)


def _numbers(store: Path, plan: Plan) -> dict[str, Any]:
    out = {}
    for cfg in plan.configs:
        record = Store(store).load(plan.key(cfg))
        assert record is not None, f"{cfg.label()} missing from {store}"
        r = record.result
        out[plan.key(cfg)] = (r.status, r.loss, r.train_loss, r.initial_loss, r.diverged_step, r.checkpoints)
    return out


def _findings(report: Path) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _HOW}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(json.loads(report.read_text()))


def measure(name: str, base: str, extra: str, rates: list[float], seeds: list[int], folder: Path,
            grids: Path, repeats: int = 2) -> dict[str, Any]:
    """One row: the slice swept with and without sharing, `repeats` times each in alternating order (neither
    mode always pays a process's first-run costs, nor always runs on a machine that has warmed up); each
    mode's time is the fastest of its repeats, the others are kept beside it."""
    row: dict[str, Any] = {"grid": name, "from": f"grids/{base}" + (f" with {extra.strip()}" if extra else "")}
    times: dict[str, list[float]] = {"shared": [], "alone": []}
    for r in range(repeats):
        for share in ((True, False) if r % 2 == 0 else (False, True)):
            mode = "shared" if share else "alone"
            grid = _grid(_slice(folder, name, base, extra, rates, seeds, share, grids))
            store = folder / f"{name}_{mode}_{r}"
            plan = plan_grid(grid)  # the corpus is read now, outside the timed sweep (then cached in the process)
            t0 = time.perf_counter()
            summary = run_grid(grid, Store(store), workers=1, show_progress=False, refine=False)
            times[mode].append(time.perf_counter() - t0)
            if r > 0:
                continue
            row["runs"] = summary.trained
            suite = GridSuite(plan, Store(store))
            report = write_report(suite, folder / f"reports_{mode}", {}, as_json=True)
            row[f"{mode}_missing"] = sum(n for _, n in suite.missing)  # runs the report waits for: none here
            row[f"{mode}_numbers"] = _numbers(store, plan)
            row[f"{mode}_report"] = _findings(report.with_suffix(".json"))
    for mode, measured in times.items():
        row[f"{mode}_s"], row[f"{mode}_each_s"] = min(measured), measured
    row["ratio"] = row["shared_s"] / row["alone_s"]
    row["same_numbers"] = row.pop("shared_numbers") == row.pop("alone_numbers")
    row["same_report"] = row.pop("shared_report") == row.pop("alone_report")
    return row


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[-6.0, -5.0, -4.0],
                        help="lr_log2 values of the slice (default: three around the horizon grids' optima)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--grids", default="constant wsd cosine", help="which rows: constant, wsd, cosine")
    parser.add_argument("--repeats", type=int, default=2, help="sweeps per mode and row; the fastest counts")
    parser.add_argument("--grid-dir", type=Path, default=ROOT / "grids")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.grids.split():
            base, extra = GRIDS[name]
            row = measure(f"horizon_{name}", base, extra, args.rates, args.seeds, Path(tmp), args.grid_dir,
                          args.repeats)
            print(f"{name}: {row['runs']} runs, shared {row['shared_s']:.1f} s, alone {row['alone_s']:.1f} s, "
                  f"ratio {row['ratio']:.3f}; same numbers: {row['same_numbers']}, same report: {row['same_report']}",
                  flush=True)
            rows.append(row)
    meta = {"command": "python benchmarks/shared_runs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rates": args.rates, "seeds": args.seeds, "repeats": args.repeats,
            "machine": f"{platform.processor() or platform.machine()}, {platform.node()}", "torch": torch_version(),
            "mup": package_version("mup"), "mupcheck_commit": git_commit(), "date": utc_now()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{utc_now()[:10].replace('-', '')}-shared-runs.json"
    path.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
