#!/usr/bin/env bash
# One command on a GPU machine: the GPU tests, the quick benchmark, the profiler and the
# static kernel report, all results in ONE folder, within 8 minutes.
#
#   bash bench/gpu_run.sh [DIR]        # results in $OUT if set, else DIR, else bench/results/gpu-<date>
#   PYTHON=/path/to/python bash bench/gpu_run.sh
#
# Each step has its own time limit (sum 470 s < 480 s) and its own log; a failing step
# does not stop the next one; status.txt lists every step's exit code (124 = timed out).
set -uo pipefail
cd "$(dirname "$0")/.."

DIR="${OUT:-${1:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
# compiled kernels, not the interpreter (tests/conftest.py only sets TRITON_INTERPRET when unset)
export TRITON_INTERPRET=0
export CANON_BACKEND=auto

status="$DIR/status.txt"
: > "$status"
step() {  # step NAME SECONDS CMD...
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" | tee -a "$DIR/run.log"
  timeout --kill-after=10 "$limit" "$@" > "$DIR/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0)) cmd: $*" | tee -a "$status"
  tail -n 5 "$DIR/$name.log" | tee -a "$DIR/run.log"
}

step env 15 bash -c "nvidia-smi; git rev-parse HEAD; git status --short; $PY -c 'import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.is_available(), torch.cuda.get_device_name())'; $PY -m pip freeze"
step tests 170 "$PY" -m pytest -q tests
step bench 170 "$PY" -m bench --quick --device cuda --output-dir "$DIR/bench"
step profile 45 "$PY" -m bench profile --device cuda --output-dir "$DIR/profile"
step kernels 70 "$PY" -m bench kernels --archs 80,90 --output-dir "$DIR/kernels"

echo "results in $DIR" | tee -a "$DIR/run.log"
! grep -qv ' rc=0 ' "$status"
