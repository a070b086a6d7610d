"""imgworker's own CPU backend in a bare loop: ``CpuBackend.resize`` + write the bytes, no Gearman, no store.

Between the plain pyvips loop (what a developer would write) and the end-to-end service: the backend's own
operation choices (probe, shrink-on-load, sRGB, encode) show against the first, the service overhead
(gearmand, threads, file store, JSON) against the second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

from benchmarks.harness import LoopChild, Row, Workload, loop_env, row_from_group, run_loop_group

ENGINE = "imgworker backend loop"


def make_work(op: dict[str, Any], out_dir: str) -> Any:
    from imgworker.backends.cpu import CpuBackend
    from imgworker.worker import memory

    memory.limit_malloc_arenas()  # the worker process's own memory settings
    memory.keep_job_buffers()
    from imgworker.core.contract import ResizeSpec
    from imgworker.core.limits import Limits

    backend, limits = CpuBackend(), Limits()
    spec = ResizeSpec(width=op["width"], height=op["height"], quality=op["quality"])

    def work(path: str, data: bytes) -> None:
        rendered = backend.resize(data, spec, limits)
        with open(os.path.join(out_dir, os.path.basename(path) + ".jpg"), "wb") as fh:
            fh.write(rendered.data)

    return work


def run(workload: Workload, processes: int, seconds: float) -> Row:
    with tempfile.TemporaryDirectory(prefix="bench-backend-") as out:
        cmd = [sys.executable, "-m", "benchmarks.suite.engine_backend",
               "--child", json.dumps(workload.spec()), "--out", out]
        got = run_loop_group(cmd, processes, seconds, env=loop_env())
    return row_from_group(workload.name, ENGINE, processes, got, "CpuBackend.resize in-process, VIPS_CONCURRENCY=1")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--index", type=int, default=0)
    args = ap.parse_args(argv)
    spec = json.loads(args.child)
    LoopChild(spec["files"], args.index).serve(make_work(spec["op"], args.out))


if __name__ == "__main__":
    main()
