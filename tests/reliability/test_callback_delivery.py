"""Callbacks against real HTTP receivers, a real gearmand and real worker processes (issue 26 items 1 and 7).

- Item 1: a SIGTERM while a callback sits in its backoff (receiver answering 500) used to lose it: the worker
  exited 0, "stopped cleanly", with the callback neither delivered, recorded nor logged. Now it is recorded
  with its tries left, and ``imgworker failed retry`` later delivers it to the receiver, now answering 200.
- Item 7: receivers that drip their answer a byte at a time held every sender thread (``--callback-timeout``
  bounded each read, not the attempt): 0 of 8 healthy callbacks went out in 60 s. Now an attempt ends at its
  total deadline, a delivery in backoff holds no thread, and one host gets at most ``PER_HOST`` at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.corpus import photo
from support.receivers import Receiver
from support.workerproc import REPO, WorkerProc

from imgworker.features.callbacks import PER_HOST
from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand

SECRET = "cb-delivery-secret"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for d in ("out", "failed"):
        (tmp_path / d).mkdir()
    return tmp_path


def records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "failed").glob("*.json"))]


def worker(g: Gearmand, root: Path, allow: list[Receiver], *args: str) -> WorkerProc:
    flags = ["--failed-jobs", (root / "failed").as_uri(), *args]
    for r in allow:
        flags += ["--callback-allow", f"{r.host}:{r.port}"]
    return WorkerProc([g.address], [root, photo("dragonfly").parent], *flags,
                      env={"IMGWORKER_CALLBACK_SECRET": SECRET})


def payload(root: Path, name: str, callback: str) -> bytes:
    return json.dumps({"src": photo("dragonfly").as_uri(), "dst": (root / "out" / f"{name}.jpg").as_uri(),
                       "width": 32, "id": name, "callback": callback}).encode()


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")



def test_sigterm_during_callback_backoff_records_it_and_failed_retry_delivers_it(
    root: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver("status", status=500).start()
    receivers.append(receiver)
    with Gearmand() as g:
        # Backoff 0.5, 1, 2, 4 s between the 6 tries: after the 3rd 500 the callback waits 2 s for its 4th.
        w = worker(g, root, [receiver], "--callback-tries", "6", "--retry-backoff", "1").start()
        try:
            with SyncClient([g.address]) as client:
                job = payload(root, "cb-shut", receiver.url("/hook"))
                result = json.loads(client.submit("resize", job, timeout=60))
            assert result["ok"] is True
            receiver.for_path("/hook", n=3, timeout=30)
            w.signal(signal.SIGTERM)
            assert w.wait(30) == 0
        finally:
            w.kill()
        log = w.log()
        assert len(receiver.requests) == 3  # nothing was delivered: the receiver answered 500 to each
        (rec,) = records(root)
        assert rec["kind"] == "callback" and rec["payload"]["id"] == "cb-shut", rec
        assert rec["callback"]["tries"] == 3 and rec["callback"]["tries_left"] == 3, rec
        assert "worker stopped" in rec["callback"]["reason"], rec
        assert "gave up after 3 attempt(s), 3 left" in log, log[-2000:]

        # The receiver is back; a worker runs again; the operator retries the record.
        receiver.status = 200
        w2 = worker(g, root, [receiver]).start()
        with w2:
            out = subprocess.run(
                [sys.executable, "-m", "imgworker", "failed", "retry", (root / "failed").as_uri(),
                 "--server", g.address], capture_output=True, text=True, timeout=60, cwd=REPO,
                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            )
            assert out.returncode == 0, out.stderr
            (*_, last) = receiver.for_path("/hook", n=4, timeout=30)
            body = json.loads(last["body"])
            assert body["ok"] is True and body["id"] == "cb-shut"
            assert records(root) == []  # retried: removed; delivered: nothing new


def test_dripping_receivers_cannot_starve_healthy_callbacks(root: Path, receivers: list[Receiver]) -> None:
    drips = [Receiver("drip", drip_s=0.2).start() for _ in range(3)]
    healthy = Receiver("ok").start()
    receivers.extend([*drips, healthy])
    timeout_s = 1.0
    with Gearmand() as g:
        w = worker(g, root, [*drips, healthy], "--callback-timeout", str(timeout_s), "--callback-tries", "3",
                   "--retry-backoff", "0.2", "--concurrency", "2")
        with w.start(), SyncClient([g.address]) as client:
            # Six callbacks to one dripping host and one to each other: more than all the sender threads.
            slow = [drips[0]] * 6 + drips[1:]
            for i, r in enumerate(slow):
                client.submit_background("resize", payload(root, f"slow{i}", r.url(f"/slow{i}")))
            wait_until(lambda: sum(len(r.requests) for r in drips) >= 4, 30, "the dripping receivers are busy")
            for i in range(8):
                job = payload(root, f"ok{i}", healthy.url(f"/ok{i}"))
                assert json.loads(client.submit("resize", job, timeout=60))["ok"]
            # Every healthy callback arrives while the dripping receivers still drip (they never stop by themselves).
            wait_until(lambda: all(any(q["path"] == f"/ok{i}" for q in healthy.requests) for i in range(8)), 30,
                       "the 8 healthy callbacks delivered")
            assert not drips[0].release.is_set()
            # Each dripping attempt was cut at its deadline (+ the receiver's next write noticing), never left open.
            wait_until(lambda: len(drips[0].drips) >= 2, 30, "dripping attempts ended")
            assert max(b - a for a, b in drips[0].drips) < timeout_s + 2, drips[0].drips
            # One host never took more than PER_HOST threads at once.
            assert drips[0].most_at_once(slack=0.3) <= PER_HOST, drips[0].drips
            # The dripping callbacks end given up and recorded, each after its tries.
            wait_until(lambda: len([r for r in records(root) if r["kind"] == "callback"]) == len(slow), 60,
                       f"the dripping callbacks recorded: {records(root)} {w.log()[-3000:]}")
            reasons = {r["callback"]["reason"] for r in records(root)}
            assert all("deadline" in reason for reason in reasons), reasons
