"""Run a real gearmand on a free loopback port (tests, benchmarks, local development).

The local default matches k8s/base/gearmand.yaml: a persistent sqlite queue (background jobs survive a
SIGKILL and a restart; at-least-once: a job that was running may run again), ``--job-retries`` (a job whose
worker dies that many times is dropped instead of killing worker after worker) and TCP keepalive (a dead
peer's connection, and so its jobs, is noticed in about a minute). docs/reliability.md explains each.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from imgworker.testing.ports import reserve_port

GEARMAND = "/usr/sbin/gearmand"
_START_WAIT = 3.0  # gearmand retries a busy port for 20-30 s; we give up sooner and pick another

JOB_RETRIES = 3  # attempts before gearmand drops a job whose worker died (its default, 0, is unlimited)
# Keepalive probes after 30 s idle, every 10 s, 3 unanswered: a dead peer is dropped after about 60 s.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 30, 10, 3
QUEUE_FILE = "queue.sqlite3"
# sqlite's write-ahead log: one fsync per commit instead of the rollback journal's several, so about 3x the
# background submits/s and 4x the drain/s on a real disk (benchmarks/service/jobserver.py), equally durable.
# The mode is stored in the file; gearmand keeps it. k8s: the initContainer in k8s/base/gearmand.yaml.
JOURNAL_MODE = "wal"


def default_args(queue_db: str | None, job_retries: int = JOB_RETRIES) -> list[str]:
    """The job-server flags every imgworker gearmand runs with (the local default and the manifests)."""
    args = [f"--job-retries={job_retries}", "--keepalive", f"--keepalive-idle={KEEPALIVE_IDLE_S}",
            f"--keepalive-interval={KEEPALIVE_INTERVAL_S}", f"--keepalive-count={KEEPALIVE_COUNT}"]
    if queue_db:
        # Not --store-queue-on-shutdown: that writes the queue only on a clean stop, and a SIGKILL loses it.
        args = ["--queue-type=libsqlite3", f"--libsqlite3-db={queue_db}", *args]
    return args


def _given(flag: str, args: tuple[str, ...]) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


class GearmandError(RuntimeError):
    pass


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Gearmand:
    """``persistent=False`` gives gearmand's in-memory queue (lost on restart), for tests that need it;
    ``extra_args`` override the defaults they name (``--job-retries``, ``--keepalive*``)."""

    def __init__(self, *, port: int | None = None, threads: int = 2, binary: str | None = None,
                 extra_args: tuple[str, ...] = (), persistent: bool = True, job_retries: int = JOB_RETRIES,
                 data_dir: str | os.PathLike[str] | None = None, journal_mode: str = JOURNAL_MODE) -> None:
        self.binary = binary or shutil.which("gearmand") or GEARMAND
        if not os.path.exists(self.binary):
            raise GearmandError("gearmand is not installed: apt-get install gearman-job-server")
        self.port = port or 0
        self._fixed_port = port is not None
        self.threads = threads
        self.extra_args = extra_args
        self.persistent = persistent
        self.job_retries = job_retries
        self.journal_mode = journal_mode
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="gearmand-", dir=data_dir))
        self._user: str | None = None
        if os.geteuid() == 0:
            # gearmand refuses to run as root without -u; the package creates a `gearman` user.
            self._user = next((u for u in ("gearman", "nobody") if _has_user(u)), None)
            if self._user:
                pw = pwd.getpwnam(self._user)
                os.chown(self._dir, pw.pw_uid, pw.pw_gid)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self._dir / "gearmand.log"

    @property
    def queue_file(self) -> Path | None:
        """The sqlite queue (kept across restart() and kill(); removed by close())."""
        return self._dir / QUEUE_FILE if self.persistent else None

    @property
    def args(self) -> list[str]:
        """The flags this server runs with besides address, port, threads, pid and log file."""
        defaults = [a for a in default_args(str(self.queue_file) if self.queue_file else None, self.job_retries)
                    if not _given(a.split("=", 1)[0], self.extra_args)]
        if _given("-j", self.extra_args):
            defaults = [a for a in defaults if not a.startswith("--job-retries")]
        return [*defaults, *self.extra_args]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Gearmand:
        if self.running:
            return self
        self._prepare_queue()
        tries = 1 if self._fixed_port else 5
        last = ""
        for _ in range(tries):
            if not self._fixed_port:
                self.port = reserve_port()
            # A fixed port (restart) may still be held briefly by the old process: wait longer for it.
            if self._launch(_START_WAIT if not self._fixed_port else 30.0):
                return self
            last = self._tail_log()
            self._kill()
        raise GearmandError(f"gearmand did not start on 127.0.0.1:{self.port}: {last}")

    def _prepare_queue(self) -> None:
        """Create the sqlite file in ``journal_mode`` before gearmand first opens it (an existing file keeps its
        mode and its jobs), owned by the user gearmand runs as."""
        if self.queue_file is None or self.queue_file.exists():
            return
        with contextlib.closing(sqlite3.connect(self.queue_file)) as db:
            mode = db.execute(f"PRAGMA journal_mode={self.journal_mode}").fetchone()[0]
        if mode != self.journal_mode.lower():
            raise GearmandError(f"sqlite refused journal_mode={self.journal_mode} for {self.queue_file}: {mode}")
        if self._user:
            pw = pwd.getpwnam(self._user)
            for path in self._dir.glob(QUEUE_FILE + "*"):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _launch(self, wait: float) -> bool:
        cmd = [self.binary, "--listen", "127.0.0.1", "--port", str(self.port), "--threads", str(self.threads),
               "--pid-file", str(self._dir / "gearmand.pid"), "--log-file", str(self.log_file),
               "--verbose", "WARNING", *self.args]
        if self._user:
            cmd += ["-u", self._user]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _port_open(self.port):
                return True
            time.sleep(0.02)
        return False

    def _tail_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
            else:
                self._hold_port()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: simulates a crash (clients see the connection drop; the sqlite queue keeps background jobs,
        the in-memory one loses them)."""
        self._kill()
        self.proc = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
            self._hold_port()

    def _hold_port(self) -> None:
        """Keep the port of a server that has just exited for its restart (a crash test's server.start())."""
        if self.port:
            with contextlib.suppress(OSError):  # already held in TIME_WAIT by the old server's connections
                reserve_port(port=self.port)

    def restart(self, *, kill: bool = False) -> Gearmand:
        """Stop (or kill) and start again on the same port."""
        self.kill() if kill else self.stop()
        self._fixed_port = True
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Gearmand:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


if __name__ == "__main__":
    with Gearmand() as g:
        print(g.address, flush=True)
        try:
            while g.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
