"""Runs trained by the team's own code (a grid's `[trainer]`): a command template or a Python function, each run
in a process of its own, reporting its losses as JSON lines. Where trainer-level muP bugs live (a schedule
that overwrites every group's rate, groups built by hand, a model re-initialised after `set_base_shapes`),
only the team's own loop can show them.

    check_trainer(grid)                                   # GridError: an unknown placeholder, a swept axis unused
    result = train_command(cfg, grid, run_dir)            # RunResult, or TrainerFailed naming why
    fingerprint(grid)                                     # the trainer's part of every run's store key

The **metrics protocol**: a line of the trainer's output (stdout, or `{run_dir}/metrics.jsonl`) that is a JSON
object with `loss` (the validation loss) is a metric line; `step`, `tokens` and `train_loss` are optional. The
curve is those lines, the final loss the last one's; a non-finite loss means the run diverged. A line with
`coord` is `mupcheck.watch`'s record of a layer's coordinate size. Every other line is kept, the last of them
in the run's record. A run that exits non-zero, prints no metric line or outlives `timeout_s` failed: it is no
result, and says why in one line with the last lines of its output.

A command runs without a shell (its template is split as a shell would, then each word filled in), in a
process group of its own, so that stopping a run (Ctrl-C, a timeout) stops everything it started; on Linux the
trainer also dies with the process that started it (kill -9 of a sweep leaves no orphan training).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import shlex
import signal
import string
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mupcheck.errors import GridError, MupcheckError
from mupcheck.result import Checkpoint, RunResult
from mupcheck.spec import AXES, SETTINGS_KEYS, Grid, RunConfig, TrainerSettings

__all__ = ["LOG_LINES", "PLACEHOLDERS", "TrainerFailed", "check_trainer", "fingerprint", "parse_line",
           "placeholders", "train_command"]

# The lines of a run's own output (not metrics) kept in its record, and shown where it failed.
LOG_LINES = 40
# What a template may name besides the run's settings: the axes, the rate, the seed, the arm, the run's folder.
PLACEHOLDERS = ("width", "depth", "tokens", "batch_size", "lr", "lr_log2", "seed", "parametrization", "run_dir")
_KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL of a run's process group


class TrainerFailed(MupcheckError):
    """A run the trainer did not finish: it exited non-zero, printed no metric line, or timed out."""

    def __init__(self, message: str, log: tuple[str, ...] = ()):
        super().__init__(message)
        self.log = log


def placeholders(cfg: RunConfig, run_dir: Path | str = "") -> dict[str, str]:
    """Every value a template may name for this run: its settings, its axes, `lr` (the rate itself, exact),
    `lr_log2`, `run_dir`, and the grid's swept key by its own name."""
    values = {k: v for k, v in cfg.to_dict().items() if not isinstance(v, (list, dict))}
    values.update(lr=repr(cfg.lr), lr_log2=repr(cfg.lr_log2), run_dir=str(run_dir))
    if cfg.sweep:
        values[cfg.sweep] = repr(getattr(cfg, cfg.sweep))
    return {k: str(v) for k, v in values.items()}


def _names(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ValueError(f"{template!r} is not a template: {e}") from None


def check_trainer(grid: Grid) -> None:
    """One line before anything runs: an unknown placeholder, an axis the grid sweeps that the command never
    passes (every run would train the same thing), a script or cwd that is not there."""
    t = grid.trainer
    assert t is not None
    allowed = sorted({*PLACEHOLDERS, *SETTINGS_KEYS, *([grid.sweep] if grid.sweep else [])})
    if t.command:
        try:
            names = _names(t.command)
            shlex.split(t.command)
        except ValueError as e:
            raise GridError(grid.path, "trainer.command", str(e)) from None
        for name in names:
            if name not in allowed:
                raise GridError(grid.path, "trainer.command", f"{{{name}}} is not a placeholder; allowed: "
                                                              f"{', '.join('{' + a + '}' for a in allowed)}")
        swept = _swept(grid)
        unused = [a for a in swept if a not in names and not (a == "lr" and "lr_log2" in names)]
        if unused:
            raise GridError(grid.path, "trainer.command", f"the grid sweeps {unused[0]} ({swept[unused[0]]} values), "
                                                          f"but the command never passes {{{unused[0]}}}: every "
                                                          "run would train the same thing")
    cwd = workdir(grid)
    if not cwd.is_dir():
        raise GridError(grid.path, "trainer.cwd", f"no folder {cwd}")
    for file in code_files(grid):
        if not file.is_file():
            raise GridError(grid.path, "trainer.code", f"no file {file} (the trainer's code enters every run's key)")


def _swept(grid: Grid) -> dict[str, int]:
    """The axes and keys the grid varies, by the placeholder that passes each, with their number of values."""
    counts = {a: len(grid.values(a)) for a in AXES}
    counts.update(lr=len(grid.lr_log2), seed=len(grid.seeds), parametrization=len(grid.parametrization))
    if grid.sweep:
        counts[grid.sweep] = len(grid.sweep_log2)
    return {k: n for k, n in counts.items() if n > 1}


def workdir(grid: Grid) -> Path:
    t = grid.trainer
    assert t is not None
    return (grid.grid_dir / t.cwd).resolve() if t.cwd else grid.grid_dir.resolve()


def code_files(grid: Grid) -> list[Path]:
    """The files whose bytes enter every run's key: `code = [...]` (from the trainer's folder), else the script
    the command names (its first word ending in .py), else the Python form's module file, if found."""
    t = grid.trainer
    assert t is not None
    cwd = workdir(grid)
    if t.code:
        return [cwd / c for c in t.code]
    if t.command:
        return [cwd / w for w in shlex.split(t.command) if w.endswith(".py") and "{" not in w][:1]
    module = t.python.split(":")[0].replace(".", "/")
    found = [cwd / f"{module}.py", cwd / module / "__init__.py"]
    return [f for f in found if f.is_file()][:1]


def fingerprint(grid: Grid) -> str:
    """The trainer's part of every run's store key: its command (or function), folder, environment and code."""
    t = grid.trainer
    assert t is not None
    h = hashlib.sha256(json.dumps([t.command, t.python, t.cwd, t.env], sort_keys=True).encode())
    for file in code_files(grid):
        h.update(file.name.encode())
        h.update(file.read_bytes() if file.is_file() else b"(missing)")
    return "trainer-" + h.hexdigest()[:16]


def argv(cfg: RunConfig, trainer: TrainerSettings, run_dir: Path) -> list[str]:
    """The run's command line: the Python form through `mupcheck.engine.command_child`, or the template filled in
    word by word (a value never splits a word, nor reaches a shell)."""
    if trainer.python:
        payload = json.dumps({"config": placeholders(cfg, run_dir), "run_dir": str(run_dir)})
        return [sys.executable, "-m", "mupcheck.engine.command_child", trainer.python, payload]
    values = placeholders(cfg, run_dir)
    return [word.format(**values) for word in shlex.split(trainer.command)]


def parse_line(line: str) -> dict[str, Any] | None:
    """A metric line of the protocol (a JSON object with `loss`, or `coord`), else None."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not ("loss" in obj or "coord" in obj):
        return None
    return obj


def train_command(cfg: RunConfig, grid: Grid, run_dir: Path, progress: Callable[[int, int], None] | None = None,
                  env: dict[str, str] | None = None) -> RunResult:
    """Run one run with the grid's trainer and read its result (see the module docstring). `env`: variables set
    for this run on top of the trainer's (CUDA_VISIBLE_DEVICES from the sweep's GPU slots)."""
    t = grid.trainer
    assert t is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a rerun's own metrics, not a killed attempt's
    start = time.perf_counter()
    metrics: list[dict[str, Any]] = []
    tail: deque[str] = deque(maxlen=LOG_LINES)
    expected = max(1, cfg.steps)

    def on_line(line: str) -> None:
        obj = parse_line(line)
        if obj is None:
            tail.append(line.rstrip("\n"))
            return
        metrics.append(obj)
        if progress is not None and "step" in obj:
            with contextlib.suppress(TypeError, ValueError):
                progress(min(int(obj["step"]), expected), expected)

    code = _run(argv(cfg, t, run_dir), workdir(grid), {**dict(t.env), **(env or {})}, t.timeout_s, on_line,
                run_dir / "output.log")
    if code is None:
        raise TrainerFailed(f"timed out after {t.timeout_s:g} s (trainer.timeout_s)", tuple(tail))
    if not any("loss" in m for m in metrics):
        metrics += _metrics_file(run_dir / "metrics.jsonl")
    if code != 0:
        last = tail[-1] if tail else "(no output)"
        raise TrainerFailed(f"exited with status {code}: {last}", tuple(tail))
    losses = [m for m in metrics if "loss" in m]
    if not losses:
        raise TrainerFailed("printed no metric line (a JSON object with \"loss\"), on stdout or in "
                            f"{run_dir / 'metrics.jsonl'}", tuple(tail))
    return _result(cfg, losses, [m["coord"] for m in metrics if "coord" in m], tuple(tail),
                   time.perf_counter() - start)


def _metrics_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [obj for line in path.read_text(errors="replace").splitlines() for obj in [parse_line(line)] if obj]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _result(cfg: RunConfig, lines: list[dict[str, Any]], coords: list[Any], log: tuple[str, ...],
            wall: float) -> RunResult:
    """The run's result from its metric lines: the last loss, diverged at the first non-finite one."""
    points = []
    for k, m in enumerate(lines):
        loss = _number(m.get("loss"))
        train = _number(m.get("train_loss", loss))
        step = int(_number(m.get("step", k + 1))) if math.isfinite(_number(m.get("step", k + 1))) else k + 1
        tokens = int(_number(m.get("tokens", 0))) if math.isfinite(_number(m.get("tokens", 0))) else 0
        points.append((step, tokens, train, loss))
    bad = next((p for p in points if not math.isfinite(p[3])), None)
    final = points[-1]
    checkpoints = tuple(Checkpoint(step=s, tokens=n, train_loss=tr, val_loss=v) for s, n, tr, v in points
                        if math.isfinite(v))
    diverged = bad is not None
    first = points[0][2] if math.isfinite(points[0][2]) else None
    return RunResult(status="diverged" if diverged else "ok", loss=None if diverged else final[3],
                     train_loss=None if diverged or not math.isfinite(final[2]) else final[2], initial_loss=first,
                     diverged_step=bad[0] if bad else None, steps=cfg.steps, steps_trained=final[0],
                     checkpoints=checkpoints, wall_time_s=wall, tokens_per_s=None, device="trainer",
                     data_repeats=math.nan, weight_decay=0.0, tau_steps=None, tau_frac_of_run=None, engine="trainer",
                     log=log, coords=tuple(c for c in map(_coord, coords) if c is not None))


def _coord(c: Any) -> dict[str, Any] | None:
    """A `coord` object of the protocol (mupcheck.watch), with its numbers as numbers; None if malformed."""
    if not isinstance(c, dict) or "layer" not in c:
        return None
    return {"layer": str(c["layer"]), "type": str(c.get("type", "")), "step": int(_number(c.get("step", 0))),
            "size": _number(c.get("size")), "update": _number(c.get("update")),
            "numel": int(_number(c.get("numel", 0)) or 0), "last_dim": int(_number(c.get("last_dim", 0)) or 0)}


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout_s: float, on_line: Callable[[str], None],
         log_path: Path) -> int | None:
    """Run a command in its own process group, streaming its output (stdout and stderr, merged) line by line to
    `on_line` and to `log_path`; its exit status, or None when it outlived `timeout_s` (0: no limit). Ctrl-C
    (or any exception here) stops the whole group before it propagates."""
    try:
        proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                                bufsize=1, start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as e:
        raise TrainerFailed(f"cannot start {command[0]!r}: {e}") from None
    stopped = threading.Event()  # set by `_stop`: the run ended at its timeout, not by its own exit
    timer = threading.Timer(timeout_s, _stop, args=(proc, stopped)) if timeout_s else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                on_line(line)
        code = proc.wait()
    except BaseException:
        _stop(proc, stopped)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    return None if stopped.is_set() else code


def _stop(proc: subprocess.Popen[str], stopped: threading.Event) -> None:
    """Stop a run's whole process group: SIGTERM, then SIGKILL after a grace period."""
    stopped.set()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=_KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, die when the process that started it dies (PR_SET_PDEATHSIG), so
    that a sweep killed with SIGKILL leaves no run training on."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG

