"""Idempotency: the payload-derived unique id makes duplicate submissions coalesce in gearmand (the worker runs
the job once, every submitter gets the result), and a re-run overwrites its destination atomically with
byte-identical output."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.corpus import photo
from support.fixtures_reliability import NamedWorker, function_status, make_tiny_image, wait_for

from imgworker import Client
from imgworker.client import default_unique
from imgworker.testing.gearmand import Gearmand

SOURCE = photo("baseline")


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


def _submit_in_threads(server: str, payload: dict[str, Any], n: int) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = []

    def run() -> None:
        with Client([server], timeout=120) as client:
            try:
                results.append(client.run("resize", payload))
            except Exception as exc:
                results.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_duplicates_coalesce_while_no_worker_is_running(server: Gearmand, worker_factory: Callable[..., NamedWorker],
                                                       tmp_path: Path) -> None:
    src = make_tiny_image(tmp_path / "in" / "a.png")
    payload = {"src": src.as_uri(), "dst": (tmp_path / "out" / "a.webp").as_uri(), "width": 32}
    threads, results = _submit_in_threads(server.address, payload, 3)
    # Three submissions, one queued job: gearmand matched them by the unique id derived from the payload.
    wait_for(lambda: getattr(function_status(server.address, "resize"), "queued", 0) == 1, 10, 0.05, "queued job")
    time.sleep(0.3)  # let every submission reach gearmand
    assert function_status(server.address, "resize").queued == 1  # type: ignore[union-attr]
    w = worker_factory([server.address], [tmp_path]).wait_ready()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and all(getattr(r, "ok", False) for r in results), results
    assert len({r.bytes for r in results}) == 1
    assert len(w.completed_lines("a.webp")) == 1, "the worker must run a coalesced job once"


def test_duplicates_coalesce_while_the_worker_is_busy(server: Gearmand, worker_factory: Callable[..., NamedWorker],
                                                      tmp_path: Path) -> None:
    src = make_tiny_image(tmp_path / "in" / "a.png")
    w = worker_factory([server.address], [tmp_path, SOURCE.parent], concurrency=1).wait_ready()
    # An AV1 encode of 16 MP: ~3 s of work (a JPEG of that size is ~0.4 s, too short to check the queue behind it).
    slow = {"src": SOURCE.as_uri(), "dst": (tmp_path / "out" / "slow.avif").as_uri(), "width": 4000,
            "height": 4000, "fit": "fill", "format": "avif"}
    busy, _ = _submit_in_threads(server.address, slow, 1)
    wait_for(lambda: getattr(function_status(server.address, "resize"), "running", 0) == 1, 20, 0.02, "busy")
    payload = {"src": src.as_uri(), "dst": (tmp_path / "out" / "b.png").as_uri(), "width": 32}
    threads, results = _submit_in_threads(server.address, payload, 2)
    wait_for(lambda: getattr(function_status(server.address, "resize"), "queued", 0) >= 2, 10, 0.05, "queued")
    time.sleep(0.3)
    st = function_status(server.address, "resize")
    # gearmand's "queued" counts running jobs too: the slow job + one coalesced copy of the duplicate.
    assert st is not None and st.queued == 2
    for t in [*busy, *threads]:
        t.join(120)
    assert len(results) == 2 and all(getattr(r, "ok", False) for r in results), results
    assert len(w.completed_lines("b.png")) == 1


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_a_rerun_overwrites_atomically_with_identical_bytes(server: Gearmand,
                                                            worker_factory: Callable[..., NamedWorker],
                                                            tmp_path: Path, fmt: str) -> None:
    src = make_tiny_image(tmp_path / "in" / "a.jpg", size=256, fmt="jpeg")
    dst = tmp_path / "out" / f"a.{fmt}"
    payload = {"src": src.as_uri(), "dst": dst.as_uri(), "width": 100, "format": fmt}
    worker_factory([server.address], [tmp_path]).wait_ready()
    seen: set[bytes] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.add(dst.read_bytes())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with Client([server.address], timeout=60) as client:
            client.run("resize", payload)
            first = dst.read_bytes()
            inode = dst.stat().st_ino
            # A retry: same payload, a fresh unique so gearmand runs it again instead of coalescing.
            for i in range(5):
                client.run("resize", payload, unique=f"{default_unique(payload)}-retry{i}")
                assert dst.stat().st_ino != inode, "a re-run must replace the file (rename), not rewrite it"
                inode = dst.stat().st_ino
                assert dst.read_bytes() == first
    finally:
        stop.set()
        watcher.join(5)
    assert seen == {first}, "a reader saw something other than the whole, identical output"
