"""``python -m benchmarks.suite run``: every engine on the same files and cores, one table, ratios as the headline.

    python -m benchmarks.suite setup      # install the peers (thumbor, sharp, simplejpeg) under benchmarks/.peers
    python -m benchmarks.suite run              # ~5-8 minutes on 2 cores; writes docs/performance.md
    python -m benchmarks.suite run --quick --no-peers --json out.json --no-doc   # the smoke test's run

Run from the repository root (the worker is started with ``python -m imgworker``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BASELINE,
    CORPUS,
    PEERS,
    PHOTOS,
    REPO,
    THUMB,
    W2048,
    Row,
    Workload,
    corpus_photos,
    pick,
    settle,
)
from benchmarks.suite import colour as bench_colour
from benchmarks.suite import decode_limit as bench_decode
from benchmarks.suite import dispatch as bench_dispatch
from benchmarks.suite import engine_backend as bench_backend
from benchmarks.suite import engine_imgworker as bench_imgworker
from benchmarks.suite import engine_pyvips as bench_pyvips
from benchmarks.suite import engine_sharp as bench_sharp
from benchmarks.suite import engine_thumbor as bench_thumbor
from benchmarks.suite import report

SETUP = REPO / "benchmarks" / "setup_peers.sh"
PROGRESSIVE_FROM = (pick("kleiber_*_baseline.jpg"), pick("dragonfly_*_baseline.jpg"))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as fh:
        model = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def versions(peers: bool) -> dict[str, str]:
    import pyvips

    import imgworker

    out = {"python": platform.python_version(), "imgworker": getattr(imgworker, "__version__", "?"),
           "pyvips": pyvips.__version__, "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"}
    gearmand = subprocess.run(["gearmand", "--version"], capture_output=True, text=True, check=False).stdout
    # "gearmand 1.1.20 - https://github.com/gearman/gearmand/issues"
    out["gearmand"] = gearmand.split()[1] if len(gearmand.split()) > 1 else "?"
    if peers and not bench_sharp.unavailable():
        out["sharp"] = bench_sharp.version()
    if peers and not bench_thumbor.unavailable():
        out["thumbor"] = bench_thumbor.version()
    return out


def make_progressive(tmp: Path) -> list[str]:
    """The corpus' progressive photo plus progressive re-encodes of two baseline ones (made at run time)."""
    import pyvips

    files = [str(CORPUS / pick("seeding_*_progressive.jpg"))]
    for name in PROGRESSIVE_FROM:
        out = tmp / name.replace("baseline", "progressive")
        pyvips.Image.new_from_file(str(CORPUS / name)).jpegsave(str(out), Q=90, interlace=True, keep="all")
        files.append(str(out))
    return files


def workloads(quick: bool, tmp: Path) -> list[Workload]:
    photos = tuple(str(CORPUS / p) for p in PHOTOS)
    base = tuple(str(CORPUS / p) for p in BASELINE)
    if quick:
        two = (str(CORPUS / pick("dragonfly_*_baseline.jpg")), str(CORPUS / pick("sunset_*_rgba.png")))
        return [Workload("thumb512 photos", THUMB, two),
                Workload("thumb512 baseline-jpeg", THUMB, base[1:2], jpeg_only=True)]
    return [
        Workload("thumb512 photos", THUMB, photos),
        Workload("w2048 photos", W2048, photos),
        Workload("thumb512 baseline-jpeg", THUMB, base, jpeg_only=True),
        Workload("thumb512 progressive-jpeg", THUMB, tuple(make_progressive(tmp)), jpeg_only=True),
        Workload("web pipeline photos", THUMB, photos, pipeline="web"),
    ]


def guarded(engine: str, workload: str, fn: Callable[[], Row]) -> Row:
    """A failing engine becomes a row that says why; the others still run."""
    try:
        return fn()
    except Exception as exc:
        return Row(workload, engine, skipped=f"failed: {type(exc).__name__}: {exc}"[:300])


def engines(wl: Workload, procs: int, secs: float, concurrency: int, roots: list[str], peer_skip: str | None
            ) -> list[tuple[str, Callable[[], Row]]]:
    # Equal threads per core first: one job running per process, like every peer; the default C as its own row.
    out: list[tuple[str, Callable[[], Row]]] = []
    for c in dict.fromkeys((1, concurrency)):
        name = f"{report.E2E} (C={c})"
        out.append((name, lambda c=c, name=name: bench_imgworker.run(wl, procs, c, secs, roots, engine=name)))  # type: ignore[misc]
    if wl.pipeline:
        return out
    out += [("imgworker backend loop", lambda: bench_backend.run(wl, procs, secs)),
            ("pyvips loop", lambda: bench_pyvips.run(wl, procs, secs))]
    for mod in (bench_sharp, bench_thumbor):
        out.append((mod.ENGINE, peer(mod, wl, procs, secs, peer_skip or mod.unavailable())))
    if wl.jpeg_only:
        out.append(("decode limit", lambda: bench_decode.run(wl, procs, secs)))
    return out


def peer(mod: Any, wl: Workload, procs: int, secs: float, why: str | None) -> Callable[[], Row]:
    if why:
        return lambda: Row(wl.name, mod.ENGINE, skipped=why)
    return lambda: mod.run(wl, procs, secs)


def measure_workload(wl: Workload, procs: int, secs: float, concurrency: int, roots: list[str], rounds: int,
                     peer_skip: str | None, settle_s: float = 0.0) -> list[Row]:
    """Every engine ``rounds`` times, the order reversed each round (so a load swing from other work on the
    machine hits all engines alike); each engine's best round is kept. Before each cell, wait up to
    ``settle_s`` for the load average to drop below the quiet mark (the previous cell's own load decays)."""
    todo = engines(wl, procs, secs, concurrency, roots, peer_skip)
    best: dict[str, Row] = {}
    for r in range(rounds):
        for name, fn in todo if r % 2 == 0 else todo[::-1]:
            old = best.get(name)
            if old is not None and old.skipped and not old.skipped.startswith("failed"):
                continue  # not installed / disabled: the same answer every round
            started, waited = settle(settle_s)  # other work on the machine: recorded per cell, marked above 0.5
            row = guarded(name, wl.name, fn)
            row.extra["rounds"] = rounds
            row.extra["settle_s"] = waited
            row.extra["load_before"] = round(started, 2)
            row.extra["busy"] = started > report.QUIET_LOAD
            if old is None or (row.images_per_s or 0) > (old.images_per_s or 0):
                best[name] = row
    return [best[name] for name, _ in todo]


def setup_peers() -> int:
    return subprocess.call(["bash", str(SETUP)])


def run(args: argparse.Namespace) -> int:
    corpus_photos()  # a plain message, not a traceback, where the full-size corpus is missing
    procs = args.processes or os.cpu_count() or 1
    secs = args.seconds or (0.5 if args.quick else 4.0)
    settle_s = args.settle if args.settle is not None else (0.0 if args.quick else 120.0)
    rounds = args.rounds or (1 if args.quick else 2)
    if not args.no_peers and not (PEERS / "status.json").exists():
        print("benchmarks: installing peers (benchmarks/setup_peers.sh) ...", flush=True)
        setup_peers()
    peer_skip = "disabled (--no-peers)" if args.no_peers else None
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "load_before": load(),
        "processes": procs, "seconds_per_cell": secs, "rounds": rounds, "concurrency": args.concurrency,
        "settle_s": settle_s,
        "command": "python -m benchmarks.suite run" + (" " + " ".join(args.argv) if args.argv else ""),
        "versions": versions(not args.no_peers),
    }
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        if row.skipped:
            figs = f"skipped: {row.skipped}"
        elif row.images_per_s is None:
            figs = row.note
        else:
            figs = (f"{row.images_per_s} img/s p50 {row.p50_ms} p99 {row.p99_ms} ms rss {row.peak_rss_mb} MiB, "
                    f"load before {report.load_cell(row)}")
        print(f"  {row.workload:28} {row.engine:36} {figs}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-src-") as tmp:
        every = workloads(args.quick, Path(tmp))
        unknown = [o for o in args.only or [] if not any(o in w.name for w in every) and o not in ("colour", "noop")]
        if unknown:
            sys.exit(f"--only {unknown}: no such workload; names: {[w.name for w in every]}, colour, noop")
        for wl in every:
            if args.only and not any(o in wl.name for o in args.only):
                continue
            print(f"{wl.name} ({len(wl.files)} files) load {load()}", flush=True)
            for row in measure_workload(wl, procs, secs, args.concurrency, [str(CORPUS), tmp], rounds, peer_skip,
                                        settle_s):
                add(row)
        if not args.quick and not args.only:
            photos = next(w for w in workloads(False, Path(tmp)) if w.name == "thumb512 photos")
            sweep = {}
            for c in (1, 2, 4):
                r = guarded("e2e", "sweep", lambda c=c: bench_imgworker.run(photos, procs, c, secs, [str(CORPUS)]))  # type: ignore[misc]
                sweep[f"C={c}"] = {"images_per_s": r.images_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                                   "peak_rss_mb": r.peak_rss_mb, "skipped": r.skipped}
                print(f"  concurrency {c}: {sweep[f'C={c}']}", flush=True)
            meta["concurrency_sweep"] = sweep
            meta["round_trip"] = bench_imgworker.round_trip(CORPUS / pick("kleiber_*_baseline.jpg"), procs, 5)
            print(f"  round trip: {meta['round_trip']}", flush=True)
            meta["submit_directory"] = bench_imgworker.submit_directory(procs, args.concurrency, 4)
            print(f"  submit directory: {meta['submit_directory']}", flush=True)
    if not args.only or any("colour" in o for o in args.only):
        print(f"colour check, load {load()}", flush=True)
        if peer_skip:
            for engine in ("sharp", "thumbor (Pillow)"):
                add(Row("colour dE76", engine, skipped=peer_skip))
        for row in bench_colour.run(peers=not peer_skip):
            add(row)
    if not args.only or any("noop" in o for o in args.only):
        print(f"no-op dispatch, load {load()}", flush=True)
        for row in bench_dispatch.run(50 if args.quick else 1000, 2000 if args.quick else 5000):
            add(row)
    meta["load_after"] = load()
    print()
    print(report.ratio_table(report.ratios(rows)))
    print()
    print(report.dispatch_table(rows))
    print()
    print(report.table(rows))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(report.as_json(meta, rows), indent=1))
    if not args.no_doc:
        report.write_doc(Path(args.doc), report.document(meta, rows))
        print(f"\nwrote {args.doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install the peers into benchmarks/.peers")
    r = sub.add_parser("run", help="run the benchmark suite")
    r.add_argument("--quick", action="store_true", help="2 files, 0.5 s per cell: the smoke test")
    r.add_argument("--no-peers", action="store_true", help="skip thumbor and sharp (rows say so)")
    r.add_argument("--processes", type=int, default=0, help="processes per engine (default: one per core)")
    r.add_argument("--concurrency", type=int, default=2, help="imgworker jobs in flight per process")
    r.add_argument("--seconds", type=float, default=0.0, help="measured seconds per cell (default 4, quick 0.5)")
    r.add_argument("--rounds", type=int, default=0, help="rounds per cell, best kept (default 2, quick 1)")
    r.add_argument("--only", action="append",
                   help="run only workloads whose name contains this (repeatable: any match runs; "
                        "'colour' and 'noop' select those checks)")
    r.add_argument("--settle", type=float, default=None, metavar="S",
                   help="before each cell, wait up to S seconds for the 1-minute load average to drop below "
                        "0.5 (default 120, --quick 0; 0 disables); the load it started at is recorded either way")
    r.add_argument("--json", help="also write the results as JSON here")
    r.add_argument("--doc", default=str(REPO / "docs" / "performance.md"), help="markdown file to update")
    r.add_argument("--no-doc", action="store_true", help="do not touch the markdown file")
    args = ap.parse_args(argv)
    if args.cmd == "setup":
        return setup_peers()
    args.argv = argv[1:]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
