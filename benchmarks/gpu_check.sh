#!/usr/bin/env bash
# The GPU check: the CUDA tests and the GPU benchmark, with their logs and figures.
#
#   bash benchmarks/gpu_check.sh OUTDIR             on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh OUTDIR --dry-run   anywhere: the same steps on the CPU
#
# Steps: install the project unless it imports already (skipped by --dry-run);
# describe the machine (nvidia-smi, Python, torch, CUDA); run the tests marked
# `cuda` (they skip without a GPU); run the GPU comparison of benchmarks/run.py:
# the built-in network at 32 and 64 px and resnet18 fine-tuning and feature
# extraction at 224 px, against skorch's defaults and hand-written loops (on the
# CPU, in a tiny size, with --dry-run). A failed step does not stop the
# later ones: each one's exit status goes to OUTDIR/summary.txt, and the script
# exits non-zero if any failed. Set PYTHON to choose the interpreter.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

dry_run=0
outdir=
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option '$arg'." >&2; usage >&2; exit 2 ;;
    *)
      if [[ -n "$outdir" ]]; then
        echo "gpu_check.sh: one OUTDIR expected, got '$outdir' and '$arg'." >&2
        exit 2
      fi
      outdir=$arg
      ;;
  esac
done
if [[ -z "$outdir" ]]; then
  echo "gpu_check.sh: OUTDIR is missing: where should the logs and figures go?" >&2
  usage >&2
  exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
cd "$repo"

if [[ -z "${PYTHON:-}" ]]; then
  if command -v python > /dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
# This checkout's code, whatever copy of the package is installed.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1

failed=0
summary=()
record() { # record STEP STATUS [NOTE]
  summary+=("$(printf '%-12s exit %-4s %s' "$1" "$2" "${3:-}")")
  if [[ "$2" != 0 ]]; then failed=1; fi
}
step() { echo; echo "== $1 ($((SECONDS - started)) s elapsed)"; }
# Stops a step that hangs, so that the later steps still get their time.
limited() { # limited SECONDS COMMAND...
  local seconds=$1
  shift
  if command -v timeout > /dev/null 2>&1; then
    timeout --kill-after=15 "$seconds" "$@"
  else
    "$@"
  fi
}
mode=gpu
if [[ $dry_run == 1 ]]; then mode="dry run (CPU)"; fi

check() {
  started=$SECONDS
  echo "gpu_check.sh: $mode, checkout $repo, output $outdir, python $PYTHON"

  # -- install --------------------------------------------------------------------
  step install
  imports="import sklearn_cnn, torch, skorch, sklearn, pytest"
  if [[ $dry_run == 1 ]]; then
    echo "dry run: no install"
    record install 0 "skipped (dry run)"
  elif "$PYTHON" -c "$imports" 2> /dev/null; then
    echo "$imports: works already; no install"
    record install 0 "skipped (already importable)"
  else
    echo "$imports: fails; installing: $PYTHON -m pip install -e .[test]"
    status=0
    limited 120 "$PYTHON" -m pip install --retries 1 --timeout 20 -e ".[test]" ||
      status=$?
    if [[ $status != 0 ]]; then
      echo "pip failed with exit status $status (offline?); checking what imports anyway"
    fi
    # The tests need only the core packages and pytest; PYTHONPATH has this checkout.
    if "$PYTHON" -c "$imports"; then
      record install 0 "pip exit $status, imports work"
    else
      record install 1 "pip exit $status, imports fail"
    fi
  fi

  # -- the machine ----------------------------------------------------------------
  step machine
  if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi 2>&1 | tee "$outdir/nvidia-smi.txt" || true
  else
    echo "nvidia-smi: not found" | tee "$outdir/nvidia-smi.txt"
  fi
  status=0
  NEEDS_CUDA=$((1 - dry_run)) "$PYTHON" - << 'EOF' 2>&1 |
import os, platform, sys
import torch, sklearn, skorch, sklearn_cnn
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "built for CUDA", torch.version.cuda)
print("sklearn_cnn", sklearn_cnn.__version__, sklearn_cnn.__file__)
print("scikit-learn", sklearn.__version__, "skorch", skorch.__version__)
try:
    import accelerate
    print("accelerate", accelerate.__version__)
except ImportError:
    print("accelerate: not importable; its CUDA test will skip")
print("CUDA available", torch.cuda.is_available())
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    print("device", properties.name, f"{properties.total_memory / 2**30:.1f} GiB")
    print("capability", torch.cuda.get_device_capability(), "bf16",
          torch.cuda.is_bf16_supported(), "cuDNN", torch.backends.cudnn.version())
elif os.environ["NEEDS_CUDA"] == "1":
    # Every test would skip and the check would pass with nothing checked.
    sys.exit("CUDA is not available to torch: this is no GPU check")
EOF
    tee "$outdir/environment.txt" || status=$?
  record machine "$status"

  # -- the tests marked cuda ------------------------------------------------------
  step tests
  status=0
  limited 240 "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider --durations=15 \
    --junitxml="$outdir/pytest_cuda.xml" tests 2>&1 |
    tee "$outdir/pytest_cuda.log" || status=$?
  record tests "$status" "pytest -m cuda tests"

  # -- the GPU benchmark ----------------------------------------------------------
  step benchmark
  if [[ $dry_run == 1 ]]; then
    sizes=(--suite gpu --device cpu --quick --samples 32 --epochs 1 --repeats 1)
  else
    sizes=(--suite gpu --device cuda --repeats 5)
  fi
  status=0
  limited 180 "$PYTHON" benchmarks/run.py "${sizes[@]}" \
    --output "$outdir/gpu_benchmark.json" --markdown "$outdir/gpu_benchmark.md" 2>&1 |
    tee "$outdir/gpu_benchmark.log" || status=$?
  record benchmark "$status" "benchmarks/run.py ${sizes[*]}"

  # -- summary --------------------------------------------------------------------
  step summary
  {
    echo "gpu_check.sh: $mode, $((SECONDS - started)) s, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%s\n' "${summary[@]}"
  } | tee "$outdir/summary.txt"
  echo "files in $outdir:"
  ls -1 "$outdir"
  if [[ $failed != 0 ]]; then
    echo "gpu_check.sh: some steps FAILED (see above; exit status 124: out of time)"
    return 1
  fi
  echo "gpu_check.sh: all steps passed"
}

# The whole log to OUTDIR too; the pipeline ends when tee has written it all.
check 2>&1 | tee "$outdir/gpu_check.log"
