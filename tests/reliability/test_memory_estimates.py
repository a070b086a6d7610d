"""The memory budget against reality for every decoder path (issue 26, item 6).

Each kind of source (interlaced and plain PNG, tiled and one-strip TIFF, baseline, progressive and CMYK JPEG,
WebP, HEIC, AVIF, GIF) is generated here, 1500 px a side (a second or two each on 2 cores), with noise so that
its file is as big as such a file gets (the source's bytes count too).

- Alone, in a fresh worker-like process: the peak growth of resident memory is within what the job was admitted
  with (``Budget.admit``), measured by benchmarks/probes/memory_estimates.py. Before: a plain PNG was admitted at
  3.4 MiB and grew 21 MiB, an HEIC at 1.2 MiB (its decode was not charged at all) and grew 21 MiB.
- Together, through a real worker with ``--memory-budget`` and 4 slots: every job succeeds (none waits on
  itself), and the worker's peak growth stays within the budget.
docs/security.md, "Memory: estimates against reality".
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fixtures_hostile import code, job, vm_hwm_kb
from support.fixtures_reliability import REPO, NamedWorker

from imgworker.testing.gearmand import Gearmand
from imgworker.worker.memory import HEAP_KEEP

sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repo, not of the installed wheel
from benchmarks.probes.memory_estimates import KINDS, MIB, OUTPUT, make, measure

SIDE = 1500
SLACK = 4 * MIB  # resident-memory noise of one measurement (page granularity, allocator bookkeeping)
BUDGET_MIB = 64


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memory-kinds")


@pytest.mark.parametrize("kind", KINDS)
def test_each_decoder_path_alone_stays_within_its_estimate(images: Path, kind: str) -> None:
    r = measure(make(kind, images, SIDE), make(kind, images, 64))
    assert r["estimate"] >= r["source_bytes"], r  # the source's bytes are counted
    assert r["growth"] <= r["estimate"] + SLACK, (
        f"{kind}: admitted {r['estimate'] / MIB:.1f} MiB, grew {r['growth'] / MIB:.1f} MiB")


@pytest.fixture(scope="module")
def worker(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gearmand, NamedWorker]]:
    log = tmp_path_factory.mktemp("memory-kinds-log") / "worker.log"
    with Gearmand() as g:
        w = NamedWorker([g.address], [images], log, name="memkinds", concurrency=4,
                        extra=["--memory-budget", str(BUDGET_MIB), "--job-timeout", "120"])
        w.start().wait_ready()
        try:
            yield g, w
        finally:
            w.stop()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_every_kind_at_once_through_a_worker_stays_within_the_budget(
    images: Path, worker: tuple[Gearmand, NamedWorker]
) -> None:
    g, w = worker
    sources = [make(kind, images, SIDE) for kind in KINDS]

    def run(src: Path, width: int, results: list[dict[str, Any]]) -> None:
        dst = images / "out" / f"{src.stem}-{width}.jpg"
        results.append(job(g.address, {"src": src.as_uri(), "dst": dst.as_uri(), **OUTPUT, "width": width},
                           timeout=300) | {"src": src.name})

    (images / "out").mkdir(exist_ok=True)
    warm: list[dict[str, Any]] = []
    for kind in KINDS:  # every codec loaded, on small files: the big buffers are not in the heap yet
        run(make(kind, images, 64), 16, warm)
    assert all(code(r) == "ok" for r in warm), warm
    Path(f"/proc/{w.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kb(w.pid, "VmRSS")
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=run, args=(src, width, results)) for src in sources for width in (512, 256)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == len(threads) and all(code(r) == "ok" for r in results), json.dumps(
        [r for r in results if code(r) != "ok"])[:3000]
    growth = (vm_hwm_kb(w.pid) - before) * 1024
    # Resident memory also holds the freed heap glibc keeps for the next job (process.keep_job_buffers: up to
    # HEAP_KEEP; it is part of BASE_PER_PROCESS, which the container-derived budget leaves out).
    assert growth <= BUDGET_MIB * MIB + HEAP_KEEP + 2 * SLACK, (
        f"{len(threads)} jobs under a {BUDGET_MIB} MiB budget grew the worker {growth / MIB:.0f} MiB "
        f"(from {before // 1024} MiB)")
