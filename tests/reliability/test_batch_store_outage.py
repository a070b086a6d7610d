"""A batch through a short S3 outage (issue 26, item 9): moto's S3 server behind a proxy that cuts the line.

Before: each object job failed at once during the blip (foreground, so ``--retries`` never applied), the batch
answered ``ok`` with a ``complete`` manifest listing the failures, and failed-job records on the same store were
lost with it. Now: the batch retries transient object failures with backoff and rides the outage out; with no
retries left it says ``incomplete`` (result ``ok: false``, manifest ``complete: false``) and a resubmission redoes
only those objects; a failed-job record the store refuses goes to the worker's log instead, saying so.
(docs/storage.md, "Batches"; docs/reliability.md, "Failed-job records".)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.test_batch import jpeg
from support.fixtures_reliability import run_in_thread
from support.fixtures_s3 import TEST_SECRET, CountingProxy, MotoServer, start_s3_worker, wait_for_workers
from support.workerproc import WorkerProc

from imgworker import Client
from imgworker.core.errors import ImgworkerError
from imgworker.testing.gearmand import Gearmand

N = 150
OUTAGE_S = 3.0


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"blip-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=name)
    for i in range(N):
        s3_client.put_object(Bucket=name, Key=f"in/img{i:04d}.jpg", Body=jpeg(i, 64, 48))
    return name


@pytest.fixture
def outage(moto_s3: MotoServer, s3_proxy: CountingProxy, s3_client: Any, bucket: str, tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[tuple[Gearmand, WorkerProc, Any]]:
    """A worker with ``--retries request.param`` whose S3 goes through the proxy (records on the same store),
    and what the batch ended with when the store was cut for OUTAGE_S in its middle."""
    with Gearmand() as g:
        worker = start_s3_worker(g.address, s3_proxy.endpoint, [bucket], tmp_path, "--failed-jobs",
                                 f"s3://{bucket}/failed/", "--retries", str(request.param), "--retry-backoff", "1")
        try:
            wait_for_workers(g.address, "batch", 1)
            wait_for_workers(g.address, "resize", 1)
            yield g, worker, _run_batch_with_outage(g, s3_proxy, s3_client, bucket)
        finally:
            worker.stop(timeout=15)


def _manifest(s3: Any, bucket: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key="out/manifest.json")["Body"].read())
    return out


def _run_batch_with_outage(g: Gearmand, proxy: CountingProxy, s3: Any, bucket: str) -> Any:
    """The batch in the foreground on a thread; the store cut for OUTAGE_S once 10 objects are done."""
    payload = {"src": f"s3://{bucket}/in/", "dst": f"s3://{bucket}/out/", "width": 32, "in_flight": 8}
    t, outcome = run_in_thread([g.address], "batch", payload, timeout=300, catch=ImgworkerError)
    deadline = time.monotonic() + 60
    # The map has started: outputs are appearing (counted on the server itself, not through the proxy).
    while time.monotonic() < deadline and not outcome:
        if s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("KeyCount", 0) >= 10:
            break
        time.sleep(0.05)
    assert not outcome, f"the batch ended before the outage: {outcome}"
    proxy.cut()
    time.sleep(OUTAGE_S)
    proxy.restore()
    t.join(240)
    assert outcome, "the batch did not end"
    return outcome[0]


@pytest.mark.parametrize("outage", [3], indirect=True)
def test_a_batch_rides_out_a_short_store_outage_and_records_survive_it(
    outage: tuple[Gearmand, WorkerProc, Any], s3_client: Any, bucket: str
) -> None:
    _, worker, result = outage
    assert not isinstance(result, Exception), result
    assert (result.ok, result.status, result.succeeded, result.failed) == (True, "succeeded", N, 0), result.raw
    manifest = _manifest(s3_client, bucket)
    assert manifest["complete"] and manifest["status"] == "succeeded" and manifest["succeeded"] == N
    retried = [e for e in manifest["objects"] if e.get("tries", 1) > 1]
    assert retried, "no object was retried: the outage missed the batch"
    # The object jobs that failed during the outage could not write their records to the same store:
    # each went to the log instead, whole, saying so; no secret in it.
    log = worker.log()
    logged = [ln for ln in log.splitlines() if "logged here instead: failed-job record" in ln]
    assert logged, log[-3000:]
    assert all('"code":"STORE_FAILED"' in ln and f"s3://{bucket}/in/" in ln for ln in logged), logged[:3]
    assert TEST_SECRET not in log


@pytest.mark.parametrize("outage", [0], indirect=True)
def test_a_batch_with_transient_failures_left_says_incomplete_and_a_resubmission_finishes_it(
    outage: tuple[Gearmand, WorkerProc, Any], s3_client: Any, bucket: str
) -> None:
    g, worker, result = outage
    assert isinstance(result, ImgworkerError), result
    assert result.code == "UNAVAILABLE" and result.retryable and "batch incomplete" in result.message, result
    manifest = _manifest(s3_client, bucket)
    assert not manifest["complete"] and manifest["status"] == "incomplete", {k: manifest[k] for k in manifest
                                                                             if k != "objects"}
    assert manifest["transient"] > 0 and manifest["errors"].get("STORE_FAILED", 0) == manifest["failed"]
    # The store is back: the same batch again redoes only what failed.
    payload = {"src": f"s3://{bucket}/in/", "dst": f"s3://{bucket}/out/", "width": 32, "in_flight": 8}
    runs_before = worker.log().count("job function=resize")
    with Client([g.address], timeout=300) as client:
        again = client.run("batch", payload, unique="again")
    assert (again.status, again.succeeded, again.failed, again.attempt) == ("succeeded", N, 0, 2), again.raw
    # Each failed object runs again, except one whose write landed before the line was cut (its answer was
    # lost): its output exists, so the resubmission skips it.
    skipped = int(again.raw.get("skipped", 0))
    assert worker.log().count("job function=resize") - runs_before + skipped == manifest["failed"]
    assert _manifest(s3_client, bucket)["complete"]
