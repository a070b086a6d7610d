"""Fixtures for the reliability, access and fuzz tests: real worker processes, admin polling, tiny images.

A ``NamedWorker`` is tests/support/workerproc.py's real ``imgworker worker`` subprocess (one process, CPU backend) with
a client id, so a test can SIGKILL it mid-job, read its log, and measure its peak RSS (VmHWM).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from imgworker import Client
from imgworker.gearman import FunctionStatus, WorkerInfo
from imgworker.gearman import status as _admin_status
from imgworker.gearman import workers as _admin_workers
from imgworker.testing.gearmand import Gearmand
from imgworker.testing.ports import reserve_port
from support.workerproc import REPO, WorkerProc

__all__ = [
    "REPO",
    "NamedWorker",
    "admin_status",
    "admin_workers",
    "fixed_port_gearmand",
    "function_status",
    "make_tiny_image",
    "run_in_thread",
    "wait_for",
    "worker_factory",
]


def fixed_port_gearmand(**kw: Any) -> Gearmand:
    """A gearmand that comes back on the same port after ``kill()`` + ``start()`` (a restart with a gap)."""
    return Gearmand(port=reserve_port(), **kw).start()  # Gearmand keeps the port while it is down


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def run_in_thread(servers: Sequence[str], function: str, payload: dict[str, Any], *, timeout: float,
                  catch: type[BaseException] | tuple[type[BaseException], ...]) -> tuple[threading.Thread, list[Any]]:
    """A foreground job on a daemon thread (started): the list gets its result, or the ``catch`` exception it
    raised; anything else ends the thread with the list empty."""
    outcome: list[Any] = []

    def run() -> None:
        with Client(list(servers), timeout=timeout) as client:
            try:
                outcome.append(client.run(function, payload))
            except catch as exc:
                outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, outcome


def admin_workers(server: str) -> list[WorkerInfo]:
    try:
        return asyncio.run(_admin_workers(server, timeout=2.0))
    except Exception:  # server down or restarting: "no workers" to the poller
        return []


def admin_status(server: str) -> list[FunctionStatus]:
    try:
        return asyncio.run(_admin_status(server, timeout=2.0))
    except Exception:
        return []


def function_status(server: str, name: str) -> FunctionStatus | None:
    return next((f for f in admin_status(server) if f.name == name), None)


class NamedWorker(WorkerProc):
    """A ``WorkerProc`` (one process, CPU backend, 5 s drain) with a gearmand client id, so that a test finds
    it among several in admin ``workers``, and its peak RSS (VmHWM) remembered across kills and restarts."""

    def __init__(
        self,
        servers: Sequence[str],
        roots: Sequence[str | os.PathLike[str]],
        log_path: Path,
        *,
        name: str,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(servers, roots, "--backend", "cpu", "--client-id", name, "--drain-timeout", "5", *extra,
                         env=env, concurrency=concurrency, log_path=log_path)
        self.name = name
        self.peak_rss_kb = 0

    def start(self, *, wait_for: str | None = None, timeout: float = 30.0) -> NamedWorker:
        """Started; registration is ``wait_ready``'s (by client id), so a test can start several at once."""
        super().start(wait_for=wait_for, timeout=timeout)
        return self

    def registered(self, server: str | None = None, function: str = "resize") -> bool:
        servers = [server] if server else self.servers
        return all(
            any(w.client_id == self.name and function in w.functions for w in admin_workers(s)) for s in servers
        )

    def wait_ready(self, timeout: float = 30.0, server: str | None = None) -> NamedWorker:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited early:\n{self.log()[-3000:]}")
            return self.registered(server)

        wait_for(ready, timeout, 0.1, f"worker {self.name} to register")
        return self

    def sample_rss(self) -> int:
        """Peak RSS (VmHWM, KiB) of the live process, remembered across restarts of this object."""
        if self.alive():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            except OSError:
                pass
        return self.peak_rss_kb

    def kill(self) -> None:
        """SIGKILL: the crash case (no drain, no goodbye to gearmand)."""
        self.sample_rss()
        super().kill()

    def stop(self, timeout: float = 15.0) -> int | None:
        self.sample_rss()
        return super().stop(timeout)

    def completed_lines(self, needle: str) -> list[str]:
        """The worker's per-job log lines whose src/dst mention ``needle``."""
        return [ln for ln in self.log().splitlines() if "job function=" in ln and needle in ln]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., NamedWorker]]:
    """Start real worker processes; all are stopped (SIGTERM, then SIGKILL) at test end."""
    started: list[NamedWorker] = []

    def make(servers: Sequence[str], roots: Sequence[str | os.PathLike[str]], *, start: bool = True,
             **kw: Any) -> NamedWorker:
        name = kw.pop("name", f"w{len(started)}-{os.getpid()}")
        w = NamedWorker(servers, roots, tmp_path / f"{name}.log", name=name, **kw)
        started.append(w)
        return w.start() if start else w

    yield make
    for w in started:
        w.stop(5)


def make_tiny_image(path: Path, size: int = 64, fmt: str = "png", seed: int = 0) -> Path:
    """A small generated image with some structure (gradient + noise), in PNG or JPEG."""
    import pyvips

    xy = pyvips.Image.xyz(size, size)
    base = (xy[0] * (255.0 / size) + seed % 97).cast("uchar")
    noise = pyvips.Image.gaussnoise(size, size, sigma=20, mean=(seed * 7) % 128).cast("uchar")
    image = base.bandjoin([noise, (xy[1] * (255.0 / size)).cast("uchar")]).copy(interpretation="srgb")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        image.pngsave(str(path))
    else:
        image.jpegsave(str(path), Q=85)
    return path
