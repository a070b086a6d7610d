"""What every benchmark module shares: the workloads, the result row, statistics, peak-RSS probes and the
ready/go barrier that starts one loop process per core at the same moment.

Importable from the peers' venv too (stdlib only): bench_decode's simplejpeg child runs there.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    """The full-size corpus benchmarks read: ``IMGWORKER_CORPUS`` (a folder holding ``photos/``), else the team's
    ``../shared/corpus``. The repository ships only small copies (examples/images), too small to benchmark."""
    return Path(os.environ.get("IMGWORKER_CORPUS") or REPO.parent / "shared" / "corpus").resolve()


def corpus_photos(required: bool = True) -> Path:
    """``corpus_dir()/photos``; exits with a plain message when it is missing and ``required``."""
    photos = corpus_dir() / "photos"
    if required and not photos.is_dir():
        sys.exit(f"benchmarks need full-size photos: {photos} not found. Set IMGWORKER_CORPUS=DIR (a folder "
                 "with photos/ in it, e.g. a copy of the team's shared/corpus) and run again.")
    return photos


CORPUS = corpus_photos(required=False)
PEERS = REPO / "benchmarks" / ".peers"
PEERS_DIR = REPO / "benchmarks" / "peers"

# Photos a user would upload: every file of the corpus, CMYK, 16-bit PNG, RGBA and WebP included.
PHOTOS = sorted(p.name for p in CORPUS.glob("*") if p.is_file()) if CORPUS.is_dir() else []


def pick(pattern: str) -> str:
    """The corpus photo matching ``pattern`` (names carry sizes, which differ between full-size and small copies)."""
    found = sorted(p.name for p in CORPUS.glob(pattern))
    return found[0] if found else pattern


BASELINE = [pick("kleiber_*_baseline.jpg"), pick("dragonfly_*_baseline.jpg"), "dragonfly_exif_orientation6.jpg"]


@dataclass(frozen=True)
class Op:
    """One output request, expressed for each engine."""

    name: str
    width: int
    height: int | None  # None: width only, the height follows the aspect ratio
    quality: int = 85

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"width": self.width, "format": "jpeg", "quality": self.quality}
        if self.height is not None:
            out["height"] = self.height
        return out


THUMB = Op("thumb512", 512, 512)
W2048 = Op("w2048", 2048, None)


@dataclass(frozen=True)
class Workload:
    name: str
    op: Op
    files: tuple[str, ...]  # absolute paths
    pipeline: str | None = None  # a named pipeline (multi-output) instead of a plain resize
    jpeg_only: bool = False  # the decode limit applies

    def spec(self) -> dict[str, Any]:
        return {"op": asdict(self.op), "files": list(self.files), "pipeline": self.pipeline}


@dataclass
class Row:
    workload: str
    engine: str
    images_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: float | None = None  # sum over the engine's processes
    max_proc_rss_mb: float | None = None
    jobs: int = 0
    processes: int = 0
    note: str = ""
    skipped: str | None = None  # why this row has no figures
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def fill_latency(row: Row, latencies_ms: Sequence[float]) -> Row:
    p50, p99 = percentile(latencies_ms, 50), percentile(latencies_ms, 99)
    row.p50_ms = round(p50, 1) if p50 is not None else None
    row.p99_ms = round(p99, 1) if p99 is not None else None
    return row


def hwm_kb(pid: int) -> int:
    """Peak resident set (VmHWM) of a live process, in KiB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def tree_rss_mb(pids: Sequence[int]) -> tuple[float, float]:
    """(sum, max) of peak RSS in MiB over the given processes and their children."""
    kbs = [hwm_kb(p) for root in pids for p in descendants(root)]
    kbs = [k for k in kbs if k]
    return (round(sum(kbs) / 1024, 1), round(max(kbs) / 1024, 1)) if kbs else (0.0, 0.0)


QUIET_LOAD = 0.5  # a cell that starts with the 1-minute load average above this is marked BUSY


def load1() -> float:
    """The 1-minute load average, from /proc/loadavg (os.getloadavg where that is missing)."""
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]


def settle(max_s: float, quiet: float = QUIET_LOAD, poll_s: float = 2.0) -> tuple[float, float]:
    """Wait until the 1-minute load average drops below ``quiet``, at most ``max_s`` seconds (0: no wait):
    the previous cell's own processes still weigh on the average for a minute after they end.
    Returns (load when the wait ended, seconds waited); the caller marks the cell BUSY if it is still high."""
    t0 = time.monotonic()
    now = load1()
    while now >= quiet and time.monotonic() - t0 < max_s:
        time.sleep(min(poll_s, max(0.0, max_s - (time.monotonic() - t0))))
        now = load1()
    return now, round(time.monotonic() - t0, 1)


def loop_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """One libvips thread per process: the process count is the parallelism, for every engine alike."""
    env = dict(os.environ)
    env.update({"VIPS_CONCURRENCY": "1", "UV_THREADPOOL_SIZE": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


def run_loop_group(
    cmd: Sequence[str], processes: int, seconds: float, env: dict[str, str] | None = None, timeout: float = 180.0
) -> dict[str, Any]:
    """Start ``processes`` copies of a loop child, wait until each prints "ready" (after its warm-up pass),
    then send them all "go SECONDS" at once. Each child loops over its files for that long, and prints one
    JSON line: {"jobs", "lat_ms", "start", "end", "maxrss_kb"}. Returns the merged figures."""
    procs = [
        subprocess.Popen(
            [*cmd, "--index", str(i)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or loop_env(),
            cwd=REPO,
        )
        for i in range(processes)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                err = p.stderr.read() if p.stderr else ""
                raise RuntimeError(f"{cmd[0]} child did not start: {line.strip()} {err.strip()[-600:]}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"go {seconds}\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"{cmd[0]} child failed ({p.returncode}): {err.strip()[-600:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    jobs = sum(r["jobs"] for r in results)
    rss = [r["maxrss_kb"] for r in results]
    return {
        "jobs": jobs,
        "images_per_s": jobs / (end - start),
        "lat_ms": [x for r in results for x in r["lat_ms"]],
        "rss_sum_mb": round(sum(rss) / 1024, 1),
        "rss_max_mb": round(max(rss) / 1024, 1),
        "per_file_ms": _merge_per_file(results),
    }


def _merge_per_file(results: list[dict[str, Any]]) -> dict[str, float]:
    acc: dict[str, list[float]] = {}
    for r in results:
        for name, values in r.get("per_file_ms", {}).items():
            acc.setdefault(name, []).extend(values)
    return {k: round(sorted(v)[len(v) // 2], 1) for k, v in sorted(acc.items())}


def row_from_group(workload: str, engine: str, processes: int, got: dict[str, Any], note: str = "") -> Row:
    row = Row(
        workload,
        engine,
        images_per_s=round(got["images_per_s"], 2),
        peak_rss_mb=got["rss_sum_mb"],
        max_proc_rss_mb=got["rss_max_mb"],
        jobs=got["jobs"],
        processes=processes,
        note=note,
    )
    if got.get("per_file_ms"):
        row.extra["per_file_p50_ms"] = got["per_file_ms"]
    return fill_latency(row, got["lat_ms"])


class LoopChild:
    """The child side of run_loop_group, for Python loop children (bare pyvips, simplejpeg)."""

    def __init__(self, files: Sequence[str], index: int) -> None:
        self.files = list(files)
        self.index = index

    def serve(self, work: Any) -> None:
        """``work(path, data)`` does one job; the file is read inside the timed region, as a service would."""
        for path in self.files:  # warm-up pass: page cache, codec tables, lazy imports
            work(path, _read(path))
        print("ready", flush=True)
        cmd = sys.stdin.readline().split()
        seconds = float(cmd[1])
        lat: list[float] = []
        per_file: dict[str, list[float]] = {}
        n = len(self.files)
        i = self.index  # each process starts on a different file so the mix stays even
        start = time.time()
        stop = start + seconds
        while time.time() < stop:
            path = self.files[i % n]
            t0 = time.perf_counter()
            work(path, _read(path))
            ms = (time.perf_counter() - t0) * 1000
            lat.append(ms)
            per_file.setdefault(os.path.basename(path), []).append(ms)
            i += 1
        end = time.time()
        # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
        rss = hwm_kb(os.getpid())
        print(json.dumps({"jobs": len(lat), "lat_ms": lat, "start": start, "end": end, "maxrss_kb": rss,
                          "per_file_ms": per_file}))


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
