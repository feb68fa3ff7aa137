"""Command line: `mupcheck run grids/X.toml` trains every run of a grid that the store lacks.

    mupcheck run grids/smoke.toml                      # progress bar, summary at the end
    mupcheck run grids/cpu_width.toml --workers 2      # two processes share the sweep
    mupcheck run grids/X.toml --store /data/mupcheck --device cuda
    mupcheck run grids/gpu_reference.toml --workers 8  # 8 GPUs: one worker per GPU, fused lr sweeps
    mupcheck plan grids/X.toml                         # runs, tokens, estimated time: before training

User mistakes (a malformed grid, a missing data file, an unimportable model) print one message
naming the file and the field, and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mupcheck
from mupcheck.analysis.comparison import reference_value
from mupcheck.analysis.drift import PUBLISHED, fit_drift, predict
from mupcheck.analysis.scaling import predict_scaling
from mupcheck.checks.coord import check_model, slope_table
from mupcheck.collect import collect
from mupcheck.engine.data import load_data
from mupcheck.errors import GridError, MupcheckError
from mupcheck.fmt import format_tokens, parse_count, plural
from mupcheck.outputs.plots import plot_coords
from mupcheck.outputs.report import write_report
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.plan import estimate_cost, plan_grid, refinement_advice, repeated_data_warning
from mupcheck.provenance import utc_now
from mupcheck.sources.files import runs_table, write_results
from mupcheck.spec import (
    BACKENDS,
    PARAMETRIZATIONS,
    SETTINGS_KEYS,
    CoordCheckConfig,
    Grid,
    RunSettings,
    coord_widths,
    load_grid,
    parse_grid,
)
from mupcheck.store import STORE_ENV, Store
from mupcheck.sweep.local import run_grid

__all__ = ["main"]


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", default=None,
                   help=f"result store directory (default: ${STORE_ENV}, else ./.mupcheck)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mupcheck", description="Does your learning rate transfer under muP?")
    parser.add_argument("--version", action="version", version=f"mupcheck {mupcheck.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="what a grid costs before it trains: runs, tokens, FLOPs, estimated time "
                                       "on CPU and on a GPU")
    plan.add_argument("grid", help="grid file, e.g. grids/cpu_depth.toml")
    _add_store(plan)
    _add_slice(plan)
    plan.set_defaults(func=_cmd_plan)

    run = sub.add_parser("run", help="train every run of a grid that the store does not hold yet")
    run.add_argument("grid", help="grid file, e.g. grids/smoke.toml")
    _add_store(run)
    run.add_argument("--workers", type=int, default=0, metavar="N",
                     help="parallel training processes (default 0: one per core on CPU, where each run trains "
                          "on one thread; one on CUDA)")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: the grid's `device`)")
    run.add_argument("--fuse", type=int, default=None, metavar="N",
                     help="train up to N runs that differ only in lr, seed and tokens as one batched model "
                          "(default: the grid's `fuse`: 32 on CUDA, 1 on CPU; 1: one at a time)")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="torch.compile fused training, or not (default: the grid's `compile`)")
    run.add_argument("--backend", choices=BACKENDS, default=None,
                     help="local: processes on this machine; ray: one Ray task per fused group (default: the "
                          "grid's `backend`)")
    run.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster for this run)")
    run.add_argument("--gpus", default=None, metavar="IDS",
                     help="a [trainer]'s runs on GPUs: one worker per GPU (0,1 or all; runs_per_gpu share one), each "
                          "run with CUDA_VISIBLE_DEVICES set to its GPU")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_slice(run)
    run.add_argument("--no-refine", action="store_true",
                     help="train the coarse runs only; a later run without it adds the grid's [refine] stage")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="write reports/<grid>.md from the store, without training")
    report.add_argument("grid", help="grid file, e.g. grids/cpu_width.toml")
    _add_store(report)
    report.add_argument("--out", metavar="DIR", default="reports", help="report directory (default: reports)")
    report.add_argument("--device", default=None, help="device the runs were trained on (default: the grid's)")
    report.add_argument("--json", action="store_true", help="also write reports/<grid>.json (the schema: README)")
    report.add_argument("--changes", metavar="FILE", default=None,
                        help="a markdown file whose text becomes the report's 'What changed' section (for a report "
                             "regenerated after a change of method)")
    report.add_argument("--inconclusive", choices=("skip", "fail"), default="skip",
                        help="exit 1 when a check is inconclusive too (fail), as pytest's --mupcheck-inconclusive")
    report.set_defaults(func=_cmd_report)

    coord = sub.add_parser("coord-check", help="is the muP implementation right? coordinate check + muP lint")
    coord.add_argument("--model", default=None, help="gpt, mlp, or package.module:build (importable from here)")
    coord.add_argument("--grid", default=None, metavar="GRID",
                       help="instead of --model: a grid with a [trainer], whose own training step is checked (its "
                            "runs at the [coord_check] rate are trained first where the store lacks them)")
    _add_store(coord)
    coord.add_argument("--device", default=None, help="with --grid: the device the runs were trained on")
    coord.add_argument("--widths", default="64,128,256,512",
                       help="comma-separated, spanning >= 8x (default %(default)s)")
    coord.add_argument("--parametrization", choices=list(PARAMETRIZATIONS), default="mup",
                       help="mup (mupcheck applies mup), custom (your model applies muP itself), sp")
    coord.add_argument("--steps", type=int, default=4, help="training steps on one fixed batch (default %(default)s)")
    coord.add_argument("--seeds", type=int, default=CoordCheckConfig.seeds,
                       help="seeds averaged per width (default %(default)s)")
    coord.add_argument("--lr-log2", type=float, default=CoordCheckConfig.lr_log2,
                       help="log2 learning rate (default %(default)s)")
    coord.add_argument("--optimizer", default=RunSettings.optimizer,
                       help="adamw, sgd, or your model's own: package.module:make_optimizer, called as "
                            "make_optimizer(model, lr, weight_decay)")
    coord.add_argument("--depth", type=int, default=2)
    coord.add_argument("--head-dim", type=int, default=16, help="gpt: fixed head size (heads grow with width)")
    coord.add_argument("--n-heads", type=int, default=0, help="gpt: fix the number of heads instead (head_dim grows)")
    coord.add_argument("--batch-size", type=int, default=8)
    coord.add_argument("--seq-len", type=int, default=64)
    coord.add_argument("--data", default=RunSettings.data, help="data source, as a grid's `data` (default %(default)s)")
    coord.add_argument("--plot", default=None, metavar="PNG",
                       help="where to write the log-log plot "
                            "(default reports/coord_check/<model>-<parametrization>.png)")
    coord.set_defaults(func=_cmd_coord_check)

    export = sub.add_parser("export", help="write a grid's runs as a results table (CSV, JSONL, Parquet) that "
                                           "another grid can read with `results = ...`")
    export.add_argument("grid", help="grid file whose runs are in the store")
    _add_store(export)
    export.add_argument("--out", metavar="FILE", required=True, help="runs.csv, runs.jsonl or runs.parquet")
    export.add_argument("--device", default=None, help="device the runs were trained on (default: the grid's)")
    export.set_defaults(func=_cmd_export)

    pred = sub.add_parser("predict", help="predict the optimal learning rate at a width (or parameter count) and "
                                          "token budget")
    pred.add_argument("grid", help="a grid whose runs vary tokens (trained into the store, or read from results)")
    pred.add_argument("--width", type=int, default=None, help="the drift law's width (grids that vary width and "
                                                              "tokens)")
    pred.add_argument("--params", type=_count, default=None, metavar="N",
                      help="a parameter count for the scaling law (a size ladder, or results with `params`), e.g. 7e9")
    pred.add_argument("--tokens", type=_count, required=True,
                      help="token budget: 100e9, 4B, 11.4B (decimal), or 1M, 128K (binary, as grids print them)")
    pred.add_argument("--batch", type=_count, default=None, metavar="B",
                      help="batch size, where the scaling law has a term in it")
    pred.add_argument("--parametrization", choices=list(PARAMETRIZATIONS), default="mup")
    _add_store(pred)
    pred.add_argument("--device", default=None, help="device the runs were trained on (default: the grid's)")
    pred.set_defaults(func=_cmd_predict)
    return parser


def _cmd_plan(args: argparse.Namespace) -> int:

    grid = load_grid(args.grid)
    if grid.results is not None:
        raise MupcheckError(f"{args.grid} reads results trained elsewhere ({grid.results.described}): nothing to train")
    grid, sliced = _slice(grid, args)
    if sliced:
        print(f"{grid.name}{sliced}:")
    plan = plan_grid(grid, "cpu")
    store = Store.open(args.store) if args.store or os.environ.get(STORE_ENV) else None
    estimate = estimate_cost(plan, store)
    for line in estimate.lines():
        if grid.trainer is None or not line.lstrip().startswith(("GPU", "batching")):  # a trainer is never batched
            print(line)
    if grid.trainer is not None:
        print(f"  trainer: {grid.trainer.command or grid.trainer.python}, one process per run; the times above are "
              "the built-in GPT's at the same width and depth, not your trainer's")
    else:
        print(f"  data: {plan.data.description}, {len(plan.data.train):,} training tokens on this machine")
    warning = repeated_data_warning(plan) if grid.trainer is None else None
    if warning:
        print(f"  {warning}")
    if grid.model not in ("gpt", "mlp") and grid.trainer is None:
        print("  note: FLOPs per token are those of the built-in GPT of the same width and depth; your model's may "
              "differ, and so may the times")
    held = sum(store.path(plan.key(c)).exists() for c in plan.configs) if store is not None else 0
    if held:
        print(f"  the store {store.root} already holds {held} of the {len(plan.configs)} runs")  # type: ignore[union-attr]
    return 0


def _cmd_run(args: argparse.Namespace) -> int:

    if args.workers < 0:
        raise MupcheckError(f"--workers must be >= 0 (0: automatic), got {args.workers}")
    if args.fuse is not None and args.fuse < 1:
        raise MupcheckError(f"--fuse must be >= 1, got {args.fuse}")
    grid = load_grid(args.grid)
    if grid.results is not None:
        raise MupcheckError(f"{args.grid} reads results trained elsewhere ({grid.results.described}): nothing to "
                            "train; judge them with `mupcheck report` or `pytest`")
    grid, sliced = _slice(grid, args)
    store = Store.open(args.store)
    coarse = " (coarse runs only)" if args.no_refine and grid.refine else ""
    print(f"grid {args.grid}: {grid.name}{sliced}{coarse}, store {store.root}", file=sys.stderr)
    summary = run_grid(grid, store, device=args.device, workers=args.workers, show_progress=not args.no_progress,
                       fuse=args.fuse, compile=args.compile, backend=args.backend, ray_address=args.ray_address,
                       refine=not args.no_refine, gpus=args.gpus)
    print(summary.line())
    if summary.interrupted:
        print("rerun the same command to resume: finished runs are kept", file=sys.stderr)
        return 130
    return 0


def _add_slice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=_count, nargs="+", default=None, metavar="T",
                        help="only these of the grid's budgets (1M 16M): a slice that answers first; its runs are "
                             "the grid's own, so the whole grid reuses them")
    parser.add_argument("--widths", type=int, nargs="+", default=None, metavar="W",
                        help="only these of the grid's widths (as --tokens)")


def _slice(grid: Grid, args: argparse.Namespace) -> tuple[Grid, str]:
    """The grid cut to the budgets and widths `--tokens` and `--widths` name (each must be one of the grid's),
    and how the progress line names the slice ("" for the whole grid)."""
    parts: list[str] = []
    changes: dict[str, Any] = {}
    for axis, given in (("tokens", args.tokens), ("widths", args.widths)):
        if given is None:
            continue
        values = getattr(grid, axis)
        shown: Callable[[int], str] = format_tokens if axis == "tokens" else str
        wanted = [int(round(v)) for v in given]
        unknown = [v for v in wanted if v not in values]
        if unknown:
            raise MupcheckError(f"--{axis} {', '.join(map(shown, unknown))}: not in the grid's {axis} "
                                f"({', '.join(map(shown, values))})")
        changes[axis] = tuple(v for v in values if v in wanted)
        parts.append(f"{axis} {', '.join(map(shown, changes[axis]))}")
    if not changes:
        return grid, ""
    return dataclasses.replace(grid, **changes), f" (only {'; '.join(parts)})"


def _cmd_report(args: argparse.Namespace) -> int:

    start = time.perf_counter()
    grid = load_grid(args.grid)
    out = Path(args.out)
    extra = {
        "command": "`" + " ".join(["mupcheck", *args.argv]) + "` (from the store; no training)",
        "report written": utc_now(),
    }
    changes = ""
    if args.changes:
        try:
            changes = Path(args.changes).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MupcheckError(f"--changes {args.changes}: cannot read it: {e}") from None
    if grid.imported:
        extra["command"] = "`" + " ".join(["mupcheck", *args.argv]) + "` (from the results files)"
        suite = GridSuite(grid)
    else:
        suite = GridSuite(plan_grid(grid, args.device), Store.open(args.store))
    path = write_report(suite, out, extra, changes, as_json=args.json)
    written = f"{path} and {path.with_suffix('.json')}" if args.json else str(path)
    print(f"wrote {written} in {time.perf_counter() - start:.1f} s")
    if suite.missing:
        print(f"mupcheck: {args.grid}: {sum(n for _, n in suite.missing)} run(s) of {len(suite.missing)} cell(s) are "
              "not in the store; the report judges the other cells and lists these (train them with mupcheck run)",
              file=sys.stderr)
    for line in refinement_advice(grid, suite.df) if grid.imported else []:
        print(f"run next: {line}", file=sys.stderr)
    return _report_status(suite, args.inconclusive)


def _report_status(suite: GridSuite, inconclusive: str) -> int:
    """The exit status pytest gives the same grid, with a last line that says why: 1 when a check fails (an
    expected break that did not happen too; with --inconclusive fail, an inconclusive check too), else 0."""
    outcomes = [o.outcome for o in suite.outcomes()]
    failed = sum(o in ("fail", "xpass") for o in outcomes)
    undecided = outcomes.count("inconclusive")
    strict = inconclusive == "fail" and undecided
    print(f"{plural(failed, 'check')} of {len(outcomes)} failed, {undecided} inconclusive"
          + ("" if inconclusive == "fail" else " (not failures: --inconclusive fail counts them)"))
    return 1 if failed or strict else 0


def _coord_grid(args: argparse.Namespace) -> Grid:
    """The command line as a one-cell grid, so that it is validated like a grid file."""
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise MupcheckError(f"--widths must be comma-separated integers, got {args.widths!r}") from None
    raw = {
        "name": "coord-check", "model": args.model, "widths": widths, "base_width": widths[0],
        "parametrization": [args.parametrization], "depth": args.depth, "head_dim": args.head_dim,
        "n_heads": args.n_heads, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "tokens": [10 * args.batch_size * args.seq_len], "lr_log2": [args.lr_log2], "optimizer": args.optimizer,
        "data": args.data, "device": "cpu",
        "coord_check": {"steps": args.steps, "seeds": args.seeds, "lr_log2": args.lr_log2,
                        "parametrization": [args.parametrization]},
    }
    if args.parametrization == "sp" and ":" in args.model:
        raw["model"] = {"mup": args.model, "sp": args.model}  # the factory given is the SP model itself
    try:
        return parse_grid(raw, "command line")
    except GridError as e:
        # Name the flag the user typed, not the grid key it became.
        key = (e.key or "").removeprefix("coord_check.")
        flag = "--" + key.replace("_", "-") if key else "the command line"
        message = e.message.replace("set [coord_check] widths", f"give {flag} a wider span")
        raise MupcheckError(f"{flag}: {message}") from None


def _cmd_coord_check(args: argparse.Namespace) -> int:
    if args.grid:
        return _coord_check_trainer(args)
    if not args.model:
        raise MupcheckError("coord-check needs --model (a model to build) or --grid (a grid with a [trainer])")
    grid = _coord_grid(args)
    data = load_data(grid.data, Path.cwd(), grid.vocab_size)
    print(f"coordinate check of {args.model} ({args.parametrization}) at widths {args.widths}, "
          f"{args.steps} steps of {args.optimizer} at lr 2^{args.lr_log2:g}", file=sys.stderr)
    result = check_model(grid, args.parametrization, data)
    table = slope_table(result.data)
    print("slopes of log2(mean |x|) per doubling of width (0: width-independent, as muP wants)")
    print(table.to_string(index=False, float_format=lambda x: f"{x:+.2f}"))
    plot = Path(args.plot or f"reports/coord_check/{args.model.replace(':', '-')}-{args.parametrization}.png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_coords(result.data, plot, title=f"{args.model} {args.parametrization}")
    print(f"plot: {plot}")
    print(result.message())
    return 0 if result.passed else 1


def _coord_check_trainer(args: argparse.Namespace) -> int:
    """The coordinate check of a trainer's own training step (mupcheck.watch in it): the runs it needs, the
    [coord_check] rate's first seed and budget at every [coord_check] width, trained where missing, then judged."""
    grid = load_grid(args.grid)
    if grid.trainer is None or grid.coord_check is None:
        raise MupcheckError(f"{args.grid}: --grid needs a grid with a [trainer] and a [coord_check] table")
    store = Store.open(args.store)
    arm, target = grid.mup_arm or grid.parametrization[0], grid.coord_check.lr_log2
    rate = min(grid.rates_of(arm), key=lambda x: abs(x - target))
    needed = dataclasses.replace(grid, widths=coord_widths(grid), lr_log2=(rate,), seeds=grid.seeds[:1],
                                 tokens=grid.tokens[:1], parametrization=(arm,), refine=None)
    run_grid(needed, store, device=args.device, show_progress=True)
    result = GridSuite(plan_grid(needed, args.device), store).coord(arm)
    if len(result.data):
        print("slopes of log2(mean |x|) per doubling of width (0: width-independent, as muP wants)")
        print(slope_table(result.data).to_string(index=False, float_format=lambda x: f"{x:+.2f}"))
    print(result.message())
    return 0 if result.passed else 1


def _cmd_export(args: argparse.Namespace) -> int:
    grid = load_grid(args.grid)
    if grid.imported:
        raise MupcheckError(f"{args.grid} reads results already; copy its files instead")
    store = Store.open(args.store)
    df = collect(plan_grid(grid, args.device), store)  # every run of the grid, refinement runs included
    records = [store.load(key) for key in df["key"]]
    try:
        path = write_results(runs_table([r for r in records if r is not None], SETTINGS_KEYS), args.out)
    except OSError as e:
        raise MupcheckError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {len(df)} runs to {path}")
    return 0


def _count(text: str) -> float:
    """An argparse type: a count written as grids and scaling studies write it (fmt.parse_count)."""
    try:
        return parse_count(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cmd_predict(args: argparse.Namespace) -> int:

    if args.width is not None and args.width < 1:
        raise MupcheckError("--width must be positive")
    grid = load_grid(args.grid)
    if args.parametrization not in grid.parametrization:
        raise MupcheckError(f"{args.grid} has no {args.parametrization} runs "
                            f"(parametrization = {grid.parametrization})")
    if len(grid.rates_of(args.parametrization)) < 2:
        tuned = f" (it tunes {grid.sweep}: the report and its JSON give that optimum)" if grid.sweep else ""
        raise MupcheckError(f"{args.grid}: `lr_log2` has one value for {args.parametrization}; predict predicts "
                            f"the optimal learning rate, and needs a sweep of it{tuned}")
    suite = GridSuite(grid) if grid.imported else GridSuite(plan_grid(grid, args.device), Store.open(args.store))
    if args.params is not None or (suite.has_scaling and args.width is None):
        return _predict_scaling(args, suite)
    if args.width is None:
        raise MupcheckError(f"{args.grid}: give --width (the drift law along width and tokens), or --params for the "
                            "scaling law (a size ladder, or results with a `params` column)")
    if len(grid.tokens) < 2:
        raise MupcheckError(f"{args.grid}: `tokens` has one budget; a prediction along tokens needs two or more")
    depth, batch = reference_value(grid, "depth"), reference_value(grid, "batch_size")
    if len(grid.values("depth")) > 1 or len(grid.values("batch_size")) > 1:
        print(f"  at the reference depth {depth} and batch size {batch} (the grid sweeps them)")
    df = suite.df[(suite.df["depth"] == depth) & (suite.df["batch_size"] == batch)]
    fit = fit_drift(df, args.parametrization)
    if fit is None:
        raise MupcheckError(f"{args.grid}: no width has an optimum at two token budgets; nothing to fit")
    try:
        prediction = predict(fit, args.width, args.tokens)
    except ValueError as e:
        raise MupcheckError(f"{args.grid}: {e}") from None
    print(prediction.describe())
    print(f"  {PUBLISHED}")
    return 0


def _predict_scaling(args: argparse.Namespace, suite: GridSuite) -> int:
    """`predict --params N --tokens D [--batch B]`: the published scaling law at a target."""
    if not suite.has_scaling:
        raise MupcheckError(f"{args.grid}: --params needs a scaling law: a size ladder (width and depth grown "
                            "together) or results with a `params` column")
    law = suite.scaling(args.parametrization)
    if law is None:
        raise MupcheckError(f"{args.grid}: too few located optima to fit the scaling law for {args.parametrization}")
    if args.params is None:
        raise MupcheckError(f"{args.grid}: the scaling law predicts at a parameter count: give --params N")
    try:
        prediction = predict_scaling(law, args.params, args.tokens, args.batch)
    except ValueError as e:
        raise MupcheckError(f"{args.grid}: {e} (--batch)" if "batch" in str(e) else f"{args.grid}: {e}") from None
    print(prediction.describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    # User model factories ("package.module:build") are imported from the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for provenance
    stdout = sys.stdout
    sys.stdout = _PipeSafe(stdout)
    try:
        return args.func(args)
    except MupcheckError as e:
        print(f"mupcheck: error: {e}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout


class _PipeSafe:
    """stdout that survives its reader leaving (`mupcheck coord-check ... | head -1`): the rest of the output
    is dropped, and the command still returns its own status, so a failing check stays non-zero under
    `set -o pipefail` (it used to exit 0 there)."""

    def __init__(self, stream: Any):
        self.stream, self.closed_by_reader = stream, False

    def write(self, text: str) -> int:
        if not self.closed_by_reader:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.closed_by_reader:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.closed_by_reader = True
        try:  # Python flushes stdout at exit, which would raise again: point the descriptor at /dev/null
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
