"""What one run produced: a typed result, the seam between the engine, the store and the analysis.

    result = train_run(cfg, data)                  # the engine builds it
    store.save_result(cfg, context, result)        # the store writes it as JSON, inside a record
    record = store.load(key); record.result.loss   # the analysis reads it back, typed

Torch-free, so that the store and the analysis never import the engine. `to_dict` / `from_dict` are
the JSON form of a record's `result` object; `from_dict` raises `ValueError` naming the field that
is missing or wrong, which the store turns into a quarantined record.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Checkpoint", "FusedInfo", "RunRecord", "RunResult", "SharedInfo", "Status"]

# "unstable": the run ended with a finite loss, but its training loss spiked or it ended no lower than it
# started (see RunResult.judged_status); "diverged": non-finite, or far above its first loss (the engine
# stops it).
Status = Literal["ok", "unstable", "diverged"]
STATUSES: tuple[Status, ...] = ("ok", "unstable", "diverged")
# A checkpoint whose training loss gives back more than this fraction of what the run had learned (its
# first loss minus its lowest loss before that checkpoint) is a spike. Relative to the progress, not to
# the loss: a checkpoint's training loss averages a tenth of the steps so far, which is a step or two in
# a short run, and such noise moved tiny runs' checkpoints by 10% without any instability.
SPIKE_GIVEBACK = 0.5
# A run whose final training loss is at or above this fraction of its first loss ended where it started (or
# worse). Not lower: a run at a rate far below the optimum also learns little, slowly, and is not unstable;
# above the optimum, a run that ends near its start is far past the stability boundary's loss rise anyway
# (mupcheck.analysis.stability).
NO_PROGRESS = 1.0


@dataclass(frozen=True)
class Checkpoint:
    """Losses at one of a run's evaluation points."""

    step: int
    tokens: int
    train_loss: float  # mean training loss over the last tenth of the steps so far
    val_loss: float


@dataclass(frozen=True)
class FusedInfo:
    """How a batched group trained a run: its size, and the group's own time and speed."""

    members: int
    compiled: bool
    # The group's time and speed when this run's result was made (it left the batch, or the group ended):
    # a run that left early is stored then, and does not wait for the group's end.
    group_wall_time_s: float
    group_tokens_per_s: float | None
    # Which batched engine: "native" (the built-in models' member-axis layers) or "vmap" (user models).
    batched: str = "vmap"
    # The run-time canary: what it compared and how far apart the losses were (None: not run).
    canary: dict[str, Any] | None = None
    # The group's first training step, in seconds: where torch.compile compiles, when it has to (the
    # first compiled group of a process; a later group only if its graphs did not fit it).
    first_step_s: float | None = None


@dataclass(frozen=True)
class SharedInfo:
    """How a run of a duration study was trained with the other budgets of its rate and seed
    (`mupcheck.engine.shared`): its numbers are those it would have had alone."""

    # "trunk": the run trained to the longest budget; "prefix": read off the trunk at its own last step;
    # "branch": its own decay, branched off the trunk where that decay starts.
    kind: str
    trunk_tokens: int  # the budget of the run it shares
    leaves_at: int  # the trunk's step where it left (its own last step for a prefix; the trunk's steps for it)
    budgets: int  # how many budgets the shared run served in this sweep

    def describe(self) -> str:
        if self.kind == "trunk":
            return f"trained once for {self.budgets} budgets"
        if self.kind == "prefix":
            return f"read at step {self.leaves_at} of the run to {self.trunk_tokens:,} tokens"
        return f"decay branched at step {self.leaves_at} of the run to {self.trunk_tokens:,} tokens"


@dataclass(frozen=True)
class RunResult:
    """The outcome of one training run."""

    status: Status
    loss: float | None  # final validation loss (None if diverged)
    train_loss: float | None
    initial_loss: float | None
    diverged_step: int | None
    steps: int
    steps_trained: int
    checkpoints: tuple[Checkpoint, ...]
    wall_time_s: float
    tokens_per_s: float | None
    device: str
    data_repeats: float  # how many times the run saw its training split
    weight_decay: float
    tau_steps: float | None  # the weight-decay timescale in steps (None: no decay)
    tau_frac_of_run: float | None
    engine: str = "solo"  # "solo", "fused", or "trainer" (the team's own code: mupcheck.engine.command)
    fused: FusedInfo | None = None
    notes: tuple[str, ...] = ()  # what the engine had to do differently (a fallback, a failed canary)
    # A trainer's run: the last lines of its output that were not metrics, and the coordinate sizes
    # `mupcheck.watch` recorded in its first steps (its lines' `coord` objects): its own muP check.
    log: tuple[str, ...] = ()
    coords: tuple[dict[str, Any], ...] = ()
    shared: SharedInfo | None = None  # trained as part of one run per rate and seed (a duration study)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoints"] = [dataclasses.asdict(c) for c in self.checkpoints]
        # Records of solo runs never had these keys; keep them out, so old and new records read alike.
        for key in ("fused", "notes", "log", "coords", "shared"):
            if not d[key]:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> RunResult:
        """Read a record's `result` object; ValueError names what is missing or wrong."""
        if not isinstance(d, dict):
            raise ValueError("`result` is not an object")
        status = d.get("status")
        if status not in STATUSES:
            raise ValueError(f"`result.status` is {status!r}, not one of {STATUSES}")
        loss = d.get("loss")
        if status != "diverged" and (not isinstance(loss, (int, float)) or not math.isfinite(loss)):
            raise ValueError(f"`result.loss` is {loss!r} for a run with status {status}")
        try:
            fused, shared = d.get("fused"), d.get("shared")
            return cls(
                status=status, loss=loss, train_loss=d.get("train_loss"), initial_loss=d.get("initial_loss"),
                diverged_step=d.get("diverged_step"), steps=int(d["steps"]), steps_trained=int(d["steps_trained"]),
                checkpoints=tuple(Checkpoint(**c) for c in d.get("checkpoints", [])),
                wall_time_s=float(d.get("wall_time_s") or 0.0), tokens_per_s=d.get("tokens_per_s"),
                device=str(d.get("device", "unknown")), data_repeats=float(d.get("data_repeats") or 0.0),
                weight_decay=float(d.get("weight_decay") or 0.0), tau_steps=d.get("tau_steps"),
                tau_frac_of_run=d.get("tau_frac_of_run"), engine=str(d.get("engine", "solo")),
                fused=FusedInfo(**fused) if fused else None, notes=tuple(d.get("notes", ())),
                log=tuple(str(line) for line in d.get("log", ())),
                coords=tuple(dict(c) for c in d.get("coords", ()) if isinstance(c, dict)),
                shared=SharedInfo(**shared) if shared else None)
        except KeyError as e:
            raise ValueError(f"`result.{e.args[0]}` is missing") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"`result` has a malformed field: {e}") from None

    def judged_status(self) -> Status:
        """The engine's status, or "unstable" for an "ok" run whose training loss spiked (a checkpoint gave
        back more than SPIKE_GIVEBACK of the progress made before it) or ended above NO_PROGRESS of its first
        loss. Judged from the record, so records written before this status existed are judged alike."""
        if self.status != "ok":
            return self.status
        train = [c.train_loss for c in self.checkpoints if math.isfinite(c.train_loss)]
        first = self.initial_loss
        if first is not None and math.isfinite(first):
            for k in range(1, len(train)):
                best = min(train[:k])
                if best < first and train[k] - best > SPIKE_GIVEBACK * (first - best):
                    return "unstable"
        final = self.train_loss if self.train_loss is not None else (train[-1] if train else None)
        if final is not None and self.initial_loss and final >= NO_PROGRESS * self.initial_loss:
            return "unstable"
        return "ok"

    @property
    def engine_label(self) -> str:
        """'solo', or 'fused x32' with the group size."""
        return f"fused x{self.fused.members}" if self.fused else self.engine


@dataclass(frozen=True)
class RunRecord:
    """One stored run: its key, what the key was computed from, the result and its provenance."""

    key: str
    key_material: dict[str, Any]
    result: RunResult
    provenance: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.key_material["config"]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "key_material": self.key_material, "result": self.result.to_dict(),
                "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: Any, key: str) -> RunRecord:
        """Read a stored record; ValueError says what is wrong with it."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        if d.get("key") != key:
            raise ValueError(f"its key {d.get('key')!r} does not match its file name")
        material = d.get("key_material")
        if not isinstance(material, dict) or not isinstance(material.get("config"), dict):
            raise ValueError("no `key_material.config` object")
        provenance = d.get("provenance") or {}
        if not isinstance(provenance, dict):
            raise ValueError("`provenance` is not an object")
        return cls(key, material, RunResult.from_dict(d.get("result")), provenance)
