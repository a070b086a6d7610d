#!/usr/bin/env bash
# The GPU backend's device check, for the lent GPU machine (or any CUDA host): under 10 minutes, every step
# under `timeout` (install 60 + nvidia-smi 15 + env 60 + tests 150 + bench 185 + summary 15 = 485 s; checked by
# tests/unit/backends/test_gpu_device_env.py, which also collects GPU_TESTS with only the device's packages).
#   bash benchmarks/gpu/check.sh            (from the repo root)
# Installs pyvips, pyvips-binary, cffi, pycparser and (optionally) nvImageCodec + nvJPEG from wheels carried
# in .whl/ (nothing can be downloaded there), runs `pytest -m gpu $GPU_TESTS` and
# benchmarks/gpu/throughput.py, and prints a JSON summary (also written to $OUT/summary.json).
# Photos: $IMGWORKER_CORPUS, else .whl/corpus if carried, else ../shared/corpus.
# Without a GPU (checks the script, not the speed; the -m gpu tests then fail at their fixtures):
#   GPU_CHECK_NO_INSTALL=1 PYTHON=.venv/bin/python BENCH_IMAGES=4 BENCH_GPU_IMAGES=6 \
#     BENCH_ARGS="--fake --procs 2 --gpu-threads 4 --gpu-procs 1,2 --sizes 512" bash benchmarks/gpu/check.sh
set -u
cd "$(dirname "$0")/../.."  # the repository root
OUT="${OUT:-/tmp/gpu_check_out}"
. benchmarks/gpu/env.sh  # PY, PYTHONPATH, the corpus, wheels from .whl/
# The resize kernels, the GPU decode and encode: ~25 tests, the RawModule and ~20 CuPy kernels to compile cold.
GPU_TESTS="tests/gpu/test_gpu_cuda.py"

timeout 15 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/nvidia-smi.txt"
timeout 60 "$PY" - <<'PY' 2>&1 | tee "$OUT/env.txt"
import cupy, pyvips
from imgworker.backends.gpu import detect
print("cupy", cupy.__version__, "libvips", pyvips.version(0), pyvips.version(1), pyvips.version(2))
print("probe", detect.probe())
print("nvimgcodec", detect.nvimgcodec())
try:
    import nvidia.nvimgcodec as m
    print("nvimgcodec", m.__version__, detect.gpu_decoder(m))
except Exception as exc:
    print("nvimgcodec unusable:", type(exc).__name__, exc)
PY

start=$(date +%s)
timeout 150 "$PY" -m pytest -m gpu $GPU_TESTS --timeout 60 -p no:cacheprovider -q -ra --junitxml="$OUT/pytest.xml" 2>&1 \
  | tee "$OUT/pytest.log" | tail -40
tests_rc=${PIPESTATUS[0]}
tests_s=$(( $(date +%s) - start ))

start=$(date +%s)
timeout 185 "$PY" benchmarks/gpu/throughput.py --images "${BENCH_IMAGES:-96}" --gpu-images "${BENCH_GPU_IMAGES:-256}" \
  --json "$OUT/bench.json" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
bench_rc=$?
bench_s=$(( $(date +%s) - start ))
grep -E '^[0-9]+px ' "$OUT/bench.log"  # one line per GPU case; the figures are in the summary below
tail -3 "$OUT/bench.log"

timeout 15 "$PY" - "$OUT" "$tests_rc" "$tests_s" "$bench_rc" "$bench_s" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, tests_rc, tests_s, bench_rc, bench_s = Path(sys.argv[1]), *map(int, sys.argv[2:])
summary = {"tests_rc": tests_rc, "tests_s": tests_s, "bench_rc": bench_rc, "bench_s": bench_s}
try:
    suite = ET.parse(out / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    summary["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
except Exception as exc:
    summary["tests"] = f"no junit xml: {exc}"
try:
    summary["bench"] = json.loads((out / "bench.json").read_text())
except Exception as exc:
    summary["bench"] = f"no bench json: {exc}"
summary["ok"] = tests_rc == 0 and bench_rc == 0
text = json.dumps(summary, indent=1)
(out / "summary.json").write_text(text)
print(text)
PY
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
