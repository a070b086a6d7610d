"""The prefork supervisor and a child that stops answering (issue 26, item 10), with a real supervisor, real
children and a real gearmand.

- A child SIGSTOPped while it runs a job: /readyz turns red naming it, the supervisor SIGKILLs it after
  ``--heartbeat-timeout`` (its job-loop heartbeat file went stale), gearmand re-queues its job on the disconnect,
  another child runs it, and a replacement child starts. Before: the job stayed "running" in gearmand for good
  and /readyz stayed 200.
- SIGTERM to a supervisor with a stopped child: the supervisor gives its children ``--drain-timeout`` plus a
  margin, then SIGKILLs what is left and exits. Before: it never exited.
(docs/reliability.md, "The supervisor and a child that stops answering".)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.test_metrics import free_port, http_get
from reliability.test_jobserver_supervisor import worker_children
from support.corpus import photo
from support.fixtures_reliability import REPO, function_status, wait_for

from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand
from imgworker.worker.process import STOP_MARGIN_S

SOURCE = photo("baseline")
# An AV1 encode of 16 MP: seconds of work, so the job is still running when its child is stopped.
SLOW = {"width": 4000, "height": 4000, "fit": "fill", "format": "avif"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextlib.contextmanager
def _supervisor(server: str, tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "supervisor.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGWORKER_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgworker", "worker", "--processes", "2", "--concurrency", "1", "--backend", "cpu",
             "--server", server, "--root", str(tmp_path), "--root", str(SOURCE.parent), "--batch-slots", "0", *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    try:
        yield proc, log
    finally:
        kids = worker_children(proc.pid) if proc.poll() is None else set()
        for pid in kids:  # let a stopped child see its SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children(proc: subprocess.Popen[bytes], server: str) -> list[int]:
    def ready() -> list[int] | None:
        assert proc.poll() is None, "supervisor exited"
        kids = worker_children(proc.pid)
        fs = function_status(server, "resize")
        return sorted(kids) if len(kids) == 2 and fs is not None and fs.available_workers >= 2 else None

    result: list[int] = wait_for(ready, 60, 0.2, "2 registered children")
    return result


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


def test_a_stopped_child_is_killed_its_job_handed_back_and_readyz_turns_red(server: Gearmand,
                                                                            tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    port = free_port()
    timeout_s = 5.0
    with _supervisor(server.address, tmp_path, "--heartbeat-timeout", str(timeout_s), "--metrics-port", str(port),
                     "--drain-timeout", "5") as (proc, log):
        _, victim = _children(proc, server.address)
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, 0.2, "/readyz 200")
        outs = [tmp_path / "out" / f"{i}.avif" for i in range(2)]
        with SyncClient([server.address]) as client:
            for out in outs:
                client.submit_background("resize", json.dumps({"src": SOURCE.as_uri(), "dst": out.as_uri(),
                                                               **SLOW}).encode())
        wait_for(lambda: (fs := function_status(server.address, "resize")) is not None and fs.running == 2, 30, 0.05,
                 "both children running a job")
        os.kill(victim, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            _, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
                http_get(f"http://127.0.0.1:{port}/readyz")), timeout_s + 5, 0.2, "/readyz to turn red")
            assert "silent" in body and str(victim) in body, body
            wait_for(lambda: not _alive(victim), timeout_s + 10, 0.2, "the supervisor to kill the stopped child")
            killed_after = time.monotonic() - stopped_at
            assert timeout_s - 1 <= killed_after < timeout_s + 10, killed_after
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        assert "killed: its job loop silent" in log.read_text(), log.read_text()[-3000:]
        # Its job went back to gearmand with the connection and ran elsewhere; both outputs are whole images.
        wait_for(lambda: all(o.exists() for o in outs), 90, 0.5, "both jobs, the stopped child's re-run elsewhere")
        # A replacement child starts and /readyz is green again.
        wait_for(lambda: len(worker_children(proc.pid) - {victim}) == 2, 60, 0.2, "a replacement child")
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, 0.2, "/readyz green again")


def test_sigterm_with_a_stopped_child_ends_within_drain_timeout_plus_margin(server: Gearmand, tmp_path: Path) -> None:
    drain_s = 2.0
    # The heartbeat watchdog is kept out of this (300 s): the stop deadline alone must end the group.
    with _supervisor(server.address, tmp_path, "--heartbeat-timeout", "300", "--drain-timeout", str(drain_s)) as (
            proc, log):
        _, victim = _children(proc, server.address)
        os.kill(victim, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(drain_s + STOP_MARGIN_S + 15)
            except subprocess.TimeoutExpired:
                pytest.fail(f"supervisor still running {drain_s + STOP_MARGIN_S + 15:.0f} s after SIGTERM with a "
                            f"stopped child:\n{log.read_text()[-2000:]}")
            took = time.monotonic() - t0
            assert not _alive(victim), "the stopped child outlived its supervisor"
            assert drain_s + STOP_MARGIN_S - 1 <= took < drain_s + STOP_MARGIN_S + 10, took
            assert proc.returncode == 1  # a child had to be killed: not a clean stop
            assert "still running" in log.read_text(), log.read_text()[-2000:]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
