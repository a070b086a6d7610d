"""``quality: auto`` against fixed qualities: bytes, SSIMULACRA2 scores and CPU time (issue 29's targets).

    .venv/bin/python -m benchmarks.service.autoquality [--runs 3] [--sizes 512,2048] [--formats jpeg,webp]
        [--json out.json] [--markdown]

Photos: the sample photos (examples/images) and the full corpus (``IMGWORKER_CORPUS`` or ../shared/corpus,
photos/). For each photo, size (the output's longer side fits the size: width and height both given, fit
inside; a size larger than the photo is skipped: no enlarged outputs) and format: the CPU backend's whole
resize job (header, decode with shrink-on-load, resize, encode; no store or Gearman time; one libvips thread)
at the fixed default quality (JPEG 85, WebP 80, AVIF 50) and with ``auto:eco``, ``auto`` and ``auto:best``.
Each output is scored here again against the job's pixels before encoding (a PNG of the same job), flattened
onto white for JPEG. CPU time is the process's (user + system, ``time.process_time``), median of ``--runs``
for the fixed job and ``auto``; the tiers run once.

Targets checked (printed PASS/MISS with the figure): JPEG ``auto`` median bytes at least 25% under fixed 85 and
no image under 75; WebP ``auto`` no image under 75 and median bytes at most fixed 80's; at 512 px the median CPU
time ratio auto/fixed at most 2 and at most 3 encodes on average. The load average before and after is
printed: on a shared machine absolute times move; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from benchmarks.harness import REPO, corpus_photos
from imgworker.backends.cpu import CpuBackend
from imgworker.core.contract import ResizeSpec
from imgworker.core.formats import DEFAULT_QUALITY
from imgworker.core.limits import Limits
from imgworker.core.quality import TIERS, parse_auto
from imgworker.imaging.quality import search

SAMPLES = REPO / "examples" / "images"
FLOOR = TIERS["auto"]


@dataclass
class Row:
    photo: str  # "samples/NAME" or "corpus/NAME"
    size: int
    format: str
    setting: str  # "fixed" or the auto tier
    bytes: int
    score: float
    quality: int
    probes: int
    cpu_ms: float | None  # median of --runs (fixed and auto only)
    limited_by: str | None = None


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def photos() -> list[tuple[str, Path]]:
    found = [(f"samples/{p.name}", p) for p in sorted(SAMPLES.iterdir()) if p.suffix != ".md"]
    corpus = corpus_photos(required=False)
    if corpus.is_dir():
        found += [(f"corpus/{p.name}", p) for p in sorted(corpus.iterdir()) if p.is_file()]
    else:
        print(f"no corpus at {corpus}: sample photos only (set IMGWORKER_CORPUS)")
    return found


def cpu_ms(fn: Callable[[], object], runs: int) -> tuple[float, Any]:
    out = fn()  # warm-up, and the result
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return (statistics.median(times) if times else 0.0), out


def reference(backend: CpuBackend, source: bytes, size: int, fmt: str) -> np.ndarray:
    """The job's pixels before encoding: the same resize job to PNG (lossless), flattened for JPEG."""
    png = backend.resize(source, ResizeSpec(width=size, height=size, format="png", quality=100), Limits())
    image = pyvips.Image.new_from_buffer(png.data, "")
    if fmt == "jpeg" and image.hasalpha():
        image = image.flatten(background=[255, 255, 255]).cast("uchar")
    return search.pixels_of(image)


def measure_photo(backend: CpuBackend, name: str, source: bytes, size: int, fmt: str, runs: int) -> list[Row]:
    ref = reference(backend, source, size, fmt)
    rows = []
    for setting in ("fixed", "auto:eco", "auto", "auto:best"):
        quality = DEFAULT_QUALITY[fmt] if setting == "fixed" else parse_auto(setting)
        assert quality is not None
        spec = ResizeSpec(width=size, height=size, format=fmt, quality=quality)
        timed = setting in ("fixed", "auto")
        ms, rendered = cpu_ms(lambda s=spec: backend.resize(source, s, Limits()), runs if timed else 0)
        score = search.measure(ref, rendered.data, fmt)
        fields = rendered.fields
        if fields:  # the worker's own score is the output's: re-measured here to the same number
            assert abs(fields["score"] - score) < 0.01, (name, setting, fields, score)
        rows.append(Row(name, size, fmt, setting, len(rendered.data), round(score, 2),
                        fields.get("quality", DEFAULT_QUALITY[fmt]), fields.get("probes", 1),
                        round(ms, 1) if timed else None, fields.get("limited_by")))
    return rows


def summarise(rows: list[Row], sizes: list[int], formats: list[str]) -> list[dict[str, Any]]:
    out = []
    for size in sizes:
        for fmt in formats:
            group = [r for r in rows if r.size == size and r.format == fmt]
            by = {s: {r.photo: r for r in group if r.setting == s} for s in ("fixed", "auto:eco", "auto", "auto:best")}
            fixed = by["fixed"]
            line: dict[str, Any] = {"size": size, "format": fmt, "photos": len(fixed)}
            line["fixed_median_bytes"] = statistics.median(r.bytes for r in fixed.values())
            line["fixed_min_score"] = min(r.score for r in fixed.values())
            for tier in ("auto:eco", "auto", "auto:best"):
                t = by[tier]
                line[f"{tier}_median_bytes"] = statistics.median(r.bytes for r in t.values())
                line[f"{tier}_median_ratio"] = round(statistics.median(t[p].bytes / fixed[p].bytes for p in t), 3)
                line[f"{tier}_min_score"] = min(r.score for r in t.values())
                line[f"{tier}_below_floor"] = sum(r.score < TIERS[tier] for r in t.values())
                line[f"{tier}_mean_probes"] = round(statistics.mean(r.probes for r in t.values()), 2)
            auto = by["auto"]
            line["cpu_ratio_median"] = round(statistics.median(auto[p].cpu_ms / fixed[p].cpu_ms  # type: ignore[operator]
                                                               for p in auto), 2)
            line["cpu_fixed_median_ms"] = statistics.median(r.cpu_ms for r in fixed.values())  # type: ignore[type-var]
            line["cpu_auto_median_ms"] = statistics.median(r.cpu_ms for r in auto.values())  # type: ignore[type-var]
            out.append(line)
    return out


def verdicts(summary: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in summary:
        tag = f"{s['format']} {s['size']} px"
        # The targets compare the sets' median bytes; the median of per-photo ratios is printed beside them.
        ratio = s["auto_median_bytes"] / s["fixed_median_bytes"]
        each = f"(median per-photo ratio {s['auto_median_ratio']:.2f})"
        if s["format"] == "jpeg":
            lines.append(f"{'PASS' if ratio <= 0.75 else 'MISS'} {tag}: auto median bytes {1 - ratio:.0%} under q85's "
                         f"{each} (target >= 25%)")
        if s["format"] == "webp":
            lines.append(f"{'PASS' if ratio <= 1 else 'MISS'} {tag}: auto median bytes {ratio:.2f}x fixed 80's {each} "
                         "(target <= 1)")
        lines.append(f"{'PASS' if s['auto_below_floor'] == 0 else 'MISS'} {tag}: {s['auto_below_floor']} of "
                     f"{s['photos']} under 75 (lowest {s['auto_min_score']:.1f})")
        if s["size"] == 512:
            lines.append(f"{'PASS' if s['cpu_ratio_median'] <= 2 else 'MISS'} {tag}: CPU time auto/fixed median "
                         f"{s['cpu_ratio_median']:.2f}x (target <= 2)")
            lines.append(f"{'PASS' if s['auto_mean_probes'] <= 3 else 'MISS'} {tag}: {s['auto_mean_probes']:.2f} "
                         "encodes on average (target <= 3)")
        else:
            lines.append(f"info {tag}: CPU time auto/fixed median {s['cpu_ratio_median']:.2f}x, "
                         f"{s['auto_mean_probes']:.2f} encodes on average")
    return lines


def markdown(rows: list[Row], summary: list[dict[str, Any]]) -> str:
    out = ["| size | format | photos | fixed: median bytes, lowest score | auto:eco (65) | auto (75) | auto:best (85) "
           "| auto encodes (mean) | CPU auto/fixed (median) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        fixed = f"{s['fixed_median_bytes']:,.0f} B, {s['fixed_min_score']:.1f}"
        tiers = [f"{s[f'{t}_median_bytes']:,.0f} B ({s[f'{t}_median_ratio']:.2f}x), lowest {s[f'{t}_min_score']:.1f}"
                 + (f", {s[f'{t}_below_floor']} under" if s[f"{t}_below_floor"] else "")
                 for t in ("auto:eco", "auto", "auto:best")]
        out.append(f"| {s['size']} | {s['format']} | {s['photos']} | {fixed} | {' | '.join(tiers)} | "
                   f"{s['auto_mean_probes']:.2f} | {s['cpu_ratio_median']:.2f}x ({s['cpu_fixed_median_ms']:.0f} -> "
                   f"{s['cpu_auto_median_ms']:.0f} ms) |")
    out += ["", "| photo | size | format | fixed: bytes, score, ms | auto:eco: bytes, score, q | "
            "auto: bytes, score, q, encodes, ms | auto:best: bytes, score, q |", "|---|---|---|---|---|---|---|"]
    keyed = {(r.photo, r.size, r.format, r.setting): r for r in rows}
    for photo, size, fmt in sorted({(r.photo, r.size, r.format) for r in rows}, key=lambda k: (k[1], k[2], k[0])):
        f, e, a, b = (keyed[(photo, size, fmt, s)] for s in ("fixed", "auto:eco", "auto", "auto:best"))

        def note(r: Row) -> str:
            return f" ({r.limited_by})" if r.limited_by else ""

        out.append(f"| {photo} | {size} | {fmt} | {f.bytes:,}, {f.score:.1f}, {f.cpu_ms:.0f} | "
                   f"{e.bytes:,}, {e.score:.1f}, {e.quality}{note(e)} | {a.bytes:,}, {a.score:.1f}, {a.quality}, "
                   f"{a.probes}, {a.cpu_ms:.0f}{note(a)} | {b.bytes:,}, {b.score:.1f}, {b.quality}{note(b)} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--formats", default="jpeg,webp")
    parser.add_argument("--only", default="", help="substring of the photo names to run (default: all)")
    parser.add_argument("--json", type=Path, help="write rows and summary here")
    parser.add_argument("--markdown", action="store_true", help="print the tables for docs/performance.md")
    args = parser.parse_args()
    pyvips.cache_set_max(0)  # every run decodes for real
    pyvips.voperation.cache_set_max(0)
    pyvips.concurrency_set(1)  # a worker's job runs on one libvips thread
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = args.formats.split(",")
    backend = CpuBackend()
    before = loadavg()
    started = time.monotonic()
    rows: list[Row] = []
    for name, path in photos():
        if args.only not in name:
            continue
        source = path.read_bytes()
        head = pyvips.Image.new_from_buffer(source, "")
        for size in sizes:
            if size > max(head.width, head.height):
                continue
            for fmt in formats:
                new = measure_photo(backend, name, source, size, fmt, args.runs)
                rows += new
                a = next(r for r in new if r.setting == "auto")
                f = new[0]
                print(f"{name} {size} {fmt}: fixed {f.bytes} B {f.score:.1f} {f.cpu_ms} ms | auto q{a.quality} "
                      f"{a.bytes} B {a.score:.1f} {a.probes} probes {a.cpu_ms} ms", flush=True)
    summary = summarise(rows, sizes, formats)
    after = loadavg()
    print(f"\nload average before: {before}, after: {after}; {time.monotonic() - started:.0f} s")
    for line in verdicts(summary):
        print(line)
    if args.markdown:
        print()
        print(markdown(rows, summary))
    if args.json:
        args.json.write_text(json.dumps({"load_before": before, "load_after": after, "rows": [asdict(r) for r in rows],
                                         "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
