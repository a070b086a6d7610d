"""Failed-job records on file:// with a real gearmand and a real worker process, and ``imgworker failed list``
/ ``retry`` driven through the real CLI; plus the job server telling background from foreground jobs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.corpus import photo
from support.fixtures_gearman import run_async
from support.workerproc import REPO, WorkerProc

from imgworker.features.failed_jobs import redact_payload
from imgworker.gearman import Client, Job, SyncClient, Worker
from imgworker.testing.gearmand import Gearmand

SECRET = "s3cr3tPASSWORDxyz"


@dataclass
class Env:
    gearmand: Gearmand
    worker: WorkerProc
    root: Path
    client: SyncClient

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.failed.glob("*.json"))]

    def wait_records(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.records()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"{n} record(s) not written in {timeout} s:\n{self.worker.log()[-2000:]}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imgworker", "failed", *args], capture_output=True, text=True,
                              timeout=60, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "root"
    for d in ("in", "out", "failed"):
        (root / d).mkdir(parents=True)
    with Gearmand() as g:
        worker = WorkerProc([g.address], [root], "--failed-jobs", (root / "failed").as_uri(),
                            "--retry-backoff", "0.05")
        with worker, SyncClient([g.address]) as client:
            yield Env(g, worker, root, client)


def test_background_failure_writes_one_redacted_record(env: Env) -> None:
    src = (env.root / "in" / "missing.jpg").as_uri()
    payload = {"src": src, "dst": (env.root / "out" / "a.jpg").as_uri(), "width": 32, "id": "upload-1",
               "notify": f"https://hooks.example/x?token={SECRET}"}
    env.client.submit_background("resize", json.dumps(payload).encode(), unique="bg-missing-1")
    (rec,) = env.wait_records(1)
    assert rec["function"] == "resize" and rec["unique"] == "bg-missing-1" and rec["kind"] == "job"
    assert rec["error"]["code"] == "SOURCE_NOT_FOUND" and rec["error"]["retryable"] is False
    assert rec["attempts"] == 1 and rec["background"] is True  # not retryable: never run twice
    assert rec["payload"]["src"] == src and rec["payload"]["id"] == "upload-1"
    assert rec["payload"]["notify"] == "https://hooks.example/x?token=***"
    assert time.strptime(rec["time"], "%Y-%m-%dT%H:%M:%SZ")
    raw = b"".join(p.read_bytes() for p in env.failed.iterdir())
    assert SECRET.encode() not in raw


def test_foreground_failure_is_answered_and_recorded(env: Env) -> None:
    payload = {"src": "s3://AKIAEXAMPLE:" + SECRET + "@bucket/k.jpg", "dst": (env.root / "out" / "b.jpg").as_uri(),
               "width": 32, "api_key": SECRET}
    result = json.loads(env.client.submit("resize", json.dumps(payload).encode(), timeout=60))
    assert result["ok"] is False and result["error"]["code"] == "BAD_REQUEST"  # unknown key api_key
    (rec,) = env.wait_records(1)
    assert rec["background"] is False and rec["attempts"] == 1
    assert rec["payload"]["api_key"] == "***" and rec["payload"]["src"] == "s3://***@bucket/k.jpg"
    assert SECRET not in json.dumps(rec) and SECRET not in env.worker.log()


def test_cli_lists_and_retries_records_until_the_job_succeeds(env: Env) -> None:
    late = env.root / "in" / "late.jpg"
    dsts = []
    for i, code_src in enumerate([late.as_uri(), late.as_uri(), "not a url"]):
        dst = env.root / "out" / f"late{i}.jpg"
        dsts.append(dst)
        payload = {"src": code_src, "dst": dst.as_uri(), "width": 40, "id": i}
        env.client.submit_background("resize", json.dumps(payload).encode(), unique=f"late-{i}")
    env.wait_records(3)
    url = env.failed.as_uri()

    listed = env.cli("list", url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3
    assert sum("SOURCE_NOT_FOUND" in line for line in lines) == 2 and any("late-2" in line for line in lines)
    as_json = [json.loads(line) for line in env.cli("list", url, "--json").stdout.splitlines()]
    assert sorted(r["unique"] for r in as_json) == ["late-0", "late-1", "late-2"]
    only = env.cli("list", url, "--code", "BAD_REQUEST").stdout.splitlines()
    assert len(only) == 1 and "late-2" in only[0]

    shutil.copy(photo("dragonfly"), late)  # what was missing is there now
    retried = env.cli("retry", url, "--server", env.gearmand.address, "--code", "SOURCE_NOT_FOUND")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.count("resubmitted resize") == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(d.exists() for d in dsts[:2]):
        time.sleep(0.05)
    assert all(d.stat().st_size > 0 for d in dsts[:2])  # the worker ran them again and they succeeded
    left = env.records()
    assert [r["unique"] for r in left] == ["late-2"]  # the BAD_REQUEST one was not selected, so it stays
    # The job's log line follows its file's rename by a moment (seen in a fresh-clone run): wait for it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "job function=resize outcome=ok" not in env.worker.log():
        time.sleep(0.05)
    assert "job function=resize outcome=ok" in env.worker.log()


def test_cli_refuses_a_bad_prefix(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "imgworker", "failed", "list", "http://x/failed"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode != 0 and "file:/// or s3://" in out.stderr
    out = subprocess.run([sys.executable, "-m", "imgworker", "failed", "list", (tmp_path / "none").as_uri()],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1 and "SOURCE_NOT_FOUND" in out.stderr


def test_worker_refuses_a_prefix_outside_its_roots(tmp_path: Path) -> None:
    worker = WorkerProc(["127.0.0.1:1"], [tmp_path], "--failed-jobs", "file:///etc/imgworker-failed")
    worker.start(wait_for=None)
    assert worker.wait(30) == 2
    assert "--failed-jobs file:///etc/imgworker-failed" in worker.log() and "outside the allowed roots" in worker.log()


def test_redaction_covers_nested_keys_and_non_json() -> None:
    got = redact_payload(json.dumps({"steps": [{"auth": {"user": "u"}, "url": f"https://a:{SECRET}@h/p"}],
                                     "X-Amz-Credential": "AKIA", "width": 3}).encode())
    assert got == {"steps": [{"auth": "***", "url": "https://***@h/p"}], "X-Amz-Credential": "***", "width": 3}
    assert redact_payload(f"not json s3://k:{SECRET}@b/x".encode()) == "not json s3://***@b/x"


def test_job_server_tells_background_from_foreground(gearmand: Gearmand) -> None:
    """gearman.Job.is_background asks gearmand (GET_STATUS_UNIQUE) how many clients wait on the job."""

    async def scenario() -> dict[str, bool | None]:
        seen: dict[str, bool | None] = {}
        gate = asyncio.Event()

        async def handler(job: Job) -> bytes:
            seen[job.data.decode()] = await job.is_background()
            await gate.wait()
            return b"done"

        w = Worker([gearmand.address], max_jobs=4)
        w.register("bgprobe", handler)
        task = asyncio.create_task(w.run())
        try:
            async with Client([gearmand.address]) as c:
                await c.submit_background("bgprobe", b"python-bg")
                fg = asyncio.create_task(c.submit("bgprobe", b"python-fg"))
                host, port = gearmand.address.split(":")
                subprocess.run(["gearman", "-h", host, "-p", port, "-b", "-f", "bgprobe", "cli-bg"], check=True,
                               timeout=30)
                deadline = asyncio.get_running_loop().time() + 20
                while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.02)
                gate.set()
                assert await fg == b"done"
        finally:
            await w.close()
            await task
        return seen

    assert run_async(scenario()) == {"python-bg": True, "python-fg": False, "cli-bg": True}
