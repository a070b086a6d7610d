"""A real imgworker worker process for tests: start, wait until registered, signal, stop, SIGKILL mid-job, read
its log. tests/support/fixtures_reliability.py adds a named worker (client id, peak RSS, per-job log lines) on top."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from imgworker.gearman import status

REPO = Path(__file__).resolve().parents[2]
# Where worker logs go: tests/conftest.py points this at the run's pytest temp folder (kept for the last 3
# runs, like every tmp_path), so no test leaves files in /tmp.
LOG_DIR: Path | None = None


def new_log() -> Path:
    """A fresh log file in LOG_DIR, named after the test that starts the worker."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "worker").split(" ")[0].rsplit("/", 1)[-1]
    where = LOG_DIR or Path(tempfile.gettempdir())
    where.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkstemp(prefix=re.sub(r"[^\w.-]+", "_", test)[:100] + "-", suffix=".log", dir=where)[1])


def registered(server: str, function: str) -> int:
    """Workers that can do ``function`` on ``server`` (admin ``status``)."""
    try:
        rows = asyncio.run(status(server, timeout=2.0))
    except Exception:
        return 0
    return next((r.available_workers for r in rows if r.name == function), 0)


class WorkerProc:
    def __init__(
        self,
        servers: Sequence[str],
        roots: Sequence[str | os.PathLike[str]] = (),
        *args: str,
        env: dict[str, str] | None = None,
        processes: int = 1,
        concurrency: int = 2,
        log_path: Path | None = None,
    ) -> None:
        self.servers = list(servers)
        cmd = [
            sys.executable,
            "-m",
            "imgworker",
            "worker",
            "--processes",
            str(processes),
            "--concurrency",
            str(concurrency),
        ]
        for s in self.servers:
            cmd += ["--server", s]
        for r in roots:
            cmd += ["--root", str(r)]
        self.cmd = cmd + list(args)
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMGWORKER_")}
        self.env = {**base, "PYTHONPATH": str(REPO), **(env or {})}
        self.log_path = log_path or new_log()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_for: str | None = "resize", timeout: float = 30.0) -> WorkerProc:
        with self.log_path.open("ab") as log:
            # Own session: a terminal's Ctrl-C reaches the test, not the workers (they get SIGTERM at the end).
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL, cwd=REPO,
                start_new_session=True,
            )
        if wait_for:
            self.wait_registered(wait_for, timeout=timeout)
        return self

    def wait_registered(self, function: str, *, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if all(registered(s, function) >= count for s in self.servers):
                return
            time.sleep(0.05)
        raise TimeoutError(f"worker did not register {function!r} in {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> WorkerProc:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
