"""The memory budget's estimate (``imgworker.core.budget``) against what a job really holds, per decoder path.

For each kind of source (interlaced and plain PNG, tiled and one-strip TIFF, progressive, baseline and CMYK JPEG,
WebP, HEIC, AVIF, GIF) an image is generated and resized in a fresh process set up as a worker process is (malloc
arenas, heap keep, one libvips thread): a warm-up job of the same kind, then the peak resident memory is reset
(``/proc/self/clear_refs``) and the job runs through ``Service.handle``; growth = peak RSS - RSS before the job,
against the sum of what the job was admitted with (``Budget.admit``). docs/security.md has the table.

    .venv/bin/python -m benchmarks.probes.memory_estimates [--side 4000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

MIB = 1024 * 1024
# What each kind is resized to: a thumbnail (the decode dominates) in the source's own family of formats.
OUTPUT = {"width": 512, "format": "jpeg"}


def _photo(side: int, bands: int = 3) -> Any:
    """Noise with structure: compresses like a photo (a flat image would make every file tiny)."""
    noise = pyvips.Image.gaussnoise(side, side, sigma=40, mean=128)
    grad = pyvips.Image.xyz(side, side)[0] * (255 / max(1, side))
    band = ((noise + grad) / 2).cast("uchar")
    image = band.bandjoin([band.rot180(), band.flip("horizontal")][: bands - 1]) if bands > 1 else band
    return image.copy(interpretation="cmyk" if bands == 4 else "srgb")


def _heic(path: Path, side: int) -> None:
    import pillow_heif  # the heif extra

    pillow_heif.register_heif_opener()
    from PIL import Image

    arr = np.frombuffer(_photo(side).write_to_memory(), dtype=np.uint8).reshape(side, side, 3)
    Image.fromarray(arr).save(path, format="HEIF", quality=80)


def _strip_tiff(path: Path, side: int) -> None:
    from PIL import Image  # Pillow comes with the heif extra

    arr = np.frombuffer(_photo(side).write_to_memory(), dtype=np.uint8).reshape(side, side, 3)
    # One strip for the whole image (RowsPerStrip = height): the loader must take the strip whole.
    Image.fromarray(arr).save(path, format="TIFF", tiffinfo={278: side})


MAKERS: dict[str, tuple[str, Callable[[Path, int], None]]] = {
    "png_interlaced": ("png", lambda p, s: _photo(s).pngsave(str(p), interlace=True, compression=1)),
    "png_plain": ("png", lambda p, s: _photo(s).pngsave(str(p), compression=1)),
    "tiff_tiled": ("tif", lambda p, s: _photo(s).tiffsave(str(p), tile=True, tile_width=256, tile_height=256)),
    "tiff_strip": ("tif", _strip_tiff),
    "jpeg_baseline": ("jpg", lambda p, s: _photo(s).jpegsave(str(p), Q=85)),
    "jpeg_progressive": ("jpg", lambda p, s: _photo(s).jpegsave(str(p), Q=85, interlace=True)),
    "jpeg_cmyk": ("jpg", lambda p, s: _photo(s, 4).jpegsave(str(p), Q=85)),
    "webp": ("webp", lambda p, s: _photo(s).webpsave(str(p), Q=80)),
    "heic": ("heic", _heic),
    "avif": ("avif", lambda p, s: _photo(s).heifsave(str(p), compression="av1", Q=50, effort=0)),
    "gif": ("gif", lambda p, s: _photo(s).gifsave(str(p))),
}
KINDS = tuple(MAKERS)


def make(kind: str, directory: Path, side: int) -> Path:
    """The test image of ``kind``, ``side`` pixels square, in ``directory`` (made once, reused)."""
    suffix, maker = MAKERS[kind]
    path = directory / f"{kind}-{side}.{suffix}"
    if not path.exists():
        maker(path, side)
    return path


def measure(path: Path, warm: Path, params: dict[str, Any] | None = None, *,
            timeout: float = 120.0) -> dict[str, Any]:
    """One job on ``path`` in a fresh worker-like process, after one on ``warm`` (a small file of the same kind:
    the codec loaded, but none of the big buffers in the heap): {estimate, growth, source_bytes} in bytes."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.probes.memory_estimates", "--one", str(path), str(warm),
         json.dumps({**OUTPUT, **(params or {})})],
        capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "VIPS_CONCURRENCY": "1"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"measuring {path.name} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _one(path: Path, warm_path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: set up as a worker, warm up on a small file of the kind, then measure one job."""
    from imgworker.backends.cpu import CpuBackend
    from imgworker.core import budget
    from imgworker.core.limits import Limits
    from imgworker.jobs.service import Service
    from imgworker.stores import FileStore, Stores
    from imgworker.worker.memory import keep_job_buffers, limit_malloc_arenas

    limit_malloc_arenas()
    keep_job_buffers()
    admitted: list[int] = []
    admit = budget.Budget.admit

    def counting(self: budget.Budget, cost: budget.Cost, held: int = 0) -> Any:
        admitted.append(cost.total)
        return admit(self, cost, held)

    budget.Budget.admit = counting  # type: ignore[method-assign]
    out_dir = Path(tempfile.mkdtemp(prefix="memprobe-"))
    roots = [str(path.parent), str(warm_path.parent), str(out_dir)]
    service = Service(Stores({"file": FileStore(roots)}), CpuBackend(), Limits())
    job = {"src": path.as_uri(), "dst": (out_dir / "out.jpg").as_uri(), **params}
    warm = service.handle(json.dumps({**job, "src": warm_path.as_uri(), "width": 16}).encode())
    if not warm.get("ok"):
        raise RuntimeError(f"warm-up failed: {warm}")
    admitted.clear()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kb("VmRSS")
    result = service.handle(json.dumps(job).encode())
    growth = (_status_kb("VmHWM") - before) * 1024
    if not result.get("ok"):
        raise RuntimeError(f"job failed: {result}")
    return {"estimate": sum(admitted), "growth": growth, "source_bytes": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", nargs=3, metavar=("PATH", "WARM", "PARAMS"), help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, default=4000, help="pixels a side (default 4000: 16 MP)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS))
    parser.add_argument("--json", type=Path, help="write the rows here too")
    parser.add_argument("--images", type=Path, help="directory for the generated images (kept, reused)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(Path(args.one[0]), Path(args.one[1]), json.loads(args.one[2]))))
        return
    directory = args.images or Path(tempfile.mkdtemp(prefix="memprobe-images-"))
    rows = []
    print(f"{'kind':18} {'source MiB':>10} {'estimate MiB':>12} {'measured MiB':>12} {'ratio':>6}")
    for kind in args.kinds:
        r = measure(make(kind, directory, args.side), make(kind, directory, 64))
        rows.append({"kind": kind, **r})
        print(f"{kind:18} {r['source_bytes'] / MIB:10.1f} {r['estimate'] / MIB:12.1f} {r['growth'] / MIB:12.1f} "
              f"{r['estimate'] / max(1, r['growth']):6.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
