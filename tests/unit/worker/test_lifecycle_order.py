"""The lifecycle's order: the default list (worker/lifecycle/default.py) is the documented one, every phase
calls the hooks in list order, and one more entry in the list is all a new feature needs."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from support.corpus import photo

from imgworker.backends.cpu import CpuBackend
from imgworker.core.config import WorkerConfig
from imgworker.core.contract import read_payload
from imgworker.core.errors import ForbiddenPath
from imgworker.core.limits import Limits
from imgworker.features.failed_jobs import FailedJobs
from imgworker.jobs.service import Service
from imgworker.stores import FileStore, Stores
from imgworker.worker.lifecycle.chain import Lifecycle
from imgworker.worker.lifecycle.default import default_hooks
from imgworker.worker.lifecycle.hook import Hook, JobState
from imgworker.worker.runner import JobRunner

REPO = Path(__file__).resolve().parents[3]
# Issue 25's order: admission -> timing -> logging -> metrics -> retries -> failed-job record -> completion
# notice -> callback.
ORDER = ["admission", "timing", "logging", "metrics", "retries", "failed-job record", "completion notice",
         "callback"]


def documented() -> list[tuple[str, str]]:
    """(hook name, module file) rows of docs/reliability.md's lifecycle table, in order."""
    text = (REPO / "docs" / "reliability.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([a-z -]+) \| `([\w/.]+)` \|", text, re.M)
    assert [int(n) for n, _, _ in rows] == list(range(1, len(rows) + 1))
    return [(name, path) for _, name, path in rows]


def hooks_of(config: WorkerConfig, stores: Stores, stopped: asyncio.Event | None = None) -> list[Hook]:
    return default_hooks(config, stores, worker_id="w-test", backend="cpu", stopped=stopped or asyncio.Event(),
                         check_fds=lambda: None)


def test_the_default_list_is_the_documented_order(tmp_path: Path) -> None:
    hooks = hooks_of(WorkerConfig(roots=[str(tmp_path)]), Stores({"file": FileStore([str(tmp_path)])}))
    listed = [(h.name, str(Path(inspect.getfile(type(h))).relative_to(REPO))) for h in hooks]
    assert [name for name, _ in listed] == ORDER
    assert listed == documented()


class Recorder(Hook):
    """Writes every phase it sees to a shared list; ``again`` runs the work again that many times."""

    def __init__(self, name: str, seen: list[tuple[str, str]], *, again: int = 0, fail: str = "") -> None:
        self.name, self.seen, self.again, self.fail = name, seen, again, fail

    def _note(self, phase: str) -> None:
        self.seen.append((phase, self.name))
        if phase == self.fail:
            raise RuntimeError(f"{self.name} broke in {phase}")

    def before_job(self, job: JobState) -> None:
        self._note("before_job")

    def admit(self, job: JobState) -> None:
        self._note("admit")

    def after_run(self, job: JobState, elapsed: float) -> None:
        self._note("after_run")

    async def run_again(self, job: JobState) -> bool:
        self._note("run_again")
        if self.again:
            self.again -= 1
            return True
        return False

    def after_work(self, job: JobState) -> None:
        self._note("after_work")

    async def after_job(self, job: JobState) -> None:
        self._note("after_job")

    async def close(self) -> None:
        self._note("close")


async def no_answer() -> bool | None:
    return None


def job_of(fields: dict[str, Any]) -> JobState:
    return JobState("resize", None, read_payload(json.dumps(fields).encode(), Limits()), "u", no_answer)


async def fake_attempt(job: JobState, admit: Any) -> tuple[dict[str, Any], float]:
    admit(job)
    return {"ok": True, "backend": "cpu"}, 0.01


def test_every_phase_calls_the_hooks_in_list_order() -> None:
    seen: list[tuple[str, str]] = []
    chain = Lifecycle([Recorder("a", seen), Recorder("b", seen, again=1), Recorder("c", seen)])
    job = job_of({})
    result = asyncio.run(chain.run(job, fake_attempt))
    asyncio.run(chain.close())
    assert result == {"ok": True, "backend": "cpu"} and job.attempts == 2
    run = [("admit", n) for n in "abc"] + [("after_run", n) for n in "abc"]
    assert seen == (
        [("before_job", n) for n in "abc"]
        + run + [("run_again", "a"), ("run_again", "b")]  # b asks for another run: c is not asked
        + run + [("run_again", n) for n in "abc"]
        + [("after_work", n) for n in "abc"]
        + [("after_job", n) for n in "abc"]
        + [("close", n) for n in "abc"]
    )


def test_a_cancelled_job_gets_after_work_but_no_after_job() -> None:
    seen: list[tuple[str, str]] = []
    chain = Lifecycle([Recorder("a", seen), Recorder("b", seen)])

    async def cancelled(job: JobState, admit: Any) -> tuple[dict[str, Any], float]:
        raise asyncio.CancelledError  # the drain deadline passed: the job goes back to the job server

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(chain.run(job_of({}), cancelled))
    assert seen == [("before_job", "a"), ("before_job", "b"), ("after_work", "a"), ("after_work", "b")]


def test_a_failing_hook_changes_neither_the_result_nor_the_hooks_after_it(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str]] = []
    chain = Lifecycle([Recorder("a", seen, fail="after_job"), Recorder("b", seen, fail="after_run"),
                       Recorder("c", seen)])
    with caplog.at_level(logging.ERROR, logger="imgworker.worker.runner"):
        result = asyncio.run(chain.run(job_of({}), fake_attempt))
    assert result["ok"]
    assert [n for p, n in seen if p == "after_job"] == ["a", "b", "c"]
    assert [n for p, n in seen if p == "after_run"] == ["a", "b", "c"]
    assert "after the job resize: the a hook failed" in caplog.text
    assert "after a run resize: the b hook failed" in caplog.text


class Seer(Hook):
    """A new feature: sees each job's final result, once, after every default hook."""

    name = "seer"

    def __init__(self, records: FailedJobs) -> None:
        self.records = records
        self.ends: list[tuple[str, Any, int, int]] = []  # (outcome, id, attempts, records written so far)

    async def after_job(self, job: JobState) -> None:
        outcome = "ok" if job.ok else job.result["error"]["code"]
        self.ends.append((outcome, job.result.get("id"), job.attempts, len(list(self.records.list()))))


def test_an_appended_hook_sees_every_jobs_end(tmp_path: Path) -> None:
    """One entry added to the default list, real jobs run by the real job runner: the new hook sees each
    job's end (ok, failed, refused by admission), after the failed-job record of it was written."""
    (tmp_path / "failed").mkdir()
    src = photo("dragonfly")
    stores = Stores({"file": FileStore([str(tmp_path), str(src.parent)])})
    config = WorkerConfig(roots=[str(tmp_path)], failed_jobs=(tmp_path / "failed").as_uri(),
                          callback_allow=["hooks.example.com"])
    seer = Seer(FailedJobs(stores, config.failed_jobs or ""))
    chain = Lifecycle([*hooks_of(config, stores), seer])
    runner = JobRunner(Service(stores, CpuBackend(), Limits()), 1, 30.0)
    jobs = [
        {"src": src.as_uri(), "dst": (tmp_path / "a.jpg").as_uri(), "width": 16, "id": 1},
        {"src": (tmp_path / "missing.jpg").as_uri(), "dst": (tmp_path / "b.jpg").as_uri(), "width": 16, "id": 2},
        {"src": src.as_uri(), "dst": (tmp_path / "c.jpg").as_uri(), "width": 16, "id": 3,
         "callback": "https://evil.example.net/x"},
    ]

    async def scenario() -> list[dict[str, Any]]:
        results = [await chain.run(job_of(fields), runner.run) for fields in jobs]
        await chain.close()
        return results

    results = asyncio.run(scenario())
    runner.executor.shutdown()
    assert [r["ok"] for r in results] == [True, False, False]
    assert seer.ends == [("ok", 1, 1, 0), ("SOURCE_NOT_FOUND", 2, 1, 1), (ForbiddenPath.code, 3, 1, 2)]
    assert not (tmp_path / "c.jpg").exists()  # refused before any work
