"""A worker SIGKILLed in the middle of a job: gearmand hands the job to another worker, it completes exactly
once from the client's view, and the destination is always absent or a whole image, never a partial one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.corpus import photo
from support.fixtures_reliability import NamedWorker, function_status, run_in_thread, wait_for

from imgworker import Client
from imgworker.core.errors import Unavailable
from imgworker.testing.gearmand import Gearmand

SOURCE = photo("baseline")
# An upscale big enough to take a few seconds on one core: a wide window to kill the worker in.
SLOW = {"width": 4000, "height": 4000, "fit": "fill", "format": "jpeg", "quality": 80}


class DestinationWatcher:
    """Reads the destination in a loop while the test runs; every read must be absent or a whole JPEG."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = None
            if data is not None:
                self.reads += 1
                # A whole JPEG starts with SOI and ends with EOI; a partial write would miss the end.
                if not (data.startswith(b"\xff\xd8") and data.rstrip(b"\x00").endswith(b"\xff\xd9")):
                    self.bad.append(f"{len(data)} bytes, tail {data[-4:]!r}")
            time.sleep(0.005)

    def __enter__(self) -> DestinationWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def assert_whole_image(path: Path, width: int, height: int) -> None:
    image = pyvips.Image.new_from_file(str(path), fail_on="warning")
    assert (image.width, image.height) == (width, height)
    image.avg()  # decodes every pixel: a truncated file fails here


def leftover_parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


def _start_killed_job(
    server: Gearmand, make_worker: Callable[..., NamedWorker], root: Path, submit: Callable[[dict[str, Any]], Any]
) -> tuple[NamedWorker, dict[str, Any], Any]:
    """Start worker A, submit the slow job, SIGKILL A while it runs; returns (A, payload, submit's value)."""
    a = make_worker([server.address], [root, SOURCE.parent], name="victim").wait_ready()
    payload = {"src": SOURCE.as_uri(), "dst": (root / "out" / "big.jpg").as_uri(), **SLOW}
    value = submit(payload)
    wait_for(lambda: (function_status(server.address, "resize") or _Zero).running == 1, 20, 0.02, "job running on A")
    a.kill()  # at once: the job takes seconds, and the check below proves it had not finished
    assert a.completed_lines("big.jpg") == [], "A finished the job before it was killed: the test proves nothing"
    return a, payload, value


class _Zero:
    running = 0
    queued = 0


def test_foreground_job_survives_worker_sigkill(server: Gearmand, worker_factory: Callable[..., NamedWorker],
                                                tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "out").mkdir(parents=True)
    dst = root / "out" / "big.jpg"
    results: list[Any] = []
    errors: list[BaseException] = []

    def submit(payload: dict[str, Any]) -> threading.Thread:
        def run() -> None:
            try:
                with Client([server.address], timeout=120) as client:
                    results.append(client.run("resize", payload))
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    with DestinationWatcher(dst) as watcher:
        _a, _payload, thread = _start_killed_job(server, worker_factory, root, submit)
        assert not dst.exists(), "a killed worker left a destination behind"
        b = worker_factory([server.address], [root, SOURCE.parent], name="rescuer").wait_ready()
        thread.join(120)
    assert not errors, errors
    assert len(results) == 1 and results[0].ok and (results[0].width, results[0].height) == (4000, 4000)
    assert len(b.completed_lines("big.jpg")) == 1, "the rescuing worker must run the job exactly once"
    assert watcher.bad == [], f"a reader saw a partial destination: {watcher.bad}"
    assert_whole_image(dst, 4000, 4000)
    # The killed worker never reached its write, so it left no temporary file either.
    assert leftover_parts(dst.parent) == []


def test_background_job_survives_worker_sigkill(server: Gearmand, worker_factory: Callable[..., NamedWorker],
                                                tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "out").mkdir(parents=True)
    dst = root / "out" / "big.jpg"
    client = Client([server.address])
    try:
        with DestinationWatcher(dst) as watcher:
            _start_killed_job(server, worker_factory, root, lambda p: client.submit_background("resize", p))
            # gearmand put the job back in the queue when A's connection dropped.
            wait_for(lambda: (function_status(server.address, "resize") or _Zero).queued == 1, 10, 0.05,
                     "the job to be re-queued")
            b = worker_factory([server.address], [root, SOURCE.parent], name="rescuer").wait_ready()
            wait_for(lambda: b.completed_lines("big.jpg"), 120, 0.1, "the rescuer to finish the job")
    finally:
        client.close()
    assert len(b.completed_lines("big.jpg")) == 1 and "outcome=ok" in b.completed_lines("big.jpg")[0]
    st = function_status(server.address, "resize")
    assert st is not None and (st.queued, st.running) == (0, 0)
    assert watcher.bad == []
    assert_whole_image(dst, 4000, 4000)


def test_job_retries_cap_turns_a_poison_job_into_a_clear_error(worker_factory: Callable[..., NamedWorker],
                                                                 tmp_path: Path) -> None:
    """With ``gearmand --job-retries 1`` a job whose worker dies is dropped, and the foreground client gets a
    clear, retryable error instead of the job killing worker after worker forever."""
    root = tmp_path / "root"
    (root / "out").mkdir(parents=True)
    with Gearmand(extra_args=("--job-retries", "1")) as server:
        outcomes: list[list[Any]] = []

        def submit(payload: dict[str, Any]) -> threading.Thread:
            t, outcome = run_in_thread([server.address], "resize", payload, timeout=60, catch=Unavailable)
            outcomes.append(outcome)
            return t

        _a, payload, thread = _start_killed_job(server, worker_factory, root, submit)
        thread.join(30)
        outcome = outcomes[0]
        assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
        assert outcome[0].retryable
        # The job is gone from the server: a new worker gets nothing, and the destination was never written.
        b = worker_factory([server.address], [root, SOURCE.parent], name="after").wait_ready()
        st = function_status(server.address, "resize") or _Zero  # gearmand's own word: nothing queued or running
        assert (st.queued, st.running) == (0, 0)
        assert b.completed_lines("big.jpg") == []
        assert not (root / "out" / "big.jpg").exists()
        # Resubmitting (the documented reaction to UNAVAILABLE) works.
        with Client([server.address], timeout=120) as client:
            assert client.run("resize", payload).ok
