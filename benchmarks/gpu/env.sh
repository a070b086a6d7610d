# Shared set-up of the GPU device scripts (gpu_check.sh, gpu_pipelines_check.sh, gpu_ceiling_check.sh), sourced
# from the repository root after OUT is set: Python, the corpus, and the wheels carried in .whl/ (nothing can be
# downloaded on the device machine). Sets PY and PYTHONPATH.
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT"
if [ -z "${IMGWORKER_CORPUS:-}" ] && [ -d .whl/corpus/photos ]; then export IMGWORKER_CORPUS="$PWD/.whl/corpus"; fi

if [ -z "${GPU_CHECK_NO_INSTALL:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo '{"ok": false, "stage": "install"}'; exit 1; }
  # nvImageCodec ships nvidia/__init__.py: drop it so `nvidia` stays a namespace package and the image's
  # own nvidia.* packages (CUDA libraries for CuPy) remain importable.
  rm -f /tmp/site/nvidia/__init__.py
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
