#!/usr/bin/env bash
# One borrowed GPU session, in one command: the CUDA checks, the speed table, then as much of the
# reference grid as the time left allows (interrupted with SIGINT: the runs it finished are kept and
# reported, and no report is written for a grid with missing runs).
#
#   OUT=/some/dir MUPCHECK_COMMIT=abc1234 bash benchmarks/gpu_session.sh [grid seconds]
#
# Needs torch with CUDA, pytest, pandas, matplotlib, tqdm; installs mup and mupcheck from .whl/ and the
# checkout without the network when .whl/mup-1.0.0 exists (see README, "GPU sweeps").
set -uo pipefail
OUT=${OUT:?set OUT to the folder that receives the results}
GRID_SECONDS=${1:-180}
export PYTHONUNBUFFERED=1
if [ -d .whl/mup-1.0.0 ]; then
  python3 -m pip install -q --no-deps --no-index --no-build-isolation .whl/mup-1.0.0 . || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/device.txt"
git log -1 --format='mupcheck %h %s' 2>/dev/null | tee -a "$OUT/device.txt"

timeout 170 python3 -m pytest -m gpu -q -p no:cacheprovider tests/engine/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.log"
timeout 210 python3 benchmarks/fused_speed.py --skip-grid --steps 25 --warmup-steps 5 --compile-widths 128 512 \
  --out "$OUT" 2>&1 | tee "$OUT/speed.log"
mkdir -p /tmp/gpu_reference
timeout -k 30 -s INT "$GRID_SECONDS" python3 benchmarks/fused_speed.py --grid-only --store /tmp/gpu_reference/store \
  --out "$OUT" --reports /tmp/gpu_reference/reports 2>&1 | tee "$OUT/grid.log"
tar czf "$OUT/gpu_reference.tgz" -C /tmp/gpu_reference . 2>/dev/null
ls -la "$OUT"
