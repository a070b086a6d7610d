"""Fixtures for the reliability, access and fuzz tests: real worker processes, admin polling, tiny images.

A ``WorkerProc`` is a real ``imgworker worker`` subprocess (one process, CPU backend) with its log in a file,
so a test can SIGKILL it mid-job, read its log, and measure its peak RSS (VmHWM).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from imgworker.gearman import FunctionStatus, WorkerInfo
from imgworker.gearman import status as _admin_status
from imgworker.gearman import workers as _admin_workers
from imgworker.gearmand import Gearmand

__all__ = [
    "WorkerProc",
    "admin_status",
    "admin_workers",
    "fixed_port_gearmand",
    "function_status",
    "make_tiny_image",
    "wait_for",
    "worker_factory",
]

REPO = Path(__file__).resolve().parents[1]


def fixed_port_gearmand(**kw: Any) -> Gearmand:
    """A gearmand that comes back on the same port after ``kill()`` + ``start()`` (a restart with a gap)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return Gearmand(port=port, **kw).start()


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


class WorkerProc:
    """One ``imgworker worker --processes 1`` subprocess."""

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
        self.servers = list(servers)
        self.name = name
        self.log_path = log_path
        cmd = [sys.executable, "-m", "imgworker", "worker", "--processes", "1", "--backend", "cpu",
               "--concurrency", str(concurrency), "--client-id", name, "--drain-timeout", "5", *extra]
        for s in self.servers:
            cmd += ["--server", s]
        for r in roots:
            cmd += ["--root", str(r)]
        self.cmd = cmd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IMGWORKER_")}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss_kb = 0

    def start(self) -> WorkerProc:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=REPO, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def registered(self, server: str | None = None, function: str = "resize") -> bool:
        servers = [server] if server else self.servers
        return all(
            any(w.client_id == self.name and function in w.functions for w in admin_workers(s)) for s in servers
        )

    def wait_ready(self, timeout: float = 30.0, server: str | None = None) -> WorkerProc:
        def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"worker {self.name} exited early:\n{self.log_text()[-3000:]}")
            return self.registered(server)

        wait_for(ready, timeout, 0.1, f"worker {self.name} to register")
        return self

    def sample_rss(self) -> int:
        """Peak RSS (VmHWM, KiB) of the live process, remembered across restarts of this object."""
        if self.alive:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            except OSError:
                pass
        return self.peak_rss_kb

    def kill(self) -> None:
        """SIGKILL: the crash case (no drain, no goodbye to gearmand)."""
        if self.alive:
            self.sample_rss()
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.alive:
            self.sample_rss()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def completed_lines(self, needle: str) -> list[str]:
        """The worker's per-job log lines whose src/dst mention ``needle``."""
        return [ln for ln in self.log_text().splitlines() if "job function=" in ln and needle in ln]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    """Start real worker processes; all are stopped (SIGTERM, then SIGKILL) at test end."""
    started: list[WorkerProc] = []

    def make(servers: Sequence[str], roots: Sequence[str | os.PathLike[str]], *, start: bool = True,
             **kw: Any) -> WorkerProc:
        name = kw.pop("name", f"w{len(started)}-{os.getpid()}")
        w = WorkerProc(servers, roots, tmp_path / f"{name}.log", name=name, **kw)
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
