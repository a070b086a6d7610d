"""Each lifecycle hook alone (imgworker/worker/lifecycle/): a JobState in, what the hook promises out.

Real parts where a hook touches the world: a real FileStore for failed-job records, a real HTTP server for
callbacks, the real Prometheus registry for metrics. The completion notice needs a job server: it is proved in
tests/integration/test_lifecycle_live.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from imgworker.core.config import ConfigError, WorkerConfig
from imgworker.core.contract import read_payload
from imgworker.core.errors import BadRequest, ForbiddenPath
from imgworker.core.limits import Limits
from imgworker.features.callbacks import SIGNATURE_HEADER, CallbackPolicy
from imgworker.features.failed_jobs import FailedJobs
from imgworker.stores import FileStore, Stores
from imgworker.worker.lifecycle.admission import Admission
from imgworker.worker.lifecycle.callback import Callback
from imgworker.worker.lifecycle.completion_notice import CompletionNotice
from imgworker.worker.lifecycle.failed_record import FailedRecord, open_records
from imgworker.worker.lifecycle.hook import JobState
from imgworker.worker.lifecycle.job_log import JobLog
from imgworker.worker.lifecycle.job_metrics import JobMetrics
from imgworker.worker.lifecycle.retries import MAX_RETRY_DELAY_S, Retries, retry_delay, should_retry
from imgworker.worker.lifecycle.timing import Timing

STORE_FAILED = {"ok": False, "error": {"code": "STORE_FAILED", "message": "S3 down", "retryable": True}}
NOT_FOUND = {"ok": False, "error": {"code": "SOURCE_NOT_FOUND", "message": "no such file", "retryable": False}}
OK = {"ok": True, "backend": "cpu", "dst": "file:///out/a.jpg", "ms": {"read": 1.0, "decode": 2.0}}


class Asked:
    """The job server's answer to "is this job background?", counting the questions."""

    def __init__(self, answer: bool | None) -> None:
        self.answer, self.calls = answer, 0

    async def __call__(self) -> bool | None:
        self.calls += 1
        return self.answer


def state(fields: dict[str, Any], result: dict[str, Any] | None = None, *, function: str = "resize",
          background: bool | None = True, unique: str = "u-1") -> JobState:
    job = JobState(function, None, read_payload(json.dumps(fields).encode(), Limits()), unique, Asked(background))
    job.result = dict(result or {})
    return job


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- admission ----------------------------------------------------------------------------------------------


def test_admission_refuses_a_callback_off_the_allow_list_before_the_work() -> None:
    probes: list[int] = []
    hook = Admission(CallbackPolicy(["hooks.example.com"]), lambda: probes.append(1))
    hook.admit(state({"src": "file:///a.jpg"}))  # no callback: admitted
    hook.admit(state({"src": "file:///a.jpg", "callback": "https://hooks.example.com/done"}))
    with pytest.raises(ForbiddenPath, match="not on this worker's --callback-allow list"):
        hook.admit(state({"src": "file:///a.jpg", "callback": "https://evil.example.net/x"}))
    with pytest.raises(BadRequest, match="http:// or https://"):
        hook.admit(state({"src": "file:///a.jpg", "callback": "ftp://hooks.example.com/x"}))
    with pytest.raises(ForbiddenPath, match="callbacks are not enabled"):
        Admission(CallbackPolicy([]), lambda: None).admit(state({"callback": "https://hooks.example.com/"}))


def test_admission_probes_descriptors_after_a_failure_only() -> None:
    probes: list[str] = []
    hook = Admission(CallbackPolicy([]), lambda: probes.append("probe"))
    hook.after_work(state({}, OK))
    assert probes == []
    hook.after_work(state({}, {}))  # cancelled: no result, no probe
    assert probes == []
    hook.after_work(state({}, NOT_FOUND))
    assert probes == ["probe"]


# --- timing -------------------------------------------------------------------------------------------------


def test_timing_measures_from_the_jobs_arrival() -> None:
    job = state({}, OK)
    job.received = time.perf_counter() - 0.25  # arrived a quarter second ago (its decode and runs since)
    run(Timing().after_job(job))
    assert 0.25 <= job.elapsed < 5, job.elapsed


# --- logging ------------------------------------------------------------------------------------------------


def test_job_log_line_is_one_safe_line(caplog: pytest.LogCaptureFixture) -> None:
    job = state({"src": "s3://AKIA:hunter2@bucket/a\nb.jpg", "dst": "file:///out/a.jpg"}, STORE_FAILED)
    job.elapsed = 1.5
    with caplog.at_level(logging.INFO, logger="imgworker.worker.runner"):
        run(JobLog().after_job(job))
    [line] = [r.getMessage() for r in caplog.records if r.name == "imgworker.worker.runner"]
    assert line == ("job function=resize outcome=STORE_FAILED backend=- ms=1500.0 "
                    "src=s3://***@bucket/a\\nb.jpg dst=file:///out/a.jpg")
    caplog.clear()
    ok = state({"src": "file:///a.jpg", "dst": "file:///b.jpg"}, OK)
    with caplog.at_level(logging.INFO, logger="imgworker.worker.runner"):
        run(JobLog().after_job(ok))
    assert "outcome=ok backend=cpu ms=0.0 src=file:///a.jpg dst=file:///b.jpg" in caplog.text


# --- metrics ------------------------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_time_each_run_and_count_the_final_outcome_once() -> None:
    hook = JobMetrics("cpu")
    job = state({}, function="t_lifecycle_metrics")
    in_flight = sample("imgworker_jobs_in_flight")
    hook.before_job(job)
    assert sample("imgworker_jobs_in_flight") == in_flight + 1
    job.result = dict(STORE_FAILED)
    hook.after_run(job, 0.2)  # a run that failed, then a retry that worked
    job.result = dict(OK)
    hook.after_run(job, 0.1)
    hook.after_work(job)
    assert sample("imgworker_jobs_in_flight") == in_flight
    fn = "t_lifecycle_metrics"
    assert sample("imgworker_jobs_total", function=fn, backend="cpu", outcome="STORE_FAILED") == 0  # retried
    assert sample("imgworker_jobs_total", function=fn, backend="cpu", outcome="ok") == 1  # the final outcome
    assert sample("imgworker_job_duration_seconds_count", function=fn, backend="cpu") == 2
    assert sample("imgworker_job_duration_seconds_sum", function=fn, backend="cpu") == pytest.approx(0.3)
    assert sample("imgworker_job_stage_duration_seconds_count", function=fn, backend="cpu", stage="decode") == 1
    cancelled = state({}, function="t_lifecycle_metrics_cancelled")
    hook.before_job(cancelled)
    hook.after_work(cancelled)  # cancelled at shutdown: back to the job server, no outcome of its own
    assert sample("imgworker_jobs_in_flight") == in_flight
    assert sample("imgworker_jobs_total", function="t_lifecycle_metrics_cancelled", backend="cpu",
                  outcome="INTERNAL") == 0


# --- retries ------------------------------------------------------------------------------------------------


def test_retry_policy_transient_codes_only() -> None:
    assert should_retry(STORE_FAILED)
    assert should_retry({"ok": False, "error": {"code": "TIMEOUT", "retryable": True}})
    assert not should_retry({"ok": False, "error": {"code": "TIMEOUT", "retryable": False}})
    assert not should_retry(NOT_FOUND)
    assert not should_retry({"ok": False, "error": {"code": "INTERNAL", "retryable": True}})
    assert not should_retry(OK)
    for retry in range(1, 12):
        first = 1.0 * 2 ** (retry - 1)
        assert min(first, MAX_RETRY_DELAY_S) * 0.75 <= retry_delay(1.0, retry) <= min(first, MAX_RETRY_DELAY_S)


def test_retries_run_a_background_job_again_after_a_backoff(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, float]:
        hook = Retries(3, 0.2, asyncio.Event())
        job = state({}, STORE_FAILED, function="t_lifecycle_retry")
        t0 = time.monotonic()
        again = await hook.run_again(job)
        return again, time.monotonic() - t0

    before = sample("imgworker_job_retries_total", function="t_lifecycle_retry", code="STORE_FAILED")
    with caplog.at_level(logging.WARNING, logger="imgworker.worker.runner"):
        again, waited = run(scenario())
    assert again and 0.15 <= waited < 2, waited
    assert sample("imgworker_job_retries_total", function="t_lifecycle_retry", code="STORE_FAILED") == before + 1
    assert "job function=t_lifecycle_retry STORE_FAILED: retry 1/3 in 0.2 s" in caplog.text


def test_retries_leave_foreground_used_up_and_permanent_failures_alone() -> None:
    async def scenario() -> None:
        hook = Retries(3, 0.01, asyncio.Event())
        foreground = state({}, STORE_FAILED, background=False)
        assert not await hook.run_again(foreground)
        assert foreground.background is False  # the answer is kept for the record
        last = state({}, STORE_FAILED)
        last.attempts = 3  # 1 run + 2 retries: the third retry is still due
        assert await hook.run_again(last)
        used_up = state({}, STORE_FAILED)
        used_up.attempts = 4  # 1 run + 3 retries
        assert not await hook.run_again(used_up)
        permanent = state({}, NOT_FOUND)
        assert not await hook.run_again(permanent)
        assert permanent.ask_background.calls == 0  # type: ignore[attr-defined]  # not asked: no retry either way

    run(scenario())


def test_a_stop_request_cuts_the_backoff_short() -> None:
    async def scenario() -> tuple[bool, float]:
        stopped = asyncio.Event()
        hook = Retries(3, 20.0, stopped)
        asyncio.get_running_loop().call_later(0.1, stopped.set)
        t0 = time.monotonic()
        again = await hook.run_again(state({}, STORE_FAILED))
        return again, time.monotonic() - t0

    again, waited = run(scenario())
    assert not again and waited < 2, waited


# --- failed-job record --------------------------------------------------------------------------------------


def records_under(tmp_path: Path) -> tuple[Stores, FailedJobs]:
    (tmp_path / "failed").mkdir(parents=True, exist_ok=True)
    stores = Stores({"file": FileStore([str(tmp_path)])})
    return stores, FailedJobs(stores, (tmp_path / "failed").as_uri())


def test_failed_record_is_written_once_for_a_failed_job(tmp_path: Path) -> None:
    _, records = records_under(tmp_path)
    hook = FailedRecord(records, "worker-7")
    run(hook.after_job(state({"src": "file:///a.jpg"}, OK)))
    assert list(records.list()) == []
    job = state({"src": "file:///a.jpg", "width": 5, "api_key": "k3y"}, STORE_FAILED, background=None, unique="u-9")
    job.attempts = 4
    job.ask_background = Asked(True)
    run(hook.after_job(job))
    [(_, rec)] = list(records.list())
    assert rec["kind"] == "job" and rec["function"] == "resize" and rec["unique"] == "u-9"
    assert rec["error"] == STORE_FAILED["error"] and rec["attempts"] == 4
    assert rec["background"] is True and rec["worker"] == "worker-7"
    assert rec["payload"] == {"src": "file:///a.jpg", "width": 5, "api_key": "***"}
    run(FailedRecord(None, "worker-7").after_job(state({}, NOT_FOUND)))  # no --failed-jobs: nothing, no error


def test_failed_records_prefix_is_checked_at_start(tmp_path: Path) -> None:
    stores, _ = records_under(tmp_path / "root")
    assert open_records(WorkerConfig(roots=[str(tmp_path / "root")]), stores) is None
    good = WorkerConfig(roots=[str(tmp_path / "root")], failed_jobs=(tmp_path / "root" / "failed").as_uri())
    assert open_records(good, stores) is not None
    bad = WorkerConfig(roots=[str(tmp_path / "root")], failed_jobs=(tmp_path / "elsewhere").as_uri())
    with pytest.raises(ConfigError, match="--failed-jobs"):
        open_records(bad, stores)


# --- completion notice --------------------------------------------------------------------------------------


def test_completion_notice_without_notify_connects_to_nothing() -> None:
    hook = CompletionNotice(["127.0.0.1:1"])  # nothing listens there: a connection attempt would fail loudly
    run(hook.after_job(state({"src": "file:///a.jpg"}, OK)))
    assert hook.notifier._client is None
    run(hook.close())


# --- callback -----------------------------------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[tuple[type[Receiver], int]]:
    handler = type("R", (Receiver,), {"got": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def wait_for(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_callback_posts_the_final_result_signed(receiver: tuple[type[Receiver], int]) -> None:
    handler, port = receiver
    config = WorkerConfig(callback_allow=[f"127.0.0.1:{port}"], callback_secret="s3cret", callback_tries=1)
    hook = Callback(config, CallbackPolicy(config.callback_allow), None, "worker-7")
    url = f"http://127.0.0.1:{port}/done?job=1"
    run(hook.after_job(state({"src": "file:///a.jpg", "id": 3, "callback": url}, OK)))
    wait_for(lambda: handler.got)
    headers, body = handler.got[0]
    assert headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    sent = json.loads(body)
    assert sent["ok"] and sent["id"] == 3 and sent["function"] == "resize" and sent["dst"] == "file:///out/a.jpg"
    run(hook.close())
    no_secret = Callback(WorkerConfig(callback_allow=[f"127.0.0.1:{port}"]), CallbackPolicy([]), None, "w")
    assert no_secret.sender is None  # callbacks need a signing key: without one, nothing is sent


def test_a_callback_given_up_leaves_a_callback_record(receiver: tuple[type[Receiver], int], tmp_path: Path) -> None:
    handler, port = receiver
    handler.status = 500
    _, records = records_under(tmp_path)
    config = WorkerConfig(callback_allow=[f"127.0.0.1:{port}"], callback_secret="s3cret", callback_tries=2,
                          retry_backoff=0.01)
    hook = Callback(config, CallbackPolicy(config.callback_allow), records, "worker-7")
    run(hook.after_job(state({"src": "file:///a.jpg", "callback": f"http://127.0.0.1:{port}/x"}, OK)))
    wait_for(lambda: list(records.list()))
    [(_, rec)] = list(records.list())
    assert rec["kind"] == "callback" and rec["error"]["code"] == "UNAVAILABLE" and rec["attempts"] == 2
    assert rec["callback"] == {"url": f"http://127.0.0.1:{port}/x", "tries": 2, "reason": "HTTP 500",
                               "tries_left": 0}
    assert len(handler.got) == 2
    run(hook.close())
