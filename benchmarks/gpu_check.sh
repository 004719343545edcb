#!/usr/bin/env bash
# One prepared check of the cuda backend for a machine with an NVIDIA GPU (about 9 minutes at most,
# inside a 10-minute job limit):
#   1. versions (python, numpy, numba, numba-cuda, torch, GPU);
#   2. cuda == numba bit for bit on a real GPU (tests/backends/cuda_sim_check.py --large: programs
#      wider than a block too), then the gpu-marked training tests (CUDA LIF/WKV kernels, bf16,
#      `spike train --device cuda`);
#   3. the benchmark benchmarks/cuda_sparsity.py (cuda backend vs dense torch.cuda);
#   4. the CUDA-simulator tests (the same check through NUMBA_ENABLE_CUDASIM=1: -m "not gpu" runs the
#      slow-marked programs beside the default suite's, and the numba-cuda
#      compatibility tests), on the CPU beside steps 2-3: they start first and are waited for last.
# Logs and benchmarks/cuda_sparsity JSON go to $OUT (or ./gpu_check_out). Every step runs under a
# timeout; a failing step does not stop the later ones, and the script exits non-zero if any failed.
#
#     bash benchmarks/gpu_check.sh            # from anywhere; PYTHON=... picks the interpreter
#     WHEELS=DIR bash benchmarks/gpu_check.sh # first installs DIR/*.whl (no index, no deps) beside it
#
# A GPU image without our pure-Python dependencies (seen: no snntorch, nir, nirtorch) gets them as
# wheels: `pip download --no-deps --python-version 3.12 -d DIR snntorch==1.0.0 nir==1.0.8 nirtorch==2.6`.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT_DIR="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]] && "$ROOT/.venv/bin/python" -c "import numba" 2>/dev/null; then
    PY="$ROOT/.venv/bin/python"
  else
    PY="$(command -v python3 || command -v python)"
  fi
fi
export PYTHONDONTWRITEBYTECODE=1
unset NUMBA_ENABLE_CUDASIM || true
if [[ -n "${WHEELS:-}" ]]; then
  SITE="$(mktemp -d)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
FAILED_DIR="$(mktemp -d)"  # one NAME file per failed step (steps may run in the background)

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT_DIR/summary.txt"; }

# step NAME SECONDS CMD...: run CMD under a timeout, log to $OUT_DIR/NAME.log, remember failures
step() {
  local name="$1" secs="$2"
  shift 2
  log "step $name (timeout ${secs}s): $*"
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$secs" "$@" >"$OUT_DIR/$name.log" 2>&1 || rc=$?
  tail -n 25 "$OUT_DIR/$name.log" || true
  log "step $name: exit $rc after $((SECONDS - t0)) s"
  if [[ $rc -ne 0 ]]; then touch "$FAILED_DIR/$name"; fi
  return 0
}

# 1. versions
log "python: $PY"
"$PY" - <<'EOF' 2>&1 | tee "$OUT_DIR/versions.txt"
import platform, sys
print("python", platform.python_version(), sys.executable)
for mod in ("numpy", "numba", "torch"):
    try:
        m = __import__(mod)
        print(mod, m.__version__)
    except Exception as e:
        print(mod, "MISSING", e)
try:
    from importlib.metadata import version
    print("numba-cuda", version("numba-cuda"))
except Exception as e:
    print("numba-cuda not installed (numba's built-in CUDA target):", type(e).__name__)
try:
    from numba import cuda
    print("numba.cuda.is_available", cuda.is_available())
    if cuda.is_available():
        d = cuda.get_current_device()
        print("gpu", d.name, "cc", d.compute_capability)
except Exception as e:
    print("numba.cuda error", e)
try:
    import torch
    print("torch.cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:
    print("torch error", e)
EOF
nvidia-smi -L 2>&1 | tee -a "$OUT_DIR/versions.txt" || true

# make `spike` importable: installed already, an editable install without deps, or a symlink tree
# (checked from / : `python -c` puts the current folder on the path, a script run from elsewhere does not)
importable() { (cd / && "$PY" -c "import spike.backends.cuda.backend" 2>/dev/null); }
if ! importable; then
  if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" >"$OUT_DIR/pip.log" 2>&1 \
      || ! importable; then
    SHIM="$(mktemp -d)"
    mkdir -p "$SHIM/spike"
    for f in "$ROOT"/spike/*; do ln -s "$f" "$SHIM/spike/"; done
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONSAFEPATH=1  # python >= 3.11: the repository's own spike/ must not shadow the shim
    log "spike made importable through $SHIM (PYTHONPATH, PYTHONSAFEPATH=1)"
  fi
fi
(cd / && "$PY" -c "import spike.backends.cuda.backend as m; print('spike from', m.__file__)") | tee -a "$OUT_DIR/summary.txt"

HAVE_PYTEST=1
"$PY" -m pytest --version >/dev/null 2>&1 || HAVE_PYTEST=0

# 4. (started first) the simulator tests, slow (tiny programs, one CPU core), in the background
SIM_OUT="$FAILED_DIR/sim_tests.out"
if [[ $HAVE_PYTEST -eq 1 ]]; then
  step sim_tests 420 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=5 -m "not gpu" \
    tests/backends/test_cuda_backend.py tests/backends/test_numba_cuda_compat.py >"$SIM_OUT" 2>&1 &
else
  step sim_tests 420 env NUMBA_ENABLE_CUDASIM=1 "$PY" tests/backends/cuda_sim_check.py >"$SIM_OUT" 2>&1 &
fi
SIM_PID=$!

# 2. real GPU: cuda == numba bit for bit: the check script that the gpu-marked test runs, run directly so
# that its per-case lines reach the log as they come (on a fresh machine Numba first compiles every numba
# and cuda kernel: over 200 s on an H100 machine's host); then the gpu-marked training tests
step gpu_tests 330 "$PY" tests/backends/cuda_sim_check.py --large
if [[ $HAVE_PYTEST -eq 1 ]]; then
  step gpu_train_tests 110 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=10 -m gpu \
    tests/kernels/test_lif_cuda_sim.py tests/kernels/test_wkv.py tests/train/test_precision.py tests/train/test_device.py
fi

# 3. benchmark (cuda backend vs dense torch.cuda), JSON under $OUT_DIR
# (benchmarks/ on the path: PYTHONSAFEPATH, set with the shim above, keeps a script's folder off it)
step benchmark 90 env PYTHONPATH="$ROOT/benchmarks${PYTHONPATH:+:$PYTHONPATH}" "$PY" benchmarks/cuda_sparsity.py --json "$OUT_DIR/cuda_sparsity.json"

# 4. the simulator tests' end
wait "$SIM_PID" || true
cat "$SIM_OUT"

FAILED=$(ls "$FAILED_DIR" | grep -v '\.out$' | tr '\n' ' ')
if [[ -n "$FAILED" ]]; then
  log "FAILED steps: $FAILED"
  exit 1
fi
log "all steps passed"
