"""The job lifecycle (imgworker/worker/lifecycle/) in a real worker behind a real gearmand: a hook appended to
the list sees every job's end, and the completion notice reaches a real Gearman function."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.corpus import photo

from imgworker.backends.cpu import CpuBackend
from imgworker.core.config import WorkerConfig
from imgworker.features.failed_jobs import FailedJobs
from imgworker.gearman import Job, SyncClient, Worker
from imgworker.stores import FileStore, Stores
from imgworker.testing.gearmand import Gearmand
from imgworker.worker.lifecycle.hook import Hook, JobState
from imgworker.worker.runner import WorkerProcess


class Seer(Hook):
    """A new feature added as one more entry: sees each job's final result, after the default hooks."""

    name = "seer"

    def __init__(self, records: FailedJobs) -> None:
        self.records = records
        self.ends: list[tuple[str, str, Any, int, int]] = []  # function, outcome, id, attempts, records so far
        self.closed = False

    async def after_job(self, job: JobState) -> None:
        outcome = "ok" if job.ok else job.result["error"]["code"]
        written = await asyncio.to_thread(lambda: len(list(self.records.list())))
        self.ends.append((job.function, outcome, job.result.get("id"), job.attempts, written))

    async def close(self) -> None:
        self.closed = True


def test_an_appended_hook_sees_every_job_and_the_notice_arrives(
    gearmand_factory: Callable[[], Gearmand], tmp_path: Path
) -> None:
    g = gearmand_factory()
    src = photo("dragonfly")
    (tmp_path / "failed").mkdir()
    roots = [str(tmp_path), str(src.parent)]
    config = WorkerConfig(servers=[g.address], roots=roots, failed_jobs=(tmp_path / "failed").as_uri(),
                          callback_allow=["hooks.example.com"], callback_secret="s3cret",
                          metrics_port=0).validate()
    stores = Stores({"file": FileStore(roots)})
    process = WorkerProcess(config, CpuBackend(), stores)
    seer = Seer(FailedJobs(stores, (tmp_path / "failed").as_uri()))
    process.lifecycle.hooks.append(seer)  # the whole of adding a feature to every job
    jobs = [
        ("resize", {"src": src.as_uri(), "dst": (tmp_path / "a.jpg").as_uri(), "width": 16, "id": 1,
                    "notify": "lc_done"}),
        ("resize@cpu", {"src": (tmp_path / "nope.jpg").as_uri(), "dst": (tmp_path / "b.jpg").as_uri(),
                        "width": 16, "id": 2, "notify": "lc_done"}),
        ("resize", {"src": src.as_uri(), "dst": (tmp_path / "c.jpg").as_uri(), "width": 16, "id": 3,
                    "callback": "https://evil.example.net/x"}),
    ]
    notices: list[dict[str, Any]] = []
    receiver = Worker([g.address])

    async def on_notice(job: Job) -> bytes:
        notices.append(json.loads(job.data))
        return b""

    receiver.register("lc_done", on_notice)

    async def scenario() -> list[dict[str, Any]]:
        worker = asyncio.create_task(process.run())
        listening = asyncio.create_task(receiver.run())
        await receiver.wait_connected()
        with SyncClient([g.address]) as client:
            results = [json.loads(await asyncio.to_thread(client.submit, fn, json.dumps(body).encode(), timeout=60))
                       for fn, body in jobs]
        for _ in range(200):
            if len(notices) == 2:
                break
            await asyncio.sleep(0.05)
        process.request_stop()
        assert await asyncio.wait_for(worker, 30) == 0
        await receiver.close()
        listening.cancel()
        return results

    results = asyncio.run(scenario())
    assert [r["ok"] for r in results] == [True, False, False]
    assert seer.ends == [
        ("resize", "ok", 1, 1, 0),
        ("resize@cpu", "SOURCE_NOT_FOUND", 2, 1, 1),  # its record was written before this hook ran
        ("resize", "FORBIDDEN_PATH", 3, 1, 2),
    ]
    assert seer.closed
    assert sorted((n["id"], n["ok"], n["function"]) for n in notices) == [(1, True, "resize"),
                                                                         (2, False, "resize@cpu")]
    assert not (tmp_path / "c.jpg").exists()
