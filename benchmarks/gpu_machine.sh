#!/usr/bin/env bash
# On a lent GPU machine with no network (its python3 holds torch): install the dependencies
# carried as wheels in .whl/ and this project, then run one stage. Logs go to $OUT.
#   bash benchmarks/gpu_machine.sh smoke   # the README's flow with CUDA visible (device auto)
#   bash benchmarks/gpu_machine.sh tests   # the test suite with CUDA visible
#   bash benchmarks/gpu_machine.sh bench   # benchmarks/bench_gpu.py -> docs/benchmark-results/gpu.json
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, zarr, dask; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'zarr', zarr.__version__, 'dask', dask.__version__)"
repo=$PWD
for stage in "$@"; do
  case $stage in
  smoke)
    w=$(mktemp -d) && cd "$w" || exit 1
    (
      set -e -x
      orient precompute --data-opt n=256 --out cache.zarr
      orient info cache.zarr
      orient verify cache.zarr
      orient train --store cache.zarr --max-steps 30 --log-every 10
      orient sample --n 16
    ) 2>&1 | tee "$OUT/smoke.log"
    echo "smoke exit: $?"
    cd "$repo" || exit 1
    ;;
  tests)
    timeout "${TESTS_TIMEOUT:-330}" python3 -m pytest -v --tb=short -p no:cacheprovider ${TESTS_ARGS:-} 2>&1 | tee "$OUT/tests.log" | grep -E "FAILED|ERROR|passed|failed" | tail -40
    echo "tests exit: $?"
    ;;
  bench)
    (cd benchmarks && timeout "${BENCH_TIMEOUT:-540}" python3 bench_gpu.py ${BENCH_ARGS:-}) 2>&1 | tee "$OUT/bench.log" | tail -60
    echo "bench exit: $?"
    cp docs/benchmark-results/gpu*.json "$OUT/" 2>/dev/null
    ;;
  esac
done
