"""Peer: sharp (npm, its bundled libvips) doing the same job in a loop, one Node process per core.

``sharp.concurrency(1)`` and ``UV_THREADPOOL_SIZE=1`` give each process one libvips thread, like our workers'
``VIPS_CONCURRENCY=1``. Installed by benchmarks/setup_peers.sh into benchmarks/.peers/node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

from benchmarks.harness import PEERS, PEERS_DIR, Row, Workload, loop_env, row_from_group, run_loop_group

ENGINE = "sharp"
NODE_DIR = PEERS / "node"


def unavailable() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "sharp").is_dir():
        return "sharp is not installed: run benchmarks/setup_peers.sh"
    return None


def version() -> str:
    out = subprocess.run(
        ["node", "-e", "const s=require('sharp');console.log(s.versions.sharp+' (libvips '+s.versions.vips+')')"],
        cwd=NODE_DIR, capture_output=True, text=True, check=False,
    )
    return out.stdout.strip() or "?"


def run(workload: Workload, processes: int, seconds: float) -> Row:
    why = unavailable()
    if why:
        return Row(workload.name, ENGINE, skipped=why)
    with tempfile.TemporaryDirectory(prefix="bench-sharp-") as out:
        env = loop_env({"NODE_PATH": str(NODE_DIR / "node_modules")})
        cmd = ["node", str(PEERS_DIR / "sharp_loop.js"), json.dumps(workload.spec()), out]
        got = run_loop_group(cmd, processes, seconds, env=env)
    return row_from_group(workload.name, ENGINE, processes, got, "concurrency(1), UV_THREADPOOL_SIZE=1, cache off")
