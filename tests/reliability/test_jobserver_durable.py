"""The durable job server: gearmand with its sqlite queue (imgworker.testing.gearmand's default) SIGKILLed with
background jobs queued and one running, then restarted: every job completes and every output is a whole image.
The job that was running when gearmand died finished on its worker during the outage and is replayed after the restart
(at-least-once delivery): the replay rewrites identical bytes, atomically. With gearmand's in-memory queue the
same crash loses the queued jobs, which is what the resubmission policy (docs/reliability.md) is for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyvips
from support.corpus import photo
from support.fixtures_reliability import (
    NamedWorker,
    fixed_port_gearmand,
    function_status,
    make_tiny_image,
    run_in_thread,
    wait_for,
)

from imgworker import Client
from imgworker.client import default_unique
from imgworker.core.errors import Unavailable
from imgworker.testing.gearmand import Gearmand

QUEUED = 20
# An upscale that takes a few seconds on one core: the window in which gearmand is killed.
SLOW = {"width": 3000, "height": 3000, "fit": "fill", "format": "jpeg", "quality": 80}


def _jobs(tmp_path: Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    root = tmp_path / "root"
    for i in range(4):
        make_tiny_image(root / "in" / f"{i}.png", seed=i)
    (root / "out").mkdir(parents=True)
    slow = {"src": photo("baseline").as_uri(), "dst": (root / "out" / "slow.jpg").as_uri(), **SLOW}
    small = [{"src": (root / "in" / f"{i % 4}.png").as_uri(), "dst": (root / "out" / f"{i}.webp").as_uri(),
              "width": 32} for i in range(QUEUED)]
    return root, slow, small


def _dst(job: dict[str, Any]) -> Path:
    return Path(job["dst"].removeprefix("file://"))


def _crash_with_work_in_flight(server: Gearmand, worker_factory: Callable[..., NamedWorker],
                               tmp_path: Path) -> tuple[NamedWorker, dict[str, Any], list[dict[str, Any]]]:
    """One worker (one job at a time) runs the slow job while QUEUED more wait; then gearmand is SIGKILLed and
    the worker is left to finish the slow job on its own."""
    root, slow, small = _jobs(tmp_path)
    w = worker_factory([server.address], [root, photo("baseline").parent]).wait_ready()
    with Client([server.address]) as client:
        client.submit_background("resize", slow, unique=default_unique(slow))
        wait_for(lambda: getattr(function_status(server.address, "resize"), "running", 0) == 1, 30, 0.02,
                 "the slow job to run")
        for job in small:
            client.submit_background("resize", job, unique=default_unique(job))
    st = function_status(server.address, "resize")
    assert st is not None and (st.queued, st.running) == (QUEUED + 1, 1), st  # gearmand counts running as queued
    assert not _dst(slow).exists(), "the slow job must still be running when gearmand dies"
    server.kill()
    wait_for(lambda: w.completed_lines("slow.jpg"), 120, 0.1, "the worker to finish the slow job offline")
    return w, slow, small


def test_sigkill_with_queued_and_running_jobs_loses_nothing_and_a_replay_rewrites_identical_bytes(
    worker_factory: Callable[..., NamedWorker], tmp_path: Path
) -> None:
    with fixed_port_gearmand() as server:
        assert server.queue_file is not None
        w, slow, small = _crash_with_work_in_flight(server, worker_factory, tmp_path)
        first = _dst(slow).read_bytes()
        first_inode = os.stat(_dst(slow)).st_ino
        assert not any(_dst(j).exists() for j in small)
        server.start()  # same port, same sqlite file: the queue is replayed
        wait_for(lambda: all(_dst(j).exists() for j in small), 120, 0.1, "every queued job to complete")
        # The slow job was still in the queue when gearmand died (its WORK_COMPLETE never arrived): it runs again.
        wait_for(lambda: len(w.completed_lines("slow.jpg")) == 2, 120, 0.1, "the replay of the slow job")
        wait_for(lambda: (st := function_status(server.address, "resize")) is not None
                 and (st.queued, st.running) == (0, 0), 30, 0.1, "an empty queue")
    assert _dst(slow).read_bytes() == first, "a replay must rewrite identical bytes"
    assert os.stat(_dst(slow)).st_ino != first_inode, "the replay replaced the file (atomic rename), not patched it"
    for job in small:
        image = pyvips.Image.new_from_file(str(_dst(job)), fail_on="warning")
        assert image.width == 32
        image.avg()  # every pixel decodes: whole, not truncated
    assert len(w.completed_lines("/out/")) == QUEUED + 2
    assert all("outcome=ok" in line for line in w.completed_lines("/out/"))
    assert w.alive()


def test_in_memory_queue_loses_the_same_jobs_so_clients_must_resubmit(
    worker_factory: Callable[..., NamedWorker], tmp_path: Path
) -> None:
    """The control: same crash, ``persistent=False`` (gearmand's own default). The queued jobs are gone; the
    resubmission policy (resubmit by unique id until the destination exists) brings them back."""
    with fixed_port_gearmand(persistent=False) as server:
        assert server.queue_file is None
        w, _slow, small = _crash_with_work_in_flight(server, worker_factory, tmp_path)
        server.start()
        w.wait_ready(timeout=30)
        st = function_status(server.address, "resize")
        assert st is None or (st.queued, st.running) == (0, 0), "the in-memory queue died with the process"
        with Client([server.address]) as client:
            missing = [j for j in small if not _dst(j).exists()]
            assert len(missing) == QUEUED
            for job in missing:
                client.submit_background("resize", job, unique=default_unique(job))
        wait_for(lambda: all(_dst(j).exists() for j in small), 120, 0.1, "resubmitted jobs to complete")


def test_foreground_jobs_are_never_written_to_the_queue() -> None:
    """Only background jobs go to sqlite (a foreground job's client is gone after a crash anyway), so the
    durable queue costs foreground traffic nothing."""
    import sqlite3

    with Gearmand() as server:
        # Exception: the timeout, as nobody serves it.
        t, done = run_in_thread([server.address], "nobody_serves_this", {"src": "file:///x", "dst": "file:///y"},
                                timeout=30, catch=Exception)
        wait_for(lambda: getattr(function_status(server.address, "nobody_serves_this"), "queued", 0) == 1, 20)
        assert server.queue_file is not None
        with sqlite3.connect(server.queue_file) as db:
            assert db.execute("select count(*) from gearman_queue").fetchone() == (0,)
        server.stop()
        t.join(30)
        # The job was never run, so its client heard the server go, not a result: one UNAVAILABLE, retryable.
        assert len(done) == 1 and isinstance(done[0], Unavailable), done
        assert done[0].retryable and "connection lost" in done[0].message


def test_benchmark_runs_and_keeps_every_job(tmp_path: Path) -> None:
    """benchmarks/service/jobserver.py in miniature: its three modes run and both sqlite ones keep the queue."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/service/jobserver.py", "--jobs", "50", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["queue"] for r in rows] == ["in-memory", "sqlite-delete", "sqlite-wal"]
    assert all(r["drained"] == 51 and r["submits_per_s"] > 0 for r in rows)
    assert all(r["queued_after_sigkill"] == 51 for r in rows[1:])
