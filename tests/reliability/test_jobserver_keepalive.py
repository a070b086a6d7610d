"""TCP keepalive on imgworker's side of every job-server connection: a real worker process and a real client,
connected to a real gearmand, seen from the kernel (``ss -tnop``: the keepalive timer of each socket) and from
getsockopt. Without it a worker idle on a server whose node died, or a client waiting on one, waits forever."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.fixtures_reliability import NamedWorker, make_tiny_image, wait_for
from support.tools import require_tool

from imgworker import Client
from imgworker.gearman import connection
from imgworker.testing import gearmand as local
from imgworker.testing.gearmand import Gearmand


def keepalive_timers(pid: int, port: int, side: int = 3) -> list[float]:
    """Seconds left on the keepalive timer of each of ``pid``'s connections to ``port`` (inf: no timer);
    ``side=2``: connections accepted on ``port`` instead (the server's end)."""
    out = subprocess.run(["ss", "-Htnop", "state", "established"], capture_output=True, text=True, check=True).stdout
    left = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[side].endswith(f":{port}") and f"pid={pid}," in line:
            m = re.search(r"timer:\(keepalive,(\d+(?:\.\d+)?)(ms|sec|min)", line)
            left.append(float(m.group(1)) * {"ms": 0.001, "sec": 1, "min": 60}[m.group(2)] if m else float("inf"))
    return left


def test_the_timings_are_the_job_servers() -> None:
    assert (connection.KEEPALIVE_IDLE_S, connection.KEEPALIVE_INTERVAL_S, connection.KEEPALIVE_COUNT) == (
        local.KEEPALIVE_IDLE_S, local.KEEPALIVE_INTERVAL_S, local.KEEPALIVE_COUNT)


def test_enable_keepalive_sets_the_socket_options() -> None:
    with socket.socket() as s:
        connection.enable_keepalive(s)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == connection.KEEPALIVE_IDLE_S
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == connection.KEEPALIVE_INTERVAL_S
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == connection.KEEPALIVE_COUNT
        dead_after_ms = (connection.KEEPALIVE_IDLE_S + connection.KEEPALIVE_INTERVAL_S * connection.KEEPALIVE_COUNT)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == dead_after_ms * 1000


def test_worker_and_client_connections_keep_alive(worker_factory: Callable[..., NamedWorker], tmp_path: Path) -> None:
    require_tool("ss", "apt-get install iproute2")
    root = tmp_path / "root"
    make_tiny_image(root / "in" / "a.png")
    (root / "out").mkdir()
    with Gearmand() as server:
        w = worker_factory([server.address], [root], extra=["--batch-slots", "0"]).wait_ready()
        with Client([server.address], timeout=60) as client:
            assert client.run("resize", {"src": (root / "in" / "a.png").as_uri(),
                                         "dst": (root / "out" / "a.jpg").as_uri(), "width": 16}).ok
            assert server.proc is not None
            gearmand_pid = server.proc.pid

            def sample() -> tuple[list[float], list[float], list[float]]:
                return (keepalive_timers(os.getpid(), server.port), keepalive_timers(w.pid, server.port),
                        keepalive_timers(gearmand_pid, server.port, side=2))

            def alive(timers: list[float], idle: int, n: int = 1) -> bool:
                return len(timers) >= n and all(0 < t <= idle for t in timers)

            # A socket with unacknowledged data shows its retransmit timer instead: sample until all are idle.
            with contextlib.suppress(AssertionError):  # the asserts below say which side lacks it
                wait_for(lambda: (lambda m, t, g: alive(m, connection.KEEPALIVE_IDLE_S)
                                  and alive(t, connection.KEEPALIVE_IDLE_S)
                                  and alive(g, local.KEEPALIVE_IDLE_S, 2))(*sample()), 10, 0.2, "keepalive timers")
            mine, theirs, gearmand_side = sample()
    assert mine and all(0 < s <= connection.KEEPALIVE_IDLE_S for s in mine), mine
    assert theirs and all(0 < s <= connection.KEEPALIVE_IDLE_S for s in theirs), theirs
    # The local default gearmand keeps its ends alive too (--keepalive*, as the manifests).
    assert len(gearmand_side) >= 2 and all(0 < s <= local.KEEPALIVE_IDLE_S for s in gearmand_side), gearmand_side
