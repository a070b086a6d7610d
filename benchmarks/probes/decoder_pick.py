"""Which libjpeg-turbo binding decodes the worker's JPEGs fastest: per image, one core, in one process.

    python -m benchmarks.probes.decoder_pick            # every JPEG of the corpus, thumb512 and w2048 scales
    python -m benchmarks.probes.decoder_pick --repeats 9

For each corpus JPEG and each DCT scale the worker uses (``shrink_on_load`` for a 512 px box and for 2048 px wide),
times libvips' ``jpegload_buffer(shrink=N)`` to memory, simplejpeg (the fast path's decoder) and Pillow's draft
mode, interleaved, min and median of ``--repeats``; and checks both bindings give libvips' pixels (PSNR). The
three are ratios within one run, so they hold under load; pin it to a core (``taskset -c 0``) for steadier
figures.
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import os
import statistics
import time
from collections.abc import Callable

from benchmarks.harness import CORPUS, PHOTOS


def _psnr(a: object, b: object) -> float:
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    got: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved: a load swing hits all three alike
            t = time.perf_counter()
            fn()
            got[name].append((time.perf_counter() - t) * 1000)
    return {k: (min(v), statistics.median(v)) for k, v in got.items()}


def _simplejpeg(data: bytes, w: int, h: int, s: int) -> object:
    import simplejpeg

    return simplejpeg.decode_jpeg(data, min_factor=s, min_width=math.ceil(w / s), min_height=math.ceil(h / s))


def _pillow(data: bytes, w: int, h: int, s: int) -> object:
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (w // s, h // s))  # Pillow picks the largest 1/s whose size is still >= this
    im.load()
    return im


def _libvips(data: bytes, s: int) -> object:
    import pyvips

    return pyvips.Image.jpegload_buffer(data, shrink=s, access="sequential").copy_memory()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.probes.decoder_pick")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    import numpy as np
    import pyvips

    from imgworker.imaging import jpeg_fast
    from imgworker.imaging.load import shrink_on_load

    pyvips.cache_set_max(0)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| file | scale | libvips jpegload ms (min/med) | simplejpeg ms | Pillow draft ms "
          "| PSNR simplejpeg / Pillow |")
    print("|---|---|---:|---:|---:|---|")
    for name in PHOTOS:
        data = (CORPUS / name).read_bytes()
        frame = jpeg_fast.scan_header(data)
        why = jpeg_fast.refusal(frame)
        if frame is None or why is not None:
            if frame is not None:
                print(f"| {name} | - | refused by the fast path: {why} | | | |")
            continue
        w, h = frame.width, frame.height
        for box in (512, 2048):
            scale = min(box / w, box / h) if box == 512 else box / max(w, h)
            shrink = shrink_on_load(w, h, max(1, round(w * scale)), max(1, round(h * scale)))
            ref = pyvips.Image.jpegload_buffer(data, shrink=shrink)
            ref_px = np.ndarray(buffer=ref.write_to_memory(), dtype=np.uint8, shape=(ref.height, ref.width, ref.bands))

            sj = functools.partial(_simplejpeg, data, w, h, shrink)
            pil = functools.partial(_pillow, data, w, h, shrink)
            vips = functools.partial(_libvips, data, shrink)
            crop = (slice(0, ref.height), slice(0, ref.width))
            p1 = _psnr(np.asarray(sj())[crop], ref_px)
            p2 = _psnr(np.asarray(pil())[crop], ref_px)
            t = _times({"vips": vips, "simplejpeg": sj, "pillow": pil}, args.repeats)
            cells = " | ".join(f"{t[k][0]:.1f} / {t[k][1]:.1f}" for k in ("vips", "simplejpeg", "pillow"))
            print(f"| {name} | 1/{shrink} ({box}) | {cells} | {p1:.1f} / {p2:.1f} |", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
