"""Cost of one 3-size x 2-format pipeline job vs six separate ``resize`` jobs, measured in one run.

Both run in-process through Service.handle (read, decode, process, encode, write to a temp FileStore), one
job at a time, so the figures compare the work, not the queue. ``web_equivalent`` encodes exactly what the six
resize jobs encode (plain JPEG and WebP, same qualities); the shipped ``web`` adds progressive mozjpeg-style
JPEG (trellis quantisation etc.), which costs encode time for smaller files. ``thumb-decode`` is
``web_equivalent`` with the pipeline's JPEG decode left to libvips thumbnail's shrink-on-load (which keeps a
factor of 2 spare) instead of the smallest-scale decode (imaging.load.load_jpeg_resized): the reference for it.

    .venv/bin/python benchmarks/service/pipeline.py [--rounds 5] [--clock cpu|wall]

``--clock cpu`` (the default) times with the process's CPU time, which a machine shared with other work
disturbs much less than wall time (libvips runs one thread per job here, VIPS_CONCURRENCY=1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # as in a worker process (worker/process.py run_one)

from imgworker.backends.cpu import CpuBackend
from imgworker.core.limits import Limits
from imgworker.jobs.service import Service
from imgworker.pipeline import PipelineSet
from imgworker.pipeline import decode as decoder
from imgworker.stores import FileStore, Stores

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness import corpus_photos  # noqa: E402

PHOTOS = corpus_photos()
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


@contextmanager
def thumbnail_decode() -> Iterator[None]:
    """The pipeline's decode without the JPEG fast path (no header: libvips thumbnail picks the shrink)."""
    real = decoder.decode

    def plain(source: bytes, size: tuple[int, int] | None, **kw: Any) -> Any:
        kw.pop("head", None)
        return real(source, size, **kw)

    decoder.decode = plain
    try:
        yield
    finally:
        decoder.decode = real


def reference(fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with thumbnail_decode():
            fn()
    return run


def timed(fn: Callable[[], object], rounds: int, clock: Callable[[], float] = time.perf_counter) -> float:
    samples = []
    for _ in range(rounds):
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000)
    return statistics.median(samples)


def paired(new: Callable[[], object], old: Callable[[], object], rounds: int,
           clock: Callable[[], float]) -> tuple[float, float]:
    """Medians of ``new`` and ``old`` run alternately, so load that comes and goes hits both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, out in ((new, samples[0]), (old, samples[1])):
            t0 = clock()
            fn()
            out.append((clock() - t0) * 1000)
    return statistics.median(samples[0]), statistics.median(samples[1])


def decode_stage(rounds: int, clock: Callable[[], float]) -> None:
    """The pipeline's one decode alone (materialised), smallest-scale JPEG decode vs libvips thumbnail's."""
    limits = Limits()
    print(f"\n{'decode only':34} {'to':>5} {'smallest scale':>14} {'thumbnail':>10} {'ratio':>6}")
    for name in SOURCES:
        source = (PHOTOS / name).read_bytes()
        head = decoder.header(source, limits)
        w, h = head.shown(True)
        for width in (1024, 2048):
            size = (width, round(h * width / w))

            def once(kw: dict[str, Any], source: bytes = source, size: tuple[int, int] = size) -> Callable[[], object]:
                return lambda: decoder.decode(source, size, fail_on="warning", orient=True, frames=False,
                                              **kw).copy_memory()

            t_new, t_old = paired(once({"head": head}), once({}), rounds * 3, clock)
            print(f"{name:34} {width:5} {t_new:12.0f}ms {t_old:8.0f}ms {t_new / t_old:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"median of {args.rounds} rounds, {args.clock} time")
    with tempfile.TemporaryDirectory() as tmp:
        pdir = Path(tmp) / "pipelines"
        pdir.mkdir()
        (pdir / "web.yaml").write_text((REPO / "pipelines" / "web.yaml").read_text())
        (pdir / "web_equivalent.yaml").write_text(EQUIVALENT)
        pipelines = PipelineSet.load(str(pdir), "cpu")
        service = Service(Stores({"file": FileStore([PHOTOS, tmp])}), CpuBackend(), Limits(), pipelines.current)
        print(f"{'source':34} {'6 resize jobs':>14} {'web_equivalent':>15} {'ratio':>6} {'thumb-decode':>13} "
              f"{'eq/thumb':>8} {'web':>8} {'ratio':>6}")
        for name in SOURCES:
            src = (PHOTOS / name).as_uri()

            def six(src: str = src) -> None:
                for width in WIDTHS:
                    for fmt in ("webp", "jpeg"):
                        payload = {"src": src, "dst": f"file://{tmp}/r-{width}.{fmt}", "width": width,
                                   "format": fmt, "quality": 80}
                        service.handle(json.dumps(payload).encode())

            def pipeline(pname: str, src: str = src) -> Callable[[], object]:
                payload = json.dumps({"src": src, "dst": f"file://{tmp}/{pname}/"}).encode()
                return lambda: service.handle(payload, pipeline=pname)

            six()  # warm up: first-call costs (libvips operation cache, imports) out of the figures
            t_six = timed(six, args.rounds, clock)
            t_eq, t_ref = paired(pipeline("web_equivalent"), reference(pipeline("web_equivalent")), args.rounds, clock)
            t_web = timed(pipeline("web"), args.rounds, clock)
            print(f"{name:34} {t_six:12.0f}ms {t_eq:13.0f}ms {t_eq / t_six:6.2f} {t_ref:11.0f}ms {t_eq / t_ref:8.2f} "
                  f"{t_web:6.0f}ms {t_web / t_six:6.2f}")
        decode_stage(args.rounds, clock)


if __name__ == "__main__":
    main()
