"""Runtime robustness around the job server: the prefork supervisor restarts a crashing child with capped
exponential backoff (not twice a second forever), and `imgworker health` exits only 0 or 1 (Docker's HEALTHCHECK
reserves 2)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fixtures_reliability import REPO, wait_for

from imgworker.testing.gearmand import Gearmand
from imgworker.worker.process import RESTART_FIRST_S, RESTART_MAX_S, RESTART_STABLE_S, RestartBackoff


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    b = RestartBackoff()
    delays = [b.delay(uptime=1.0) for _ in range(10)]
    assert delays[:4] == [RESTART_FIRST_S, 2 * RESTART_FIRST_S, 4 * RESTART_FIRST_S, 8 * RESTART_FIRST_S]
    assert delays[-1] == RESTART_MAX_S and all(a <= b for a, b in itertools.pairwise(delays))
    assert b.delay(uptime=RESTART_STABLE_S) == RESTART_FIRST_S  # it ran long enough: a fresh start
    assert b.delay(uptime=1.0) == 2 * RESTART_FIRST_S


def worker_children(pid: int) -> set[int]:
    """The supervisor's spawned worker processes (not multiprocessing's resource tracker)."""
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            continue
    out = set()
    for k in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.add(k)
        except OSError:
            continue
    return out


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "supervisor.log"
    with Gearmand() as g, open(log, "wb") as out:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGWORKER_")}
        proc = subprocess.Popen([sys.executable, "-m", "imgworker", "worker", "--processes", "2", "--backend", "cpu",
                                 "--server", g.address, "--root", str(tmp_path), "--drain-timeout", "5"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        try:
            yield proc, log
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_supervisor_restarts_a_crashing_child_with_growing_delays(
    supervisor: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log = supervisor
    children = wait_for(lambda: k if len(k := worker_children(proc.pid)) == 2 else None, 60, 0.1, "2 children")
    steady, victim = sorted(children)
    gaps: list[float] = []
    for _ in range(3):
        os.kill(victim, signal.SIGKILL)  # a crash (OOM kill, segfault): no goodbye
        killed_at = time.monotonic()
        gone = {steady, victim}
        new = wait_for(lambda: worker_children(proc.pid) - gone, 60, 0.02, "the replacement child")  # noqa: B023
        gaps.append(time.monotonic() - killed_at)
        (victim,) = new
    planned = [float(d) for d in re.findall(r"restarting it in ([0-9.]+) s", log.read_text())]
    assert planned == [RESTART_FIRST_S, 2 * RESTART_FIRST_S, 4 * RESTART_FIRST_S], log.read_text()[-3000:]
    # Each replacement waited at least its planned delay (a lower bound: no flaky upper bound under load).
    assert all(gap >= delay for gap, delay in zip(gaps, planned, strict=True)), (gaps, planned)
    assert steady in worker_children(proc.pid), "the other child was never touched"
    assert proc.poll() is None


@pytest.mark.parametrize("env", [{}, {"IMGWORKER_METRICS_PORT": "not-a-port"}])
def test_health_without_a_port_is_unhealthy_not_exit_2(env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMGWORKER_")}
    probe = subprocess.run([sys.executable, "-m", "imgworker", "health"], capture_output=True, text=True,
                           timeout=60, cwd=REPO, env={**clean, **env})
    assert probe.returncode == 1, (probe.returncode, probe.stderr)
    assert "give --port or --url" in probe.stderr and "Traceback" not in probe.stderr
