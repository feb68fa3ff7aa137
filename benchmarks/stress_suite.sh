#!/usr/bin/env bash
# Issue 26: the suite must pass 5 times in a row from a fresh clone while two CPU-bound processes run
# beside it. Usage: benchmarks/stress_suite.sh [REPO] [RUNS]  (default: this repository, 5 runs).
# Work happens in a temporary folder with its own virtual environment; the log says each run's result.
set -u
repo=$(cd "${1:-$(dirname "$0")/..}" && pwd)
runs=${2:-5}
work=$(mktemp -d /tmp/mupcheck-stress.XXXXXX)
log="$work/log.txt"
git clone -q "$repo" "$work/clone" && cd "$work/clone" || exit 1
echo "commit $(git rev-parse --short HEAD), $(nproc) cores" > "$log"
python3 -m venv "$work/venv" && . "$work/venv/bin/activate"
pip install -q --upgrade pip > /dev/null
pip install -q -c .ci/cpu-constraints.txt -e ".[dev,ray,parquet]" > /dev/null 2>&1 || { echo "install failed" >> "$log"; exit 1; }
test_cmd=$(grep -m1 -E '^python -m pytest' README.md)
yes > /dev/null & hog1=$!
yes > /dev/null & hog2=$!
trap 'kill $hog1 $hog2 2> /dev/null' EXIT
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  eval "$test_cmd -q -p no:cacheprovider" > "$work/run$i.txt" 2>&1; rc=$?
  echo "run $i rc=$rc $(( $(date +%s) - start )) s: $(tail -1 "$work/run$i.txt")" >> "$log"
  [ $rc -ne 0 ] && break
done
cat "$log"
