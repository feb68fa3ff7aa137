#!/usr/bin/env bash
# One short GPU slice, in one command (issue 38): the CUDA checks, two speed rows, then as much of the duration
# grids as the time allows, in the order that answers first; everything it produces lands under OUT, and a
# second call resumes where the first stopped.
#
#   bash benchmarks/gpu_slice.sh OUT [PREVIOUS]
#
# OUT       the folder that receives everything: device.txt, steps.log, pytest_gpu.log, speed/ (the speed
#           rows' JSON), store/ (the run records), store.tgz (the same, one file, rewritten after each step),
#           <step>.log, reports/ (a report per grid, from whatever the store holds), done/ (a marker per
#           finished step: a second call skips them).
# PREVIOUS  optional: the OUT of an earlier slice (as it came back from the device: its store.tgz and done/),
#           to resume from on a fresh machine.
#
# In this order, until SLICE_SECONDS (default 540: 9 minutes) minus SLICE_REPORT_SECONDS (60) have passed:
#   1. `pytest -m gpu` (tests/engine/test_gpu.py: batched against solo runs, the changed CUDA paths);
#   2. the speed rows of benchmarks/fused_speed.py at widths 128 and 1024, compiled (SLICE_SPEED_ARGS);
#   3. the duration grids (SLICE_GRIDS), stage by stage (SLICE_STAGES: positions in each grid's `tokens`,
#      "1,3" = its first and third budgets, "all" = every budget; a trailing ":coarse" trains without the
#      [refine] stage), each grid in turn within a stage. A grid whose budgets share one run per rate and seed
#      (constant and wsd with warmup_tokens: `mupcheck plan` says "shared runs") takes SLICE_SHARED_STAGES
#      instead (default "all:coarse all"): its shorter budgets finish on the way to the longest, in order, so
#      a slice of budgets would only train the longer ones again. The default stages of a grid that cannot
#      share (cosine) answer 1M against 16M at both widths first (coarse, then refined), then add 4M, then
#      64M. A stage cut short by the time limit keeps every run it finished (mupcheck run stops on SIGINT), and
#      the next call trains only what is missing.
# Then a report per grid into OUT/reports (a partial store: the report lists the missing runs and judges the
# rest).
#
# Knobs: PYTHON (default python3), SLICE_SECONDS, SLICE_REPORT_SECONDS, SLICE_GRIDS, SLICE_STAGES, SLICE_SHARED_STAGES,
# SLICE_SPEED_ARGS, SLICE_STEPS (default "pytest speed grids"). tests/test_gpu_slice.py runs it end to end on
# CPU with CPU-sized copies of the grids (benchmarks/gpu_slice_cpu/).
# On the device: installs mup from .whl/ when .whl/mup-1.0.0 exists (the README's GPU recipe), and runs
# mupcheck from this checkout (PYTHONPATH), not installed, so that the `python` corpus of the duration grids is
# the machine's own packages and does not change with mupcheck's code.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_slice.sh OUT [PREVIOUS]}
PREVIOUS=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
SLICE_SECONDS=${SLICE_SECONDS:-540}
SLICE_REPORT_SECONDS=${SLICE_REPORT_SECONDS:-60}
SLICE_GRIDS=${SLICE_GRIDS:-grids/gpu_duration_constant.toml grids/gpu_duration_cosine.toml grids/gpu_duration_wsd.toml}
SLICE_STAGES=${SLICE_STAGES:-1,3:coarse 1,3 2 4}
SLICE_SHARED_STAGES=${SLICE_SHARED_STAGES:-all:coarse all}
SLICE_SPEED_ARGS=${SLICE_SPEED_ARGS:---widths 128 1024 --compile-widths 128 1024 --pool 0 --steps 25 --warmup-steps 5}
SLICE_STEPS=${SLICE_STEPS:-pytest speed grids}
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
DEADLINE=$((START + SLICE_SECONDS - SLICE_REPORT_SECONDS))

mkdir -p "$OUT/done" "$OUT/reports" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$ROOT" || exit 2
log() { echo "=== $* $(date -u +%H:%M:%S)" | tee -a "$OUT/steps.log"; }
left() { echo $((DEADLINE - $(date +%s))); }
ship() {  # the store as one file, replaced atomically: what comes back if the command is cut short
  tar czf "$OUT/store.tgz.part" -C "$OUT" store 2>/dev/null && mv "$OUT/store.tgz.part" "$OUT/store.tgz"
}

if [ -n "$PREVIOUS" ]; then  # what the earlier slice produced, and its store, carried on
  cp -rn "$PREVIOUS"/. "$OUT"/ 2>/dev/null
  log "resuming from $PREVIOUS"
fi
if [ ! -d "$OUT/store" ] && [ -f "$OUT/store.tgz" ]; then
  tar xzf "$OUT/store.tgz" -C "$OUT" || exit 2
fi
mkdir -p "$OUT/store"
log "start: $(ls "$OUT/store/runs" 2>/dev/null | wc -l) records in the store, $(ls "$OUT/done" | wc -l) steps done before"
if [ -d .whl/mup-1.0.0 ]; then
  "$PYTHON" -m pip install -q --no-deps --no-index --no-build-isolation .whl/mup-1.0.0 || exit 2
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())"
  "$PYTHON" -c "import importlib.metadata as m; print('mup', m.version('mup'))"
  echo "mupcheck $(git log -1 --format=%h 2>/dev/null)$(git diff --quiet 2>/dev/null || echo +dirty)"
  for grid in $SLICE_GRIDS; do "$PYTHON" -m mupcheck plan "$grid"; done
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# $1: step name; the rest: the command. Skipped when done before or when no time is left.
step() {
  local name=$1; shift
  if [ -e "$OUT/done/$name" ]; then log "$name: done before, skipped"; return 0; fi
  local seconds; seconds=$(left)
  if [ "$seconds" -le 0 ]; then log "$name: no time left, not started"; return 1; fi
  log "$name (at most ${seconds}s)"
  timeout -k 20 -s INT "$seconds" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$OUT/$name.log"
  if [ $rc -eq 0 ]; then touch "$OUT/done/$name"; log "$name: finished"; else log "$name: stopped (exit $rc)"; fi
  return $rc
}

# The budgets at the given positions (1-based, comma-separated; "all") of a grid's `tokens`.
budgets() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys
from mupcheck.spec import load_grid
tokens = load_grid(sys.argv[1]).tokens
picked = tokens if sys.argv[2] == "all" else [tokens[int(k) - 1] for k in sys.argv[2].split(",") if int(k) <= len(tokens)]
print(" ".join(str(t) for t in picked))
EOF
}

# Whether a grid's budgets share one run per rate and seed (what `mupcheck plan` says).
shares() {
  "$PYTHON" - "$1" <<'EOF'
import sys
from mupcheck.plan import estimate_cost, plan_grid
from mupcheck.spec import load_grid
sys.exit(0 if estimate_cost(plan_grid(load_grid(sys.argv[1]))).sharing is not None else 1)
EOF
}

for part in $SLICE_STEPS; do
  case $part in
    pytest)
      step pytest_gpu "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/engine/test_gpu.py ;;
    speed)
      # shellcheck disable=SC2086  # SLICE_SPEED_ARGS is a list of arguments
      step speed "$PYTHON" benchmarks/fused_speed.py --skip-grid $SLICE_SPEED_ARGS --out "$OUT/speed" ;;
    grids)
      declare -A stages_of=()
      most=0
      for grid in $SLICE_GRIDS; do
        if shares "$grid"; then stages_of[$grid]=$SLICE_SHARED_STAGES; else stages_of[$grid]=$SLICE_STAGES; fi
        read -ra list <<< "${stages_of[$grid]}"
        [ ${#list[@]} -gt "$most" ] && most=${#list[@]}
      done
      for ((i = 0; i < most; i++)); do
        for grid in $SLICE_GRIDS; do
          read -ra list <<< "${stages_of[$grid]}"
          [ "$i" -ge ${#list[@]} ] && continue
          stage=${list[$i]}
          positions=${stage%%:*}
          refine=()
          [ "$stage" != "$positions" ] && refine=(--no-refine)
          name="$(basename "$grid" .toml)_tokens${positions//,/_}${refine:+_coarse}"
          # shellcheck disable=SC2046  # the budgets are a list of arguments
          step "$name" "$PYTHON" -m mupcheck run "$grid" --store "$OUT/store" --tokens $(budgets "$grid" "$positions") \
            "${refine[@]}" --no-progress
          ship
        done
      done ;;
    *) log "unknown step $part" ;;
  esac
done

for grid in $SLICE_GRIDS; do
  log "report $(basename "$grid" .toml)"
  "$PYTHON" -m mupcheck report "$grid" --store "$OUT/store" --out "$OUT/reports" --json > "$OUT/report_$(basename "$grid" .toml).log" 2>&1
  tail -n 2 "$OUT/report_$(basename "$grid" .toml).log"
done
ship
log "end: $(ls "$OUT/store/runs" 2>/dev/null | wc -l) records in $OUT/store, $(($(date +%s) - START))s"
