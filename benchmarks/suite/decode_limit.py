"""The JPEG decode limit: libjpeg-turbo decoding each file at the shrink-on-load scale the worker uses, and
nothing else (no resize, no colour, no encode, no write). No thumbnailer on the same cores can pass it.

simplejpeg (PyPI, libjpeg-turbo; installed in the peers' venv by setup_peers.sh) when present, else pyvips
``jpegload_buffer(shrink=N)`` to a memory image.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from benchmarks.harness import PEERS, LoopChild, Row, Workload, loop_env, row_from_group, run_loop_group

PEER_PYTHON = PEERS / "venv" / "bin" / "python"


def shrink_plan(workload: Workload) -> dict[str, list[int]]:
    """file -> [stored width, stored height, shrink], with the worker's own shrink rule."""
    import pyvips

    from imgworker.core.geometry import plan
    from imgworker.core.limits import Limits
    from imgworker.imaging.load import shrink_on_load

    out: dict[str, list[int]] = {}
    for path in workload.files:
        image = pyvips.Image.new_from_file(path, access="sequential")
        w, h = image.width, image.height
        orientation = image.get("orientation") if "orientation" in image.get_fields() else 1
        dw, dh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
        geo = plan(dw, dh, workload.op.width, workload.op.height, "inside", Limits())
        out[path] = [w, h, shrink_on_load(dw, dh, geo.resize_w, geo.resize_h)]
    return out


def make_work(engine: str, plan: dict[str, list[int]]) -> Any:
    if engine == "simplejpeg":
        import simplejpeg

        def work(path: str, data: bytes) -> None:
            w, h, s = plan[path]
            # The smallest libjpeg-turbo scale M/8 whose output is at least 1/s of each side: exactly 1/s.
            simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=math.ceil(w / s), min_height=math.ceil(h / s))

        return work
    import pyvips

    def vwork(path: str, data: bytes) -> None:
        pyvips.Image.jpegload_buffer(data, shrink=plan[path][2]).copy_memory()

    return vwork


def run(workload: Workload, processes: int, seconds: float) -> Row:
    plan = shrink_plan(workload)
    engine, python = ("simplejpeg", str(PEER_PYTHON))
    probe = [python, "-c", "import simplejpeg"]
    import subprocess

    if not PEER_PYTHON.exists() or subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        engine, python = "vips jpegload", sys.executable
    spec = {"files": list(workload.files), "plan": plan, "engine": engine}
    cmd = [python, "-m", "benchmarks.suite.decode_limit", "--child", json.dumps(spec)]
    got = run_loop_group(cmd, processes, seconds, env=loop_env())
    shrinks = sorted({v[2] for v in plan.values()})
    row = row_from_group(workload.name, f"decode limit ({engine})", processes, got,
                         f"decode only, at the worker's shrink-on-load 1/{'/'.join(map(str, shrinks))}")
    row.extra["shrink"] = {k.rsplit("/", 1)[-1]: v[2] for k, v in plan.items()}
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True)
    ap.add_argument("--index", type=int, default=0)
    args = ap.parse_args(argv)
    spec = json.loads(args.child)
    LoopChild(spec["files"], args.index).serve(make_work(spec["engine"], spec["plan"]))


if __name__ == "__main__":
    main()
