#!/usr/bin/env bash
# benchmarks/gpu_session.sh across several commands of a device whose commands are time-limited (the
# device tool: 10 minutes a command, the machine kept warm for 30 s between commands).
#
#   OUT=... STEPS=... bash benchmarks/gpu_detached.sh start WAIT [grid seconds]   # first command
#   OUT=... bash benchmarks/gpu_detached.sh collect WAIT                          # the next ones, at once
#
# `start` runs gpu_session.sh in its own process session (setsid: it outlives the command) and waits;
# `collect` waits again. Each waits up to WAIT seconds for the session to end, then copies what it has
# into $OUT (logs, results, the grid's store so far) and returns. WAIT must end well inside the limit the
# machine grants this command, which can be shorter than the one asked for (less device time left):
# a command killed before its copy brings nothing back.
set -uo pipefail
OUT=${OUT:?set OUT to the folder that receives the results}
MODE=${1:?start or collect}
WAIT=${2:?seconds to wait}
SESSION=/tmp/mupcheck-session
if [ "$MODE" = start ]; then
  mkdir -p "$SESSION"
  (OUT=$SESSION setsid nohup bash benchmarks/gpu_session.sh "${@:3}" >"$SESSION/session.log" 2>&1 </dev/null &)
elif [ "$MODE" != collect ]; then
  echo "gpu_detached.sh: unknown mode $MODE (start or collect)" >&2
  exit 2
fi
end=$((SECONDS + WAIT))
while [ ! -f "$SESSION/done" ] && [ "$SECONDS" -lt "$end" ]; do sleep 3; done
cp -r "$SESSION/." "$OUT/"
[ -d /tmp/gpu_reference ] && tar czf "$OUT/gpu_reference-so-far.tgz" -C /tmp/gpu_reference .
cat "$SESSION/steps.log" 2>/dev/null
if [ -f "$SESSION/done" ]; then echo "session finished"; else echo "session still running: collect again at once"; fi
