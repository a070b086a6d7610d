"""What each image fact costs, against the thumbnail job it rides on (issue 16: target < 5% each).

    .venv/bin/python -m benchmarks.service.analysis_cost [--runs 15]

For each source: the CPU backend's thumbnail job (decode with shrink-on-load, resize to 512 px wide, JPEG
Q85), then each fact alone on that job's decoded 512 px image, as the job computes it (``analysis.of_decoded``:
the small image is made once per job; ``meta`` reads the header), then all five together, and the ``info``
function (its own small decode). Medians of ``--runs`` runs, one thread. Prints the load average: on a shared
machine the absolute figures move; the ratios much less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pyvips

from imgworker.analysis import FACTS, of_decoded
from imgworker.analysis.source import facts_of_source
from imgworker.backends.cpu import CpuBackend
from imgworker.core.contract import ResizeSpec
from imgworker.core.geometry import plan
from imgworker.core.limits import Limits
from imgworker.imaging.probe import probe

PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "images"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches and libvips' operation cache misses alike
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def sources() -> dict[str, bytes]:
    shipped = (PHOTOS / "kleiber_2048x1152_baseline.jpg").read_bytes()
    # A phone-camera-sized JPEG (12 MP), made here: the corpus in the repository is downscaled.
    big = pyvips.Image.new_from_buffer(shipped, "").resize(4032 / 2048)
    return {"2048x1152 JPEG": shipped, "4032x2268 JPEG (12 MP)": bytes(big.jpegsave_buffer(Q=90))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    pyvips.cache_set_max(0)  # every run decodes for real
    backend, limits = CpuBackend(), Limits()
    spec = ResizeSpec(width=512, format="jpeg", quality=85)
    print(f"load average before: {loadavg()}; cpus {os.cpu_count()}")
    for name, source in sources().items():
        thumb = median_ms(lambda source=source: backend.resize(source, spec, limits), args.runs)
        info = probe(source, limits)
        geo = plan(info.width, info.height, 512, None, "inside", limits)
        decoded = backend.load_resized(source, info, geo).copy_memory()
        print(f"\n{name}: thumbnail job to 512 px: {thumb:.1f} ms (median of {args.runs})")
        print(f"  {'fact':<10} {'ms':>7} {'% of job':>9}")
        for fact in (*FACTS, "all five"):
            wanted = FACTS if fact == "all five" else (fact,)
            ms = median_ms(lambda wanted=wanted, source=source, decoded=decoded: of_decoded(decoded, source, wanted),
                           args.runs)
            print(f"  {fact:<10} {ms:7.2f} {100 * ms / thumb:8.1f}%")
        ms = median_ms(lambda source=source: facts_of_source(source, FACTS, limits), args.runs)
        print(f"  info (all five, own small decode): {ms:.1f} ms = {100 * ms / thumb:.0f}% of the thumbnail job")
    print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    main()
