"""Cost of one 3-size x 2-format pipeline job vs six separate ``resize`` jobs, measured in one run.

Both run in-process through Service.handle (read, decode, process, encode, write to a temp FileStore), one
job at a time, so the figures compare the work, not the queue. ``web_equivalent`` encodes exactly what the six
resize jobs encode (plain JPEG and WebP, same qualities); the shipped ``web`` adds progressive mozjpeg-style
JPEG (trellis quantisation etc.), which costs encode time for smaller files.

    /tmp/venv/bin/python benchmarks/pipeline_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # as in a worker process (app.run_one)

from imgworker.backends.cpu import CpuBackend
from imgworker.limits import Limits
from imgworker.pipeline import PipelineSet
from imgworker.service import Service
from imgworker.stores import FileStore, Stores

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "corpus" / "photos"
SOURCES = ("kleiber_6028x3391_baseline.jpg", "dragonfly_4224x3168_baseline.jpg", "sunset_4272x2848.webp")
WIDTHS = (256, 512, 1024)
EQUIVALENT = """\
name: web_equivalent
steps: [auto_orient, colour]
outputs:
  - resize: {width: [256, 512, 1024]}
    encode:
      - {format: webp, quality: 80}
      - {format: jpeg, quality: 80}
"""


def timed(fn: object, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pdir = Path(tmp) / "pipelines"
        pdir.mkdir()
        (pdir / "web.yaml").write_text((REPO / "pipelines" / "web.yaml").read_text())
        (pdir / "web_equivalent.yaml").write_text(EQUIVALENT)
        pipelines = PipelineSet.load(str(pdir), "cpu")
        service = Service(Stores({"file": FileStore([PHOTOS, tmp])}), CpuBackend(), Limits(), pipelines.current)
        print(f"{'source':38} {'6 resize jobs':>14} {'web_equivalent':>15} {'ratio':>6} {'web':>8} {'ratio':>6}")
        for name in SOURCES:
            src = (PHOTOS / name).as_uri()

            def six(src: str = src) -> None:
                for width in WIDTHS:
                    for fmt in ("webp", "jpeg"):
                        payload = {"src": src, "dst": f"file://{tmp}/r-{width}.{fmt}", "width": width,
                                   "format": fmt, "quality": 80}
                        service.handle(json.dumps(payload).encode())

            def pipeline(pname: str, src: str = src) -> object:
                payload = json.dumps({"src": src, "dst": f"file://{tmp}/{pname}/"}).encode()
                return lambda: service.handle(payload, pipeline=pname)

            six()  # warm up: first-call costs (libvips operation cache, imports) out of the figures
            t_six = timed(six, args.rounds)
            t_eq = timed(pipeline("web_equivalent"), args.rounds)
            t_web = timed(pipeline("web"), args.rounds)
            print(f"{name:38} {t_six:12.0f}ms {t_eq:13.0f}ms {t_eq / t_six:6.2f} {t_web:6.0f}ms {t_web / t_six:6.2f}")


if __name__ == "__main__":
    main()
