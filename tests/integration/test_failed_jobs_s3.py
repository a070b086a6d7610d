"""Worker retries of transient failures and failed-job records on s3://, with moto's real S3 server, a TCP
proxy that cuts the line to it, a real gearmand, real worker processes and the real ``imgworker failed`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.corpus import photo
from support.fixtures_reliability import wait_for
from support.fixtures_s3 import S3_ENV, CountingProxy, MotoServer, free_port, start_s3_worker, wait_for_workers
from support.workerproc import REPO, WorkerProc

from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand


@dataclass
class Env:
    gearmand: Gearmand
    proxy: CountingProxy
    flaky: WorkerProc  # reaches S3 through the proxy; records on file://
    bucket: str
    root: Path
    s3: Any
    moto: MotoServer
    client: SyncClient
    metrics_port: int

    def job(self, name: str) -> dict[str, Any]:
        return {"src": f"s3://{self.bucket}/in/{name}", "dst": f"s3://{self.bucket}/out/{name}", "width": 48}

    def exists(self, key: str) -> bool:
        return int(self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key).get("KeyCount", 0)) > 0

    def file_records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "failed").glob("*.json"))]


def wait_for_what(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return wait_for(check, timeout=timeout, what=what)


@pytest.fixture(scope="module")
def env(moto_s3: MotoServer, s3_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    bucket = f"failed-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("s3failed")
    (root / "failed").mkdir()
    proxy = CountingProxy(moto_s3.port)
    metrics_port = free_port()
    with Gearmand() as g:
        # One S3 attempt per request, so a cut line fails the job at once and the worker's own retries show.
        common = ("--s3-max-attempts", "1", "--s3-timeout", "3", "--processes", "1")
        flaky = start_s3_worker(g.address, proxy.endpoint, [bucket], root, *common, "--retries", "3",
                                "--retry-backoff", "0.5", "--failed-jobs", (root / "failed").as_uri(),
                                "--client-id", "flaky", "--metrics-port", str(metrics_port),
                                "--metrics-host", "127.0.0.1")
        wait_for_workers(g.address, "resize", 1)
        e = Env(g, proxy, flaky, bucket, root, s3_client, moto_s3, SyncClient([g.address]), metrics_port)
        try:
            yield e
        finally:
            e.client.close()
            flaky.stop(timeout=15)
            proxy.cut()


def put_photo(env: Env, name: str) -> None:
    env.s3.put_object(Bucket=env.bucket, Key=f"in/{name}", Body=photo("dragonfly").read_bytes())


def retries_logged(env: Env) -> int:
    return env.flaky.log().count(": retry ")


def scrape(env: Env) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{env.metrics_port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def retries_total(env: Env, text: str | None = None) -> float:
    """STORE_FAILED retries counted so far (other tests of this module add theirs: compare before and after)."""
    text = scrape(env) if text is None else text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "imgworker_job_retries_total" and s.labels.get("code") == "STORE_FAILED")


def finals_total(env: Env, text: str | None = None) -> float:
    """Jobs that ended STORE_FAILED so far (final outcomes only; other tests of this module add theirs)."""
    text = scrape(env) if text is None else text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "imgworker_jobs_total" and s.labels.get("outcome") == "STORE_FAILED")


def test_transient_failure_of_background_job_is_retried_until_it_succeeds(env: Env) -> None:
    put_photo(env, "a.jpg")
    before = retries_logged(env)
    env.proxy.cut()
    try:
        env.client.submit_background("resize", json.dumps(env.job("a.jpg")).encode(), unique="retry-a")
        wait_for_what(lambda: retries_logged(env) > before, "a first retry")
    finally:
        env.proxy.restore()
    wait_for_what(lambda: env.exists("out/a.jpg"), "the retried job's output")
    assert "STORE_FAILED: retry 1/3" in env.flaky.log()
    assert [r for r in env.file_records() if r["unique"] == "retry-a"] == []  # it succeeded in the end: no record


def test_background_job_is_recorded_once_retries_are_used_up(env: Env) -> None:
    put_photo(env, "b.jpg")
    retried_before, finals_before = retries_total(env), finals_total(env)
    env.proxy.cut()
    try:
        env.client.submit_background("resize", json.dumps(env.job("b.jpg")).encode(), unique="retry-b")
        recs = wait_for_what(lambda: [r for r in env.file_records() if r["unique"] == "retry-b"], "the record")
    finally:
        env.proxy.restore()
    (rec,) = recs
    assert rec["error"]["code"] == "STORE_FAILED" and rec["error"]["retryable"] is True
    assert rec["attempts"] == 4 and rec["background"] is True  # 1 + --retries 3
    assert "STORE_FAILED: retry 3/3" in env.flaky.log()
    assert not env.exists("out/b.jpg")
    text = scrape(env)
    assert retries_total(env, text) - retried_before == 3  # this job's three retried attempts
    # The job counts once, at its final outcome: its three retried attempts are in the retries counter only.
    assert finals_total(env, text) - finals_before == 1


def test_foreground_job_gets_the_first_answer_without_retries(env: Env) -> None:
    put_photo(env, "c.jpg")
    before = retries_logged(env)
    env.proxy.cut()
    try:
        result = json.loads(env.client.submit("resize", json.dumps(env.job("c.jpg")).encode(), timeout=60))
        recs = wait_for_what(lambda: [r for r in env.file_records() if r["payload"]["src"].endswith("/c.jpg")],
                          "the record")
    finally:
        env.proxy.restore()
    assert result["error"]["code"] == "STORE_FAILED" and result["error"]["retryable"] is True
    assert recs[0]["attempts"] == 1 and recs[0]["background"] is False
    assert retries_logged(env) == before


def test_records_on_s3_listed_and_retried_through_the_cli(env: Env) -> None:
    prefix = f"s3://{env.bucket}/failed"
    # A job server and worker of its own (S3 reached directly, records on s3://): the module's flaky worker keeps
    # serving the other tests, whatever order they run in.
    with Gearmand() as g:
        direct = start_s3_worker(g.address, env.moto.endpoint, [env.bucket], env.root,
                                 "--processes", "1", "--failed-jobs", prefix, "--client-id", "direct")
        client = SyncClient([g.address])
        try:
            wait_for_workers(g.address, "resize", 1)
            _records_listed_and_retried(env, g, client, prefix)
        finally:
            client.close()
            direct.stop(timeout=15)


def _records_listed_and_retried(env: Env, g: Gearmand, client: SyncClient, prefix: str) -> None:
    job = env.job("late.jpg")
    client.submit_background("resize", json.dumps({**job, "id": "u-9"}).encode(), unique="s3-late")
    keys = wait_for_what(lambda: [o["Key"] for o in env.s3.list_objects_v2(
        Bucket=env.bucket, Prefix="failed/").get("Contents", [])], "the record object")
    (key,) = keys
    head = env.s3.head_object(Bucket=env.bucket, Key=key)
    assert head["ContentType"] == "application/json"
    rec = json.loads(env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read())
    assert rec["unique"] == "s3-late" and rec["error"]["code"] == "SOURCE_NOT_FOUND" and rec["payload"]["id"] == "u-9"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        environ = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **S3_ENV,
                   "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        return subprocess.run([sys.executable, "-m", "imgworker", "failed", *args, "--s3-endpoint",
                               env.moto.endpoint], capture_output=True, text=True, timeout=60, env=environ)

    listed = cli("list", prefix)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert "SOURCE_NOT_FOUND" in line and "s3-late" in line and job["src"] in line
    put_photo(env, "late.jpg")
    retried = cli("retry", prefix, "--server", g.address)
    assert retried.returncode == 0, retried.stderr
    wait_for_what(lambda: env.exists("out/late.jpg"), "the resubmitted job's output")
    assert not env.exists("failed/")  # the record was removed once resubmitted, and no new one was written
    assert cli("list", prefix).stdout == ""
