"""The "no service" reference: the same libvips operations as the worker, in a bare loop, one process per core.

Each job reads the file, ``thumbnail_buffer`` (shrink-on-load, EXIF orientation, colour management), flattens
alpha for JPEG, converts to 8-bit sRGB, ``jpegsave_buffer`` Q85 and writes the bytes to a file: the minimum
a service has to do, so imgworker's end-to-end figure divided by this one is our overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import LoopChild, Row, Workload, loop_env, row_from_group, run_loop_group

ENGINE = "pyvips loop"


def make_work(op: dict[str, Any], out_dir: str) -> Any:
    import pyvips

    width, height, quality = op["width"], op["height"], op["quality"]

    def work(path: str, data: bytes) -> None:
        # Width only: an unbounded height, as imgworker and sharp do.
        image = pyvips.Image.thumbnail_buffer(data, width, height=height or 10_000_000)
        if image.hasalpha():
            image = image.flatten(background=[255, 255, 255])
        if image.interpretation != "srgb" or image.format != "uchar":
            image = image.colourspace("srgb")
        out = image.jpegsave_buffer(Q=quality, keep="none", optimize_coding=True)
        with open(os.path.join(out_dir, os.path.basename(path) + ".jpg"), "wb") as fh:
            fh.write(out)

    return work


def run(workload: Workload, processes: int, seconds: float) -> Row:
    with tempfile.TemporaryDirectory(prefix="bench-pyvips-") as out:
        cmd = [sys.executable, "-m", "benchmarks.suite.engine_pyvips",
               "--child", json.dumps(workload.spec()), "--out", out]
        got = run_loop_group(cmd, processes, seconds, env=loop_env())
    return row_from_group(workload.name, ENGINE, processes, got, "VIPS_CONCURRENCY=1, in-process, no I/O service")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--index", type=int, default=0)
    args = ap.parse_args(argv)
    spec = json.loads(args.child)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    LoopChild(spec["files"], args.index).serve(make_work(spec["op"], args.out))


if __name__ == "__main__":
    main()
