#!/usr/bin/env bash
# Issue 17's device run, for the next session with a GPU: under 10 minutes, every step under `timeout`
# (install 60 + nvidia-smi 2 x 15 + tests 60 + hazards 100 + sweep 300 + summary 15 = 565 s; checked by
# tests/unit/backends/test_gpu_device_env.py). From the repo root:
#   bash benchmarks/gpu/ceiling_check.sh
# Wheels and photos as for benchmarks/gpu/check.sh (.whl/, .whl/corpus; add nvidia_ml_py-*.whl for NVML,
# else the utilisation comes from `nvidia-smi dmon`). Writes $OUT/ceiling.json (sweep + hazards, utilisation
# beside every GPU figure), $OUT/pytest.xml, logs, and $OUT/summary.json.
# Without a GPU (checks the script, not the speed; the -m gpu tests then fail at their fixtures):
#   GPU_CHECK_NO_INSTALL=1 PYTHON=.venv/bin/python CEILING_ARGS="--fake --images 2 --gpu-images 2 --procs 1 \
#     --rounds 1 --layouts 1:1:2:off" bash benchmarks/gpu/ceiling_check.sh
set -u
cd "$(dirname "$0")/../.."  # the repository root
OUT="${OUT:-/tmp/gpu_ceiling_out}"
. benchmarks/gpu/env.sh  # PY, PYTHONPATH, the corpus, wheels from .whl/

# Only the tests the sweep depends on: the hardware-engine probe and the GPU decode (check.sh runs the rest).
GPU_TESTS="tests/gpu/test_gpu_cuda.py::test_hardware_jpeg_engines_are_detected
  tests/gpu/test_gpu_cuda.py::test_gpu_decode_matches_the_cpu_decode_pipeline
  tests/gpu/test_gpu_cuda.py::test_gpu_decode_batches_concurrent_jobs_and_bad_files_fail_like_cpu"

{ timeout 15 nvidia-smi --query-gpu=name,driver_version,memory.total,mig.mode.current --format=csv,noheader; \
  timeout 15 nvidia-smi -q -d UTILIZATION | head -40; } > "$OUT/nvidia-smi.txt" 2>&1
head -3 "$OUT/nvidia-smi.txt"
cat /proc/loadavg > "$OUT/loadavg-start.txt"

start=$(date +%s)
timeout 60 "$PY" -m pytest -m gpu $GPU_TESTS --timeout 45 -p no:cacheprovider -q -ra --junitxml="$OUT/pytest.xml" 2>&1 \
  | tee "$OUT/pytest.log" | tail -15
tests_rc=${PIPESTATUS[0]}
tests_s=$(( $(date +%s) - start ))

# Hazards first (short, and a corrupt decode makes the speed figures moot), then the sweep; one JSON file each
# so that a timeout in the sweep keeps the hazard results.
start=$(date +%s)
timeout 100 "$PY" benchmarks/gpu/ceiling.py --hazards-only --json "$OUT/hazards.json" ${CEILING_ARGS:-} \
  > "$OUT/hazards.log" 2>&1
hazards_rc=$?
timeout 300 "$PY" benchmarks/gpu/ceiling.py --sweep-only --json "$OUT/ceiling.json" ${CEILING_ARGS:-} \
  > "$OUT/ceiling.log" 2>&1
sweep_rc=$?
bench_s=$(( $(date +%s) - start ))
grep -E '^(hazard|baseline|mixed) ' "$OUT/hazards.log" "$OUT/ceiling.log" | cut -c1-220
tail -3 "$OUT/ceiling.log"

timeout 15 "$PY" - "$OUT" "$tests_rc" "$tests_s" "$hazards_rc" "$sweep_rc" "$bench_s" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, tests_rc, tests_s, hazards_rc, sweep_rc, bench_s = Path(sys.argv[1]), *map(int, sys.argv[2:])
summary = {"tests_rc": tests_rc, "tests_s": tests_s, "hazards_rc": hazards_rc, "sweep_rc": sweep_rc,
           "bench_s": bench_s, "loadavg_end": Path("/proc/loadavg").read_text().strip()}
try:
    suite = ET.parse(out / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    summary["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
except Exception as exc:
    summary["tests"] = f"no junit xml: {exc}"
for name in ("hazards", "ceiling"):
    try:
        summary[name] = json.loads((out / f"{name}.json").read_text())
    except Exception as exc:
        summary[name] = f"no {name} json: {exc}"
bad = [k for k, v in (summary["hazards"].get("hazards", {}) if isinstance(summary["hazards"], dict) else {}).items()
       if isinstance(v, dict) and (v.get("mismatched") or v.get("error"))]
summary["hazards_failed"] = bad
# The best layout per workload (images/s), for docs/gpu.md and the defaults.
best = {}
for wl, cases in (summary["ceiling"].get("sweep", {}) if isinstance(summary["ceiling"], dict) else {}).items():
    gpu = {k: v for k, v in cases.items() if k != "cpu" and isinstance(v, dict) and "images_per_s" in v}
    if gpu:
        k = max(gpu, key=lambda k: gpu[k]["images_per_s"])
        best[wl] = {"layout": k, "images_per_s": gpu[k]["images_per_s"], "ratio": gpu[k].get("ratio_over_cpu"),
                    "jpg_util": gpu[k].get("util", {}).get("jpg")}
summary["best"] = best
summary["ok"] = tests_rc == 0 and hazards_rc == 0 and sweep_rc == 0 and not bad
text = json.dumps(summary, indent=1)
(out / "summary.json").write_text(text)
print(json.dumps({k: summary[k] for k in ("ok", "tests", "hazards_failed", "best", "tests_s", "bench_s")}, indent=1))
PY
[ "$tests_rc" -eq 0 ] && [ "$hazards_rc" -eq 0 ] && [ "$sweep_rc" -eq 0 ]
