"""``imgworker failed list`` / ``retry`` against records a real worker wrote (real gearmand, real worker, the
real CLI), issue 26 items 4 and 11:

- a ``src`` holding a newline, ESC/OSC/BEL sequences and U+202E used to reach the operator's terminal raw and
  forge a record line; now each record is one line with those characters escaped;
- two ``failed retry`` at once resubmitted the same records twice (78 extra runs, 61 duplicate records); now
  the second finds the prefix locked and resubmits nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.corpus import photo
from support.fixtures_reliability import wait_for
from support.fixtures_s3 import S3_ENV, MotoServer
from support.workerproc import REPO, WorkerProc

from imgworker.commands.failed import open_records
from imgworker.core.errors import Unavailable
from imgworker.features.failed_jobs import FailedJobs
from imgworker.features.retry_lock import LOCK_NAME, retry_lock
from imgworker.gearman import SyncClient, status
from imgworker.stores import FileStore, Stores
from imgworker.testing.gearmand import Gearmand

HOSTILE = "file:///in/a.jpg\nFORGED\tline\x1b[31mred\x1b]0;owned\x07\u202egpj.exe\u2066\x9b"


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "imgworker", "failed", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def idle(server: str) -> bool:
    rows = asyncio.run(status(server, timeout=5.0))
    return all(r.queued == 0 and r.running == 0 for r in rows if r.name == "resize")


def wait_records(failed: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(list(failed.glob("*.json"))) < n:
        assert time.monotonic() < deadline, f"{len(list(failed.glob('*.json')))} of {n} records"
        time.sleep(0.05)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Gearmand, WorkerProc, Path]]:
    for d in ("in", "out", "failed"):
        (tmp_path / d).mkdir()
    with Gearmand() as g:
        worker = WorkerProc([g.address], [tmp_path], "--failed-jobs", (tmp_path / "failed").as_uri(),
                            "--retry-backoff", "0.05", "--retries", "0")
        with worker:
            yield g, worker, tmp_path


def test_failed_list_prints_job_text_escaped_one_line_per_record(env: tuple[Gearmand, WorkerProc, Path]) -> None:
    g, _worker, root = env
    with SyncClient([g.address]) as client:
        body = json.dumps({"src": HOSTILE, "dst": (root / "out" / "x.jpg").as_uri(), "width": 8}).encode()
        result = json.loads(client.submit("resize", body, timeout=60))
    assert result["error"]["code"] == "BAD_REQUEST"
    wait_records(root / "failed", 1)
    out, _err = cli("list", (root / "failed").as_uri()).communicate(timeout=60)
    lines = out.splitlines()
    assert len(lines) == 1, out  # the newline in src forged a second line before
    for char in "\x1b\x07\u202e\u2066\x9b\r":
        assert char not in out, repr(char)
    assert "\\nFORGED\\tline\\x1b[31mred\\x1b]0;owned\\x07\\u202egpj.exe" in lines[0], lines[0]
    raw = json.loads(cli("list", (root / "failed").as_uri(), "--json").communicate(timeout=60)[0])
    assert raw["payload"]["src"] == HOSTILE  # the record itself keeps the text as it was (JSON-escaped)


def test_two_retries_at_once_run_each_job_once(env: tuple[Gearmand, WorkerProc, Path]) -> None:
    g, worker, root = env
    n = 40
    late = root / "in" / "late.jpg"
    with SyncClient([g.address]) as client:
        for i in range(n):
            body = json.dumps({"src": late.as_uri(), "dst": (root / "out" / f"{i}.jpg").as_uri(), "width": 8})
            client.submit_background("resize", body.encode(), unique=f"late-{i}")
    wait_records(root / "failed", n)
    shutil.copy(photo("dragonfly"), late)
    runs_before = worker.log().count("outcome=ok")
    both = [cli("retry", (root / "failed").as_uri(), "--server", g.address) for _ in range(2)]
    outcomes = [p.communicate(timeout=120) for p in both]
    codes = sorted(p.returncode for p in both)
    # Both CLIs have exited, so every resubmission (duplicates included) is in gearmand: once it holds no job
    # for resize, every one has run (its log line is written before WORK_COMPLETE). 60 s: a ceiling for 80 runs.
    wait_for(lambda: idle(g.address), 60, 0.1, "gearmand to have run every resubmitted job")
    runs = worker.log().count("outcome=ok") - runs_before
    assert runs == n, (runs, outcomes)
    assert list((root / "failed").glob("*.json")) == []
    # Either the second found the lock (exit 1, saying so) or it started after the first had finished (0 records).
    resubmitted = sum(o[0].count("resubmitted resize") for o in outcomes)
    assert resubmitted == n, outcomes
    assert codes == [0, 0] or any("another `imgworker failed retry` is running" in o[1] for o in outcomes), outcomes


def test_a_retry_while_another_holds_the_prefix_resubmits_nothing(env: tuple[Gearmand, WorkerProc, Path]) -> None:
    """The deterministic form of the race above: another retry (this test, through the same lock) holds the
    prefix; the CLI says so, exits 1, resubmits nothing and leaves the records. Before: it resubmitted them all."""
    g, _worker, root = env
    with SyncClient([g.address]) as client:
        for i in range(3):
            body = json.dumps({"src": (root / "in" / "gone.jpg").as_uri(), "dst": (root / "out" / f"g{i}.jpg").as_uri(),
                               "width": 8})
            client.submit_background("resize", body.encode(), unique=f"gone-{i}")
    wait_records(root / "failed", 3)
    records = FailedJobs(Stores({"file": FileStore([str(root / "failed")])}), (root / "failed").as_uri())
    with retry_lock(records):
        proc = cli("retry", (root / "failed").as_uri(), "--server", g.address)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "another `imgworker failed retry` is running" in err, (out, err)
    assert "resubmitted" not in out
    assert len(list((root / "failed").glob("*.json"))) == 3
    # Released: the next retry runs (the source is still missing, so each job fails again: new records).
    proc = cli("retry", (root / "failed").as_uri(), "--server", g.address)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.count("resubmitted resize") == 3, (out, err)


def test_the_s3_retry_lock_admits_one_holder(moto_s3: MotoServer, s3_client: Any, s3_bucket: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """s3:// prefixes: the lock is an object created with If-None-Match (moto's S3 server): a second holder is
    refused while the first holds it, the lock goes at release, and one left over an hour by a dead run is replaced."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    args = argparse.Namespace(url=f"s3://{s3_bucket}/failed", s3_endpoint=moto_s3.endpoint)
    first, second = open_records(args), open_records(args)
    with retry_lock(first):
        with pytest.raises(Unavailable, match="another `imgworker failed retry` is running"), retry_lock(second):
            pass
        assert s3_client.head_object(Bucket=s3_bucket, Key=f"failed/{LOCK_NAME}")
    with retry_lock(second):  # released: taken again
        pass
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="failed/")
    s3_client.put_object(Bucket=s3_bucket, Key=f"failed/{LOCK_NAME}", Body=b"{}")
    monkeypatch.setattr("imgworker.features.retry_lock.STALE_S", 0.0)
    with retry_lock(first):  # a stale lock is replaced
        pass
