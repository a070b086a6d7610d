#!/usr/bin/env bash
# Device check of the engine (issue 13), for a lent GPU machine: one go, under 10 minutes, every step under
# `timeout` (install 60 + nvidia-smi 15 + tests 240 + bench 250 = 565 s; checked by
# tests/unit/backends/test_gpu_device_env.py, which also collects GPU_TESTS with only the device's packages).
#   bash benchmarks/gpu/pipelines_check.sh          (from the repo root; wheels in .whl/ as for gpu_check.sh)
# 1. `pytest -m gpu tests/gpu/test_gpu_steps.py tests/gpu/test_gpu_cuda.py tests/gpu/test_gpu_device_io.py`: every
#    step's array code on CuPy against NumPy, the shipped pipelines on the GPU backend against the CPU backend,
#    the resize kernels, pipeline jobs' nvImageCodec decode (one call per batch) and encode.
# 2. benchmarks/gpu/pipelines.py: each shipped pipeline, GPU backend (32 threads) vs CPU backend in one
#    process per core, same run, images/s + per-stage ms (decode_gpu, encode_gpu among them) and where the
#    GPU jobs decoded/encoded (gpu_routes) -> $OUT/pipelines.json.
# Without a GPU (checks the script only): GPU_CHECK_NO_INSTALL=1 PYTHON=.venv/bin/python BENCH_ARGS="--numpy
#   --jobs 4 --procs 1" SKIP_TESTS=1 bash benchmarks/gpu/pipelines_check.sh
set -u
cd "$(dirname "$0")/../.."  # the repository root
OUT="${OUT:-/tmp/gpu_pipelines_out}"
. benchmarks/gpu/env.sh  # PY, PYTHONPATH, the corpus, wheels from .whl/
export VIPS_CONCURRENCY=1
# The kernels first (the rest builds on them), then every step on CuPy (~100 cases: most of the cold CuPy
# kernel compiles), then the device decode / encode of pipeline jobs.
GPU_TESTS="tests/gpu/test_gpu_cuda.py tests/gpu/test_gpu_steps.py tests/gpu/test_gpu_device_io.py"
timeout 15 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/nvidia-smi.txt"
tests_rc=0
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 240 "$PY" -m pytest -q -m gpu --timeout 60 -p no:cacheprovider $GPU_TESTS --junitxml="$OUT/pytest.xml" \
    2>&1 | tail -40 | tee "$OUT/tests.txt"
  tests_rc=${PIPESTATUS[0]}
fi
timeout 250 "$PY" -m benchmarks.gpu.pipelines --out "$OUT/pipelines.json" ${BENCH_ARGS:-} 2>&1 \
  | tail -30 | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}
echo "{\"tests_rc\": $tests_rc, \"bench_rc\": $bench_rc}" | tee "$OUT/summary.json"
