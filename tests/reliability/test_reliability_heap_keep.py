"""glibc's heap kept for the next job (worker/memory.py keep_job_buffers) and handed back when the worker is idle
(worker heartbeat -> memory.trim_heap), in a real worker process behind a real gearmand."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import pyvips
from support.corpus import photo
from support.workerproc import WorkerProc

from imgworker import Client
from imgworker.testing.gearmand import Gearmand


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def photo_width() -> int:
    return int(pyvips.Image.new_from_file(str(photo("dragonfly"))).width)


@pytest.fixture(scope="module")
def progressive_12mp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12 MP progressive JPEG: libjpeg's coefficient planes (24 + 2 x 6 MB, each under the 32 MiB mmap
    threshold) dominate the job's memory."""
    root = tmp_path_factory.mktemp("heap")
    src = pyvips.Image.new_from_file(str(photo("dragonfly"))).resize(4000 / photo_width())
    src.jpegsave(str(root / "big.jpg"), Q=85, interlace=True)
    (root / "out").mkdir()
    return root


def test_idle_worker_hands_the_kept_heap_back(progressive_12mp: Path) -> None:
    with Gearmand() as g, WorkerProc([g.address], [progressive_12mp], concurrency=1) as worker, \
            Client([g.address], timeout=120) as client:
        for i in range(3):
            result = client.resize(src=(progressive_12mp / "big.jpg").as_uri(),
                                   dst=(progressive_12mp / "out" / f"{i}.jpg").as_uri(), width=256, height=256)
            assert result.ok, result
        after_jobs = rss_mib(worker.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and rss_mib(worker.pid) > after_jobs - 30:
            time.sleep(0.5)
        idle = rss_mib(worker.pid)
        # The coefficient planes were kept between jobs, then trimmed: tens of MiB back after ~5 s idle.
        assert after_jobs - idle >= 30, (after_jobs, idle)
        assert worker.alive()


CHILD = """
import ctypes, sys
from imgworker.worker import memory
memory.keep_job_buffers()
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
for _ in range(3):
    block = bytearray(24 * 2**20)  # a source-sized buffer: under the 32 MiB threshold, so from the heap
    del block
{trim}
print(rss())
"""


@pytest.mark.parametrize(("trim", "kept"), [("", True), ("memory.trim_heap()", False)])
def test_freed_job_buffers_stay_until_trimmed(trim: str, kept: bool) -> None:
    base = subprocess.run([sys.executable, "-c", CHILD.format(trim="").replace("range(3)", "range(0)")],
                          capture_output=True, text=True, check=True)
    got = subprocess.run([sys.executable, "-c", CHILD.format(trim=trim)],
                         capture_output=True, text=True, check=True)
    grew = int(got.stdout) - int(base.stdout)
    assert (grew >= 20) is kept, (grew, got.stdout, base.stdout)
