#!/usr/bin/env bash
# GPU CI job: run on a machine with CUDA, CuPy and PyTorch (no network needed).
#
#   bash benchmarks/gpu_ci.sh [OUTPUT_DIR]
#
# 1. makes the checkout importable (editable install when pip can build offline, else PYTHONPATH);
# 2. runs `pytest -m gpu` with TSANOMALY_REQUIRE_GPU=1: a broken CuPy or an invisible device
#    FAILS the GPU tests instead of skipping them;
# 3. runs the ASV suite against this environment (`asv run -E existing:same`, GPU cases included);
# 4. runs benchmarks/compare.py for every detector (and the matrix profile's plain distances);
# and writes every log under OUTPUT_DIR (default benchmarks/results/gpu-ci-<date>), beginning with
# environment.txt (GPU, CuPy and PyTorch versions, or why they could not be imported). The exit
# status is 1 when a step above failed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu-ci-$(date -u +%Y%m%d)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TSANOMALY_REQUIRE_GPU=1

python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# The environment record never stops the job: a missing or broken CuPy / PyTorch is written
# down here, and the GPU tests below fail on it (TSANOMALY_REQUIRE_GPU=1), with their log.
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
  python3 - <<'PY' 2>&1 || echo "python3 could not record the environment (exit status $?)"
try:
    import cupy
    print("cupy", cupy.__version__)
except Exception as exc:  # ImportError, or a broken CUDA install
    print(f"cupy: import failed: {type(exc).__name__}: {exc}")
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except Exception as exc:
    print(f"torch: import failed: {type(exc).__name__}: {exc}")
PY
} | tee "$out/environment.txt"

status=0
python3 -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/pytest-gpu.log" || status=1

if python3 -c "import asv" 2>/dev/null; then
  asv machine --yes >/dev/null || status=1  # under set -e it would end the job here
  asv run -E existing:same --set-commit-hash "$(git rev-parse HEAD)" --show-stderr 2>&1 | tee "$out/asv.log" || status=1
else
  echo "asv is not installed: ASV suite not run" | tee "$out/asv.log"; status=1
fi

for detector in stl mp lstm; do
  python3 benchmarks/compare.py "$detector" 2>&1 | tee "$out/compare-$detector.txt" || status=1
done
python3 benchmarks/compare.py mp --plain 2>&1 | tee "$out/compare-mp-plain.txt" || status=1
exit $status
