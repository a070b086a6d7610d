#!/usr/bin/env bash
# Install the peer services the benchmark compares against, outside the project's venv:
#   thumbor (PyPI, default Pillow engine) -> benchmarks/.peers/venv
#   sharp   (npm, bundled libvips)        -> benchmarks/.peers/node
#   simplejpeg (PyPI, libjpeg-turbo)      -> benchmarks/.peers/venv (the JPEG decode limit)
# Idempotent: re-running only installs what is missing. Each part may fail alone; the benchmark prints why
# a peer is skipped (python -m benchmarks.suite run reads .peers/status.json written here).
set -u
here="$(cd "$(dirname "$0")" && pwd)"
peers="$here/.peers"
mkdir -p "$peers"
python="${PYTHON:-python3}"
thumbor_ok=false
sharp_ok=false

if [ ! -x "$peers/venv/bin/thumbor" ]; then
  "$python" -m venv "$peers/venv" \
    && "$peers/venv/bin/pip" install -q --disable-pip-version-check "thumbor>=7.7" "simplejpeg>=1.7" \
    || echo "setup_peers: thumbor install failed" >&2
fi
if "$peers/venv/bin/python" -c "import thumbor, simplejpeg" 2>/dev/null; then thumbor_ok=true; fi

if [ ! -d "$peers/node/node_modules/sharp" ]; then
  mkdir -p "$peers/node"
  cp "$here/peers/package.json" "$peers/node/package.json"
  (cd "$peers/node" && npm install --no-audit --no-fund --loglevel=error) \
    || echo "setup_peers: sharp install failed (needs node >= 18 and npm)" >&2
fi
if (cd "$peers/node" && node -e "require('sharp')") 2>/dev/null; then sharp_ok=true; fi

echo "{\"thumbor\": $thumbor_ok, \"sharp\": $sharp_ok}" > "$peers/status.json"
echo "setup_peers: thumbor=$thumbor_ok sharp=$sharp_ok ($peers)"
