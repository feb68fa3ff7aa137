"""Benchmark: solo vs fused training speed, and the wall time of the reference GPU grid.

    python benchmarks/fused_speed.py                       # on a GPU machine: the whole benchmark
    python benchmarks/fused_speed.py --skip-grid           # speed table only
    python benchmarks/fused_speed.py --grid-only --store runs/   # the reference grid only, its runs kept
    python benchmarks/fused_speed.py --device cpu --widths 32 --models 2 --steps 6 \\
        --grid tests/some_tiny_grid.toml                   # what the test suite runs, on CPU

For each width it trains the GPT proxy of `grids/gpu_reference.toml` (same depth, heads, batch,
sequence length, data) with the real engines: one run at a time (`train_run`, mode "solo") and
`--models` runs as one batched model (`train_fused`, mode "fused"). Throughput is the median step
time (steps after `--warmup-steps`; steps that evaluate or compile are outliers the median ignores)
turned into tokens/s over all members. MFU = tokens/s x training FLOPs per token / the dense matmul
rate this script measures on the same device (bf16 on CUDA, float32 on CPU; on CPU the yardstick is
rough, cache-resident small matmuls can beat it, and MFU there is not comparable), where FLOPs per token
= 6 x (matmul parameters) + 12 x depth x width x seq_len (attention scores and values; PaLM,
arXiv 2204.02311, appendix B).

Then it trains the reference grid into a fresh store (nothing reused), times it, and writes its
report to `reports/<grid name>.md` with this command, the device and the wall time as provenance.
The table is printed and saved as a JSON list of rows under `benchmarks/results/`.

On a machine with a per-command time limit (the device tool allows 10 minutes), run the speed table
and the grid as two commands, with `--out` and `--reports` pointing where files come back.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from mupcheck.engine.device import device_name, resolve_device
from mupcheck.engine.fused import FusedOutOfMemory, train_fused
from mupcheck.engine.solo import train_run
from mupcheck.errors import MupcheckError
from mupcheck.outputs.report import write_report
from mupcheck.outputs.verdicts import GridSuite
from mupcheck.plan import flops_per_token, plan_grid
from mupcheck.provenance import git_commit, utc_now
from mupcheck.result import RunResult
from mupcheck.spec import Grid, RunConfig, load_grid, run_configs
from mupcheck.store import Store
from mupcheck.sweep.local import fuse_size, run_grid

DEFAULT_GRID = ROOT / "grids" / "gpu_reference.toml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu (default auto)")
    p.add_argument("--grid", default=str(DEFAULT_GRID), help="reference grid (default grids/gpu_reference.toml)")
    p.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--models", type=int, default=32, help="members of the fused group (default 32)")
    p.add_argument("--steps", type=int, default=40, help="steps per timed run (default 40)")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the timing (default 5)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="also time fused training under torch.compile (auto: on CUDA only)")
    p.add_argument("--compile-widths", type=int, nargs="+", default=None, metavar="W",
                   help="widths at which compiled rows are timed (default: every width; compiling takes tens of "
                        "seconds each)")
    p.add_argument("--pool", type=int, default=None, metavar="N",
                   help="also time N solo training processes sharing the device, what a user does without a "
                        "batched engine (default 14 on CUDA, 0 elsewhere)")
    p.add_argument("--pool-width", type=int, default=128, help="width of the pool's runs (default 128)")
    p.add_argument("--pool-seconds", type=float, default=15.0, help="how long the pool is timed (default 15)")
    p.add_argument("--pool-worker", default=None, help=argparse.SUPPRESS)  # internal: one process of the pool
    p.add_argument("--skip-grid", action="store_true", help="speed table only; do not train the reference grid")
    p.add_argument("--grid-only", action="store_true", help="the reference grid only; no speed table")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="an empty or new store for the reference grid's runs, kept afterwards (default: a "
                        "temporary one); never a store that holds runs, or the wall time would not be the grid's")
    p.add_argument("--fuse", type=int, default=None, help="fuse size for the reference grid (default: the grid's)")
    p.add_argument("--grid-compile", choices=["grid", "on", "off"], default="grid",
                   help="train the reference grid under torch.compile (default: as the grid file says)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="directory for the JSON")
    p.add_argument("--reports", default=str(ROOT / "reports"), help="directory for the reference grid's report")
    return p.parse_args(argv)


# --- measuring -----------------------------------------------------------------------------------

def matmul_peak(device: torch.device) -> float:
    """Dense matmul FLOP/s measured here (bf16 8192^3 on CUDA, float32 2048^3 on CPU): the best of
    five timings, so that a noisy neighbour does not lower the yardstick and inflate MFU."""
    n, dtype, reps = (8192, torch.bfloat16, 20) if device.type == "cuda" else (2048, torch.float32, 4)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """A progress callback that timestamps every step; the median step time is the throughput."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, [time.perf_counter()]

    def __call__(self, step: int, steps: int) -> None:
        self.times.append(time.perf_counter())  # the engines synchronise each step (loss.item())

    def median_step_s(self, skip: int) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:])][skip:]
        if not gaps:
            raise RuntimeError(f"no timed steps ({len(self.times) - 1} steps ran; a run that diverges or stops "
                               "early is not timed): raise --steps above --warmup-steps, or lower the rate")
        return statistics.median(gaps)


def speed_rows(grid: Grid, args: argparse.Namespace, device: torch.device, peak: float) -> list[dict[str, Any]]:
    """One solo and one fused row per width."""
    data = plan_grid(grid, str(device)).data
    template = run_configs(grid)[0]
    rows = []
    for width in args.widths:
        # A rate low enough that nothing diverges; one evaluation sequence (evaluation is not timed).
        cfg = dataclasses.replace(template, width=width, tokens=args.steps * template.tokens_per_step,
                                  lr_log2=min(grid.lr_log2), eval_tokens=template.seq_len)
        # Members spread over a quarter octave: distinct runs, none diverging.
        members = [dataclasses.replace(cfg, lr_log2=cfg.lr_log2 + i / (4 * args.models)) for i in range(args.models)]
        compiled = [False, True] if _use_compile(args, device, width) else [False]
        for mode, compile in [("solo", False)] + [("fused", c) for c in compiled]:
            clock = StepClock(device)
            n = 1 if mode == "solo" else len(members)
            try:
                if mode == "solo":
                    result = train_run(cfg, data, device, progress=clock)
                    extra: dict[str, Any] = {}
                else:
                    results, n = _fused_fitting(members, data, device, clock, compile)
                    info = results[0].fused
                    extra = {"batched": info.batched if info else None, "canary": info.canary if info else None}
                    result = results[0]
                step_s = clock.median_step_s(args.warmup_steps)
            except Exception as e:  # keep the rest of the table: one failed mode must not cost the GPU session
                print(f"{mode} width {width} compiled={compile}: {type(e).__name__}: {e}", file=sys.stderr)
                rows.append({"mode": mode, "width": width, "models": n, "compiled": compile,
                             "error": f"{type(e).__name__}: {e}"})
                continue
            tokens_per_s = n * cfg.tokens_per_step / step_s
            fpt = flops_per_token(cfg, data.vocab_size)
            rows.append(_row(mode, width, n, tokens_per_s, tokens_per_s * fpt / peak, device, peak,
                             compiled=compile, step_time_s=step_s, flops_per_token=fpt, status=result.status,
                             **extra))
            print(_format_row(rows[-1]), flush=True)
        del members
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --- the pool: what a user does without a batched engine ------------------------------------------

POOL_WARMUP_STEPS = 5


class _PoolDone(Exception):
    pass


def pool_row(grid: Grid, args: argparse.Namespace, device: torch.device, peak: float, n: int) -> dict[str, Any]:
    """`n` processes, each training one solo run of the reference shape at --pool-width, on the same device
    at the same time: after POOL_WARMUP_STEPS steps each waits for the others, then all train for
    --pool-seconds, and the pool's tokens/s is the sum of what they trained over that time."""
    spec = json.dumps({"grid": str(args.grid), "device": str(device), "width": args.pool_width,
                       "seconds": args.pool_seconds})
    procs = [subprocess.Popen([sys.executable, __file__, "--pool-worker", spec], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a pool worker did not start"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        done = [json.loads(p.stdout.readline()) for p in procs if p.stdout is not None]
    finally:
        for p in procs:
            p.wait(timeout=60)
    cfg = _pool_config(grid, args.pool_width)
    seconds = max(d["seconds"] for d in done)
    tokens_per_s = sum(d["steps"] for d in done) * cfg.tokens_per_step / seconds
    fpt = flops_per_token(cfg, plan_grid(grid, str(device)).data.vocab_size)
    return _row("pool", args.pool_width, n, tokens_per_s, tokens_per_s * fpt / peak, device, peak, compiled=False,
                processes=n, pool_seconds=seconds, steps_per_process=[d["steps"] for d in done])


def _pool_config(grid: Grid, width: int) -> RunConfig:
    template = run_configs(grid)[0]
    # A budget no process reaches in the timed window; one evaluation sequence (never reached either).
    return dataclasses.replace(template, width=width, tokens=10**6 * template.tokens_per_step,
                               lr_log2=min(grid.lr_log2), eval_tokens=template.seq_len)


def pool_worker(spec_json: str) -> None:
    """One process of the pool: train, say 'ready' after the warmup, wait for 'go', train for the given
    seconds, print how many steps it trained."""
    spec = json.loads(spec_json)
    grid = load_grid(spec["grid"])
    device = resolve_device(spec["device"])
    cfg = _pool_config(grid, spec["width"])
    clock: dict[str, float] = {"steps": 0}

    def progress(step: int, steps: int) -> None:
        if step == POOL_WARMUP_STEPS:
            print("ready", flush=True)
            sys.stdin.readline()
            clock["t0"] = time.perf_counter()
        elif step > POOL_WARMUP_STEPS:
            clock["steps"] += 1
            if time.perf_counter() - clock["t0"] >= spec["seconds"]:
                raise _PoolDone

    try:
        train_run(cfg, plan_grid(grid, str(device)).data, device, progress=progress)
    except _PoolDone:
        pass
    print(json.dumps({"steps": clock["steps"], "seconds": time.perf_counter() - clock["t0"]}), flush=True)


def _fused_fitting(members: list[RunConfig], data: Any, device: torch.device, clock: StepClock,
                   compile: bool) -> tuple[list[Any], int]:
    """Train the members as one batched model; halve the group until it fits in memory, as sweeps do."""
    while True:
        try:
            return train_fused(members, data, device, progress=clock, compile=compile), len(members)
        except FusedOutOfMemory as e:
            if len(members) == 1:
                raise
            print(f"{e}; timing {len(members) // 2} members instead", file=sys.stderr, flush=True)
            members = members[:len(members) // 2]
            clock.times = [time.perf_counter()]
        # Out of the except block: the exception no longer holds the failed attempt's frames, so its
        # tensors (kept in a reference cycle by the batched model) can be collected before the next try.
        gc.collect()
        torch.cuda.empty_cache()


def _use_compile(args: argparse.Namespace, device: torch.device, width: int) -> bool:
    wanted = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    return wanted and (args.compile_widths is None or width in args.compile_widths)


def grid_row(grid: Grid, args: argparse.Namespace, device: torch.device, peak: float) -> dict[str, Any]:
    """Train the reference grid into a fresh store, time it, and write its report. Interrupted (Ctrl-C,
    or `timeout -s INT`), it reports the runs it finished, and writes no report."""
    if args.grid_compile != "grid":  # an engine setting: the runs' keys, and so the store, are the same
        grid = dataclasses.replace(grid, compile=args.grid_compile == "on")
    with tempfile.TemporaryDirectory(prefix="mupcheck-bench-") as tmp:
        store = Store(args.store or tmp)
        if any(store.runs_dir.glob("*.json")):
            raise MupcheckError(f"--store {args.store} already holds runs; the benchmark times a grid from scratch")
        start = time.perf_counter()
        summary = run_grid(grid, store, device=str(device), fuse=args.fuse)
        wall = time.perf_counter() - start
        print(summary.line(), flush=True)
        plan = plan_grid(grid, str(device))
        fuse = fuse_size(grid, device, args.fuse)
        records = {c: store.load(plan.key(c)) for c in plan.configs}
        results = {c: r.result for c, r in records.items() if r is not None}
        # Tokens actually trained: a diverged run stops early, and its budget must not count as work.
        trained = {c: result.steps_trained * c.tokens_per_step for c, result in results.items()}
        tokens = sum(trained.values())
        widths = width_summary(results)
        for line in widths:
            print(_format_width(line), flush=True)
        if summary.interrupted:
            return _row("fused" if fuse > 1 else "solo", None, fuse, tokens / wall, 0.0, device, peak,
                        compiled=grid.compile, grid=Path(grid.path).name, runs=summary.total,
                        runs_done=len(trained), tokens_planned=sum(c.tokens for c in plan.configs),
                        wall_time_s=wall, interrupted=True, report=None, widths=widths)
        flops = sum(n * flops_per_token(c, plan.data.vocab_size) for c, n in trained.items())
        command = " ".join(["python benchmarks/fused_speed.py", *args.argv])
        reports = Path(args.reports)
        reports.mkdir(parents=True, exist_ok=True)
        path = write_report(GridSuite(plan, store), reports, {
            "command": f"`{command}` (a fresh store: every run trained)",
            "wall time": f"{wall / 60:.1f} min for {summary.total} runs ({summary.trained} trained, "
                         f"{summary.diverged} diverged), training and evaluation",
            "report written": utc_now(),
        })
        print(f"wrote {path}", flush=True)
    return _row("fused" if fuse > 1 else "solo", None, fuse, tokens / wall, flops / wall / peak, device, peak,
                compiled=grid.compile,
                grid=str(Path(grid.path).name), runs=summary.total,
                wall_time_s=wall, report=str(path), widths=widths)


def width_summary(results: dict[RunConfig, RunResult]) -> list[dict[str, Any]]:
    """Per width of a trained grid, from its run records: the time its runs took (training and
    evaluation, the batched groups' time shared out among their members), the first step of its
    groups (where torch.compile compiles, when it has to), the canary's largest difference, and how
    many runs diverged or were trained one at a time."""
    by_width: dict[int, list[RunResult]] = {}
    for cfg, result in results.items():
        by_width.setdefault(cfg.width, []).append(result)
    rows = []
    for width, runs in sorted(by_width.items()):
        infos = [r.fused for r in runs if r.fused is not None]
        canary = [i.canary["max_rel_diff"] for i in infos if i.canary]
        rows.append({
            "width": width, "runs": len(runs), "diverged": sum(r.status == "diverged" for r in runs),
            "solo": len(runs) - len(infos), "group_sizes": sorted({i.members for i in infos}),
            "compiled": sorted({i.compiled for i in infos}),
            "wall_time_s": sum(r.wall_time_s for r in runs),
            "first_step_s": sorted({i.first_step_s for i in infos if i.first_step_s is not None}),
            "canary_max_rel_diff": max(canary) if canary else None,
        })
    return rows


def _format_width(row: dict[str, Any]) -> str:
    firsts = ", ".join(f"{s:.1f} s" for s in row["first_step_s"]) or "-"
    canary = f"{row['canary_max_rel_diff']:.1e}" if row["canary_max_rel_diff"] is not None else "-"
    return (f"  width {row['width']:>5}: {row['runs']} runs ({row['diverged']} diverged, {row['solo']} solo), "
            f"groups of {row['group_sizes']}, {row['wall_time_s']:.1f} s, first step {firsts}, canary {canary}")


def _row(mode: str, width: int | None, models: int, tokens_per_s: float, mfu: float, device: torch.device,
         peak: float, **extra: Any) -> dict[str, Any]:
    return {"mode": mode, "width": width, "models": models, "tokens_per_s": tokens_per_s, "mfu": mfu,
            "device": device_name(device), "matmul_peak_flops": peak, "torch": torch.__version__,
            "mup": version("mup"), "python": platform.python_version(),
            "mupcheck_commit": git_commit(Path(__file__)) or None,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **extra}


def _format_row(row: dict[str, Any]) -> str:
    what = f"width {row['width']:>5}" if row["width"] else f"grid {row['grid']}"
    mode = row["mode"] + (" compiled" if row.get("compiled") else "")
    text = (f"{mode:>14}  {what}  models {row['models']:>3}  {row['tokens_per_s'] / 1e6:8.3f} M tokens/s  "
            f"MFU {100 * row['mfu']:5.1f}%"
            + (f"  wall {row['wall_time_s'] / 60:.1f} min" if "wall_time_s" in row else ""))
    if row.get("interrupted"):
        text += f"  INTERRUPTED after {row['runs_done']} of {row['runs']} runs (no report)"
    return text


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| mode | compiled | width | models | tokens/s | MFU | / solo |\n|---|---|---|---|---|---|---|")
    solo = {r["width"]: r["tokens_per_s"] for r in rows if r["mode"] == "solo" and r["width"] and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['compiled']} | {r['width']} | | failed: {r['error'][:80]} | | |")
            continue
        ratio = (f"{r['tokens_per_s'] / solo[r['width']]:.1f}x" if r["mode"] in ("fused", "pool")
                 and r["width"] in solo else "")
        done = f"{r['runs_done']} of {r['runs']} runs, interrupted" if r.get("interrupted") else f"{r.get('runs')} runs"
        width = r["width"] if r["width"] else f"grid {r['grid']} ({done}, {r['wall_time_s'] / 60:.1f} min)"
        print(f"| {r['mode']} | {r['compiled']} | {width} | {r['models']} | {r['tokens_per_s'] / 1e6:.3f}M "
              f"| {100 * r['mfu']:.1f}% | {ratio} |")


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.pool_worker is not None:
        pool_worker(args.pool_worker)
        sys.exit(0)
    args.argv = sys.argv[1:] if argv is None else argv  # for the report's provenance
    if args.skip_grid and args.grid_only:
        raise MupcheckError("--skip-grid and --grid-only leave nothing to do")
    device = resolve_device(args.device)
    grid = load_grid(args.grid)
    peak = matmul_peak(device)
    print(f"{device_name(device)}: measured matmul rate {peak / 1e12:.1f} TFLOP/s", flush=True)
    rows = [] if args.grid_only else speed_rows(grid, args, device, peak)
    pool = args.pool if args.pool is not None else (14 if device.type == "cuda" else 0)
    if pool > 0 and not args.grid_only:
        try:
            rows.append(pool_row(grid, args, device, peak, pool))
            print(_format_row(rows[-1]), flush=True)
        except Exception as e:  # keep the rest of the benchmark
            print(f"pool of {pool}: {type(e).__name__}: {e}", file=sys.stderr)
            rows.append({"mode": "pool", "width": args.pool_width, "models": pool, "compiled": False,
                         "error": f"{type(e).__name__}: {e}"})
    if not args.skip_grid:
        rows.append(grid_row(grid, args, device, peak))
        print(_format_row(rows[-1]), flush=True)
    print_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    path = out / f"{stamp}-{slug}.json"
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    try:
        main()
    except MupcheckError as e:  # a bad grid file, missing data, no CUDA: one line, no traceback
        sys.exit(f"benchmark: {e}")
