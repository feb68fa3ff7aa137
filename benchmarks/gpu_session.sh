#!/usr/bin/env bash
# One borrowed GPU session, in one command: the CUDA checks, the speed table, and the reference grid
# with its report (a grid cut short by SIGINT keeps and reports the runs it finished, and writes no
# report for a grid with missing runs).
#
#   OUT=/some/dir MUPCHECK_COMMIT=abc1234 bash benchmarks/gpu_session.sh [grid seconds]
#
# STEPS picks and orders the parts (default "pytest speed grid"); SPEED_ARGS replaces the speed
# table's arguments (e.g. "--widths 256 --compile-widths 256 --pool 0" for one compiled row); GRID_ARGS
# adds to the grid's (e.g. "--grid-compile on").
# $OUT/done is written when the script ends, however it ends, so a caller polling a detached session
# (benchmarks/gpu_detached.sh) knows it ended.
# Needs torch with CUDA, pytest, pandas, matplotlib, tqdm; installs mup and mupcheck from .whl/ and the
# checkout without the network when .whl/mup-1.0.0 exists (see README, "GPU sweeps").
set -uo pipefail
OUT=${OUT:?set OUT to the folder that receives the results}
GRID_SECONDS=${1:-900}
STEPS=${STEPS:-pytest speed grid}
SPEED_ARGS=${SPEED_ARGS:---steps 25 --warmup-steps 5 --compile-widths 128 512}
GRID_ARGS=${GRID_ARGS:-}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
trap 'touch "$OUT/done"' EXIT
if [ -d .whl/mup-1.0.0 ]; then
  python3 -m pip install -q --no-deps --no-index --no-build-isolation .whl/mup-1.0.0 . || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/device.txt"
echo "mupcheck ${MUPCHECK_COMMIT:-$(git log -1 --format=%h 2>/dev/null)}" | tee -a "$OUT/device.txt"

for step in $STEPS; do
  echo "=== $step $(date -u +%H:%M:%S)" | tee -a "$OUT/steps.log"
  case $step in
    pytest)
      timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider tests/engine/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.log" ;;
    speed)
      # shellcheck disable=SC2086  # SPEED_ARGS is a list of arguments
      timeout 300 python3 benchmarks/fused_speed.py --skip-grid $SPEED_ARGS --out "$OUT" 2>&1 | tee "$OUT/speed.log" ;;
    grid)
      mkdir -p /tmp/gpu_reference
      # shellcheck disable=SC2086  # GRID_ARGS is a list of arguments
      timeout -k 30 -s INT "$GRID_SECONDS" python3 benchmarks/fused_speed.py --grid-only --store /tmp/gpu_reference/store \
        --out "$OUT" --reports /tmp/gpu_reference/reports $GRID_ARGS 2>&1 | tee "$OUT/grid.log"
      tar czf "$OUT/gpu_reference.tgz" -C /tmp/gpu_reference . 2>/dev/null ;;
    *) echo "unknown step $step" >&2 ;;
  esac
done
echo "=== end $(date -u +%H:%M:%S)" | tee -a "$OUT/steps.log"
ls -la "$OUT"
