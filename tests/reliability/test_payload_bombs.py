"""Issue 26 item 2: payload bombs through a real gearmand and a real worker process.

Before: a 60 MiB payload (``{"src":…,"a":[{},{},…]}``, under gearmand's packet limit) took the worker to 4,521 MiB
and 43 s, parsed on the event loop (``/healthz`` 503 meanwhile); 8 MiB: 400-650 MiB and ~19 s. Now a job
assignment whose size says its payload is over the limit (64 KiB) is skipped unread by the Gearman connection
(its body never becomes a string) and answered ``BAD_REQUEST`` ("payload is N bytes; the limit is 65536"), the
documented error (docs/contract.md); a payload a little over the limit is refused on its length, never parsed.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.fixtures_hostile import code, job, vm_hwm_kb
from support.fixtures_reliability import NamedWorker, make_tiny_image

from imgworker.core.limits import Limits
from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand
from imgworker.testing.ports import reserve_port

LIMIT = Limits().max_payload_bytes
# A worker needs no memory for a payload it refuses unread; 96 MiB covers the Python heap's churn around a
# job's answer and the receive buffer (64 KiB). Before the fix the 8 MiB payload alone added 300-550 MiB.
CEILING_KB = 96 * 1024


def bomb(size: int) -> bytes:
    head, tail = b'{"src":"file:///x.jpg","dst":"file:///y.jpg","width":8,"id":"bomb","a":[', b"{}]}"
    return head + b"{}," * ((size - len(head) - len(tail)) // 3) + tail


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # no answer in 3 s: a kubelet probe fails too


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


@pytest.mark.parametrize("size, function", [(60 * 1024 * 1024, "resize"), (8 * 1024 * 1024, "resize"),
                                            (8 * 1024 * 1024, "info"), (LIMIT + 100, "resize")])
def test_payload_bomb_is_refused_unread_with_bounded_memory_while_healthz_stays_200(
        server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path, size: int,
        function: str) -> None:
    root = tmp_path / "root"
    src = make_tiny_image(root / "in" / "small.png")
    port = reserve_port()  # held until the worker binds it
    w = worker_factory([server.address], [root], name=f"bomb-{size}",
                       extra=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]).wait_ready()
    warm = {"src": src.as_uri(), "dst": (root / "out" / "warm.png").as_uri(), "width": 8}
    assert code(job(server.address, warm)) == "ok"  # the heap of a worker that has run a job
    before_kb = vm_hwm_kb(w.pid)

    probes: list[int] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            probes.append(healthz(port))
            done.wait(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    payload = bomb(size)
    started = time.monotonic()
    with SyncClient([server.address]) as client:
        result = json.loads(client.submit(function, payload, timeout=120))
    elapsed = time.monotonic() - started
    done.set()
    prober.join(10)

    assert code(result) == "BAD_REQUEST", result
    assert result["error"]["message"].startswith(f"payload is {len(payload)} bytes; the limit is {LIMIT}"), result
    grown_kb = vm_hwm_kb(w.pid) - before_kb
    assert grown_kb < CEILING_KB, f"peak RSS grew {grown_kb} KiB for a {size}-byte payload ({elapsed:.1f} s)"
    assert probes and all(p == 200 for p in probes), probes
    # The worker keeps serving, on the same connection.
    assert code(job(server.address, {**warm, "dst": (root / "out" / "after.png").as_uri()})) == "ok"
    assert "connection lost" not in w.log() and "protocol error" not in w.log()
    print(f"{size} bytes to {function}: answered in {elapsed:.2f} s, peak RSS +{grown_kb} KiB")
