"""Graceful drain on SIGTERM: finish jobs in flight, take no new ones, exit 0; past the deadline (or on a
second SIGTERM) hand the job back to gearmand so another worker completes it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pyvips
from integration.test_metrics import PHOTO, free_port, http_get, start_worker, wait_for
from support.corpus import photo
from support.workerproc import WorkerProc

from imgworker.gearman import FunctionStatus, SyncClient, status
from imgworker.testing.gearmand import Gearmand

__all__ = ["start_worker"]  # the fixture, imported for this module's tests

BIG_BYTES = "200000000"  # --max-source-bytes for the slow source


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source that takes seconds to thumbnail: a 48 MP interlaced PNG (no shrink-on-load, full decode)."""
    root = tmp_path_factory.mktemp("drain")
    (root / "out").mkdir()
    (root / "small.jpg").write_bytes(PHOTO.read_bytes())
    src = pyvips.Image.new_from_file(str(photo("dragonfly")))
    src.zoom(5, 5).write_to_file(str(root / "slow.png"), compression=1, interlace=True)
    return root


def payload(root: Path, src: str, dst: str) -> bytes:
    return json.dumps({"src": (root / src).as_uri(), "dst": (root / dst).as_uri(), "width": 256}).encode()


def function_status(server: str, name: str) -> FunctionStatus:
    rows = asyncio.run(status(server))
    return next((r for r in rows if r.name == name), FunctionStatus(name, 0, 0, 0))


def test_sigterm_finishes_job_in_flight_and_takes_no_new_one(
    gearmand_factory: Callable[[], Gearmand], slow_root: Path, start_worker: Any
) -> None:
    g = gearmand_factory()
    port = free_port()
    worker, log = start_worker(
        [g.address],
        slow_root,
        "--processes",
        "1",
        "--concurrency",
        "2",
        "--drain-timeout",
        "120",
        "--max-source-bytes",
        BIG_BYTES,
        "--metrics-port",
        str(port),
    )
    wait_for(lambda: function_status(g.address, "resize").available_workers == 1, what="worker registered")
    (slow_root / "out" / "later.jpg").unlink(missing_ok=True)
    with SyncClient([g.address]) as client, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.submit, "resize", payload(slow_root, "slow.png", "out/slow.jpg"), timeout=120)
        wait_for(lambda: function_status(g.address, "resize").running == 1, what="slow job running")
        worker.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining" in log.read_text(), what="drain to start")
        code, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert (code, body.strip()) == (503, "draining")
        # No GRAB leaves a draining worker: a job submitted now stays queued although a slot is free. (Its
        # RESET_ABILITIES waits for the running job: gearmand would re-queue that job if sent earlier.)
        client.submit_background("resize", payload(slow_root, "small.jpg", "out/later.jpg"))
        result = json.loads(slow.result(120))
    assert result["ok"] is True and result["width"] == 256
    assert worker.wait(60) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "worker stopped cleanly" in text and "handing them back" not in text
    assert text.count("job function=") == 1  # only the slow job ran here
    left = function_status(g.address, "resize")
    assert (left.queued, left.running) == (1, 0)
    assert not (slow_root / "out" / "later.jpg").exists()
    assert pyvips.Image.new_from_file(str(slow_root / "out" / "slow.jpg")).width == 256


@pytest.mark.parametrize("how", ["deadline", "second-sigterm"])
def test_unfinished_job_is_handed_back_and_completed_by_another_worker(
    gearmand_factory: Callable[[], Gearmand], slow_root: Path, start_worker: Any, how: str
) -> None:
    g = gearmand_factory()
    drain_timeout = "0.3" if how == "deadline" else "600"
    args = ("--processes", "1", "--concurrency", "1", "--max-source-bytes", BIG_BYTES)
    first, first_log = start_worker([g.address], slow_root, *args, "--drain-timeout", drain_timeout)
    wait_for(lambda: function_status(g.address, "resize").available_workers == 1, what="first worker registered")
    dst = slow_root / "out" / f"handed-{how}.jpg"
    with SyncClient([g.address]) as client, ThreadPoolExecutor(1) as pool:
        job = pool.submit(client.submit, "resize", payload(slow_root, "slow.png", f"out/{dst.name}"), timeout=180)
        wait_for(lambda: function_status(g.address, "resize").running == 1, what="job running on the first worker")
        first.send_signal(signal.SIGTERM)
        if how == "second-sigterm":
            wait_for(lambda: "draining" in first_log.read_text(), what="drain to start")
            first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 1, first_log.read_text()[-3000:]  # 1: a job was handed back
        assert "handing them back" in first_log.read_text()
        assert "job function=" not in first_log.read_text()  # it never finished there
        queued = wait_for(
            lambda: (lambda s: s if s.queued == 1 and s.running == 0 else None)(function_status(g.address, "resize")),
            what="job back in the queue",
        )
        assert queued.available_workers == 0
        assert not job.done()
        second, second_log = start_worker([g.address], slow_root, *args)
        result = json.loads(job.result(180))
    assert result["ok"] is True and result["dst"] == dst.as_uri()
    assert "job function=resize outcome=ok" in second_log.read_text()
    assert pyvips.Image.new_from_file(str(dst)).width == 256
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_a_burst_of_stop_signals_ends_the_worker_cleanly(
    gearmand_factory: Callable[[], Gearmand], tmp_path: Path, processes: int
) -> None:
    """A shell's ``kill`` followed by its exit trap's, or an operator pressing Ctrl-C again and again: signals
    keep coming while the worker drains, closes its loop and exits. It still exits 0 with no traceback."""
    g = gearmand_factory()
    worker = WorkerProc([g.address], [tmp_path], processes=processes).start()
    deadline = time.monotonic() + 60
    sent = 0
    while worker.alive() and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            worker.signal(signal.SIGTERM)
            sent += 1
        time.sleep(0.002)
    code = worker.wait(10)
    log = worker.log()
    assert sent > 1, log[-3000:]  # more than one signal reached it: the burst really happened
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "Exception ignored" not in log, log[-3000:]
    assert "worker stopped cleanly" in log
