"""Command line: `mupcheck run grids/X.toml` trains every run of a grid that the store lacks.

    mupcheck run grids/smoke.toml                      # progress bar, summary at the end
    mupcheck run grids/cpu_width.toml --workers 2      # two processes share the sweep
    mupcheck run grids/X.toml --store /data/mupcheck --device cuda

User mistakes (a malformed grid, a missing data file, an unimportable model) print one message
naming the file and the field, and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mupcheck.errors import MupcheckError
from mupcheck.grid import load_grid
from mupcheck.store import STORE_ENV, Store

__all__ = ["main"]


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", default=None,
                   help=f"result store directory (default: ${STORE_ENV}, else ./.mupcheck)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mupcheck", description="Does your learning rate transfer under muP?")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train every run of a grid that the store does not hold yet")
    run.add_argument("grid", help="grid file, e.g. grids/smoke.toml")
    _add_store(run)
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="parallel training processes (default 1; on CPU, one per core is fastest)")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: the grid's `device`)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="write reports/<grid>.md from the store, without training")
    report.add_argument("grid", help="grid file, e.g. grids/cpu_width.toml")
    _add_store(report)
    report.add_argument("--out", metavar="DIR", default="reports", help="report directory (default: reports)")
    report.add_argument("--device", default=None, help="device the runs were trained on (default: the grid's)")
    report.set_defaults(func=_cmd_report)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from mupcheck.sweep import run_grid

    if args.workers < 1:
        raise MupcheckError(f"--workers must be >= 1, got {args.workers}")
    grid = load_grid(args.grid)
    store = Store.open(args.store)
    print(f"grid {args.grid}: {grid.name}, store {store.root}", file=sys.stderr)
    summary = run_grid(grid, store, device=args.device, workers=args.workers, show_progress=not args.no_progress)
    print(summary.line())
    if summary.interrupted:
        print("rerun the same command to resume: finished runs are kept", file=sys.stderr)
        return 130
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from mupcheck.report import write_report
    from mupcheck.sweep import plan_grid

    start = time.perf_counter()
    plan = plan_grid(load_grid(args.grid), args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {
        "command": f"`mupcheck report {args.grid}`",
        "report written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = write_report(plan, Store.open(args.store), out, extra)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    # User model factories ("package.module:build") are imported from the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MupcheckError as e:
        print(f"mupcheck: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
