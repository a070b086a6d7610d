"""Jobs over HTTP through gearmand's own HTTP protocol (``gearmand -r http --http-port N``), sent with real curl,
as docs/contract.md ("Over HTTP") shows: foreground, background (with the unique id the docs derive from the body),
errors, and a job for a function no worker serves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.corpus import photo
from support.fixtures_reliability import wait_for
from support.fixtures_s3 import free_port
from support.tools import needs_tool, require_tool
from support.workerproc import WorkerProc

from imgworker.gearman import status
from imgworker.testing.gearmand import Gearmand

pytestmark = needs_tool("curl", "apt-get install curl")


@dataclass
class Env:
    gearmand: Gearmand
    http_port: int
    root: Path

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "failed").rglob("*.json"))]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "root"
    for d in ("in", "out", "failed"):
        (root / d).mkdir(parents=True)
    shutil.copy(photo("baseline"), root / "in" / "k.jpg")
    http_port = free_port()
    g = Gearmand(extra_args=("--protocol=http", f"--http-port={http_port}"))
    with g, WorkerProc([g.start().address], [root], "--failed-jobs", (root / "failed").as_uri()):
        yield Env(g, http_port, root)


def curl(env: Env, function: str, body: str, *headers: str, max_time: float = 60) -> tuple[int, dict[str, str], str]:
    """``curl -X POST http://host:N/FUNCTION -d BODY``: curl's exit code, the response headers and body."""
    cmd = [require_tool("curl", "apt-get install curl"), "-sS", "-i", "--max-time", str(max_time), "-X", "POST",
           f"http://127.0.0.1:{env.http_port}/{function}", "-d", body]
    for header in headers:
        cmd += ["-H", header]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time + 10)
    head, _, content = proc.stdout.replace("\r\n", "\n").partition("\n\n")
    fields = dict(line.split(": ", 1) for line in head.splitlines()[1:] if ": " in line)
    return proc.returncode, fields, content


def derived_unique(body: str) -> str:
    """What docs/contract.md has a background sender put in X-Gearman-Unique: the body's SHA-256, 40 hex digits
    (`printf %s "$body" | sha256sum | cut -c1-40`)."""
    return hashlib.sha256(body.encode()).hexdigest()[:40]


def test_foreground_job_answers_with_the_result(env: Env) -> None:
    body = json.dumps({"src": (env.root / "in" / "k.jpg").as_uri(), "dst": (env.root / "out" / "k.webp").as_uri(),
                       "width": 256})
    rc, headers, content = curl(env, "resize", body)
    assert rc == 0 and headers["X-Gearman-Command"] == "WORK_COMPLETE", (rc, headers, content)
    result = json.loads(content)
    assert result["ok"] is True and result["width"] == 256 and result["format"] == "webp"
    assert (env.root / "out" / "k.webp").stat().st_size == result["bytes"]


def test_errors_are_the_job_contract(env: Env) -> None:
    missing = json.dumps({"src": (env.root / "in" / "nope.jpg").as_uri(), "dst": (env.root / "out" / "x.jpg").as_uri(),
                          "width": 64})
    rc, _, content = curl(env, "resize", missing)
    assert rc == 0
    error = json.loads(content)["error"]
    assert error["code"] == "SOURCE_NOT_FOUND" and error["retryable"] is False
    rc, _, content = curl(env, "resize", "width=64")  # a form, not JSON
    assert rc == 0 and json.loads(content)["error"]["code"] == "BAD_REQUEST"


def test_background_job_with_the_derived_unique_id(env: Env) -> None:
    body = json.dumps({"src": (env.root / "in" / "k.jpg").as_uri(), "dst": (env.root / "out" / "bg.jpg").as_uri(),
                       "width": 128})
    rc, headers, content = curl(env, "resize", body, "X-Gearman-Background: true",
                                f"X-Gearman-Unique: {derived_unique(body)}")
    assert rc == 0 and headers["X-Gearman-Command"] == "JOB_CREATED" and headers["X-Gearman-Job-Handle"]
    assert content == ""
    wait_for(lambda: (env.root / "out" / "bg.jpg").exists(), 30, what="the background output")
    # A failing one is a background job to the worker (retried when retryable) and its record says so.
    failing = json.dumps({"src": (env.root / "in" / "gone.jpg").as_uri(), "dst": (env.root / "out" / "g.jpg").as_uri(),
                          "width": 128})
    curl(env, "resize", failing, "X-Gearman-Background: true", f"X-Gearman-Unique: {derived_unique(failing)}")
    (record,) = wait_for(env.records, 30, what="a failed-job record")
    assert record["unique"] == derived_unique(failing) and record["background"] is True


def test_background_job_without_a_unique_id_cannot_be_told_background(env: Env) -> None:
    """Without X-Gearman-Unique gearmand hands the worker unique "-", which it cannot ask about: such a job is
    never retried and its record says background null (why docs/contract.md derives one)."""
    failing = json.dumps({"src": (env.root / "in" / "gone2.jpg").as_uri(),
                          "dst": (env.root / "out" / "g2.jpg").as_uri(), "width": 128})
    rc, headers, _ = curl(env, "resize", failing, "X-Gearman-Background: true")
    assert rc == 0 and headers["X-Gearman-Command"] == "JOB_CREATED"
    (record,) = wait_for(env.records, 30, what="a failed-job record")
    assert record["unique"] == "-" and record["background"] is None


def test_unserved_function_waits_until_the_client_gives_up(env: Env) -> None:
    """No worker serves resize_typo: gearmand holds the request (curl --max-time ends it, exit 28) and the job
    stays queued with no worker, which `gearadmin --status` (or `imgworker submit`'s hint) shows."""
    rc, _, _ = curl(env, "resize_typo", '{"src": "file:///x.jpg", "dst": "file:///y.jpg"}', max_time=2)
    assert rc == 28  # curl: operation timed out
    functions = {f.name: f for f in asyncio.run(status(env.gearmand.address))}
    assert functions["resize_typo"].available_workers == 0 and functions["resize"].available_workers == 1
