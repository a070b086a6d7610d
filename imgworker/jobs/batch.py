"""``batch`` jobs: map-reduce over a prefix through the job servers.

Map: list the source prefix and submit one job per object (``resize`` or a pipeline's function) with our
asyncio Gearman client to the same job servers, at most ``in_flight`` at once, so every worker in the cluster
shares the work. Reduce: collect each result into a manifest JSON at the destination. Progress goes out as
WORK_STATUS (done, total), so a client that started the batch in the background can poll it.

The coordinator is an asyncio task on its own Gearman connection (``--batch-slots`` jobs, default 1): it holds
a job slot but never an image thread, so a worker with ``--concurrency 1`` still runs the batch's own object
jobs. A batch survives the loss of its worker: gearmand re-queues it, and the next run skips objects done
before (from the checkpointed manifest, and outputs that already exist).

An object whose job fails transiently (a store blip: STORE_FAILED, TIMEOUT, UNAVAILABLE marked retryable) is
submitted again, ``--retries`` times with backoff from ``--retry-backoff`` (object jobs are foreground, so the
worker's own retries of background jobs never apply to them). A batch that still has such failures at its end
is not complete: its result is ``ok: false`` (UNAVAILABLE, retryable) with ``status: "incomplete"``, its manifest
says ``complete: false``, and a resubmission redoes just those objects. Failures that a retry cannot mend (a
corrupt image) leave the batch complete with ``status: "partial"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import posixpath
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from imgworker.client import default_unique
from imgworker.core.config import WorkerConfig
from imgworker.core.contract import CONTRACT_VERSION
from imgworker.core.errors import ImgworkerError, SourceNotFound, Unavailable, redact
from imgworker.core.formats import SOURCE_SUFFIXES as IMAGE_SUFFIXES
from imgworker.gearman import Client, GearmanError, Job, Worker
from imgworker.jobs.batch_spec import BatchSpec, parse_batch
from imgworker.jobs.service import error_result, oversized_result
from imgworker.stores import Store, Stores, WriteOptions

log = logging.getLogger("imgworker.jobs.batch")

FUNCTION = "batch"
MAX_MANIFEST_BYTES = 1024 * 1024 * 1024
STATUS_EVERY_S = 0.5
CHECKPOINT_EVERY_S = 5.0
CHILD_ATTEMPTS = 3  # a child job is re-sent when the job server connection fails, not when the job fails
# Object outcomes worth another try: the store or the job servers were briefly away, not the object bad.
TRANSIENT_CODES = ("STORE_FAILED", "TIMEOUT", "UNAVAILABLE")
MAX_RETRY_DELAY_S = 30.0
# The final manifest is the batch's result: written again through a store blip (0.5 s doubling: ~15 s in all).
MANIFEST_TRIES = 6


def transient(entry: dict[str, Any]) -> bool:
    """A failed object (result or manifest entry) that a later try may mend."""
    err = entry.get("error") or {}
    return not entry.get("ok") and bool(err.get("retryable")) and err.get("code") in TRANSIENT_CODES


def _entry(src: str, dst: str, result: dict[str, Any]) -> dict[str, Any]:
    if result.get("ok"):
        keep = ("width", "height", "format", "bytes", "outputs")
        return {"src": src, "dst": dst, "ok": True, **{k: result[k] for k in keep if k in result}}
    err = result.get("error") or {}
    error = {k: err.get(k) for k in ("code", "message", "retryable")}
    return {"src": src, "dst": dst, "ok": False, "error": error}


class Batch:
    """One run of one batch job."""

    def __init__(self, spec: BatchSpec, stores: Stores, servers: list[str], job: Job | None = None, *,
                 retries: int = 3, retry_backoff: float = 1.0) -> None:
        self.spec = spec
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.src_store: Store = stores.for_url(spec.src)
        self.out_store: Store = stores.for_url(spec.dst)
        self.manifest_store: Store = stores.for_url(spec.manifest)
        self.servers = servers
        self.job = job
        self.entries: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.total = 0
        self.attempt = 1
        self.started = time.monotonic()
        self._manifest_lock = threading.Lock()
        self._final_written = False

    # --- reading the starting point ------------------------------------------------------------

    def _list_sources(self) -> list[str]:
        own = {self.spec.manifest}
        return [
            u
            for u in self.src_store.list(self.spec.src)
            if posixpath.splitext(u)[1].lower() in IMAGE_SUFFIXES and u not in own
        ]

    def _previous(self) -> dict[str, dict[str, Any]]:
        """Results of an earlier run of this batch, from its (checkpointed) manifest."""
        try:
            raw = self.manifest_store.read(self.spec.manifest, max_bytes=MAX_MANIFEST_BYTES)
            old = json.loads(raw)
        except (SourceNotFound, ValueError):
            return {}
        if not isinstance(old, dict) or old.get("src") != self.spec.src or old.get("dst") != self.spec.dst:
            return {}
        self.attempt = int(old.get("attempt", 0)) + 1
        return {e["src"]: e for e in old.get("objects", []) if isinstance(e, dict) and "src" in e}

    def _existing_outputs(self) -> set[str]:
        if self.spec.overwrite or not self.spec.checks_outputs:
            return set()
        # One listing of the destination, not one HEAD per object: 100,000 HEADs take minutes.
        with contextlib.suppress(SourceNotFound):
            return set(self.out_store.list(self.spec.dst))
        return set()

    def _plan(self) -> list[str]:
        self.manifest_store.check(self.spec.manifest, write=True)
        self.out_store.check(self.spec.child_dst(self.spec.src + "x"), write=True)
        sources = self._list_sources()
        previous = {} if self.spec.overwrite else self._previous()
        existing = self._existing_outputs()
        todo = []
        for src in sources:
            dst = self.spec.child_dst(src)
            old = previous.get(src)
            if old is not None and old.get("ok") and old.get("dst") == dst:
                self.entries[src] = old
            elif dst in existing:
                self.entries[src] = {"src": src, "dst": dst, "ok": True, "skipped": "exists"}
            else:
                todo.append(src)
        self.total = len(sources)
        self.order = sources
        return todo

    # --- map ----------------------------------------------------------------------------------

    async def _one(self, client: Client, src: str) -> None:
        payload = self.spec.child_payload(src)
        data = json.dumps(payload, separators=(",", ":")).encode()
        result = await self._submit(client, payload, data)
        tries = 1
        while transient(result) and tries <= self.retries:
            # Doubling, capped, jittered: lanes that failed together in a blip do not come back in lockstep.
            await asyncio.sleep(min(MAX_RETRY_DELAY_S, self.retry_backoff * 2 ** (tries - 1)) * random.uniform(0.75, 1))
            tries += 1
            result = await self._submit(client, payload, data)
        entry = _entry(src, payload["dst"], result)
        if tries > 1:
            entry["tries"] = tries
        self.entries[src] = entry

    async def _submit(self, client: Client, payload: dict[str, Any], data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for attempt in range(CHILD_ATTEMPTS):
            try:
                # Same payload, same unique: gearmand joins us to a copy still running for a lost coordinator.
                body = await client.submit(
                    self.spec.function, data, unique=default_unique(payload), timeout=self.spec.timeout
                )
                result = json.loads(body)
                break
            except (GearmanError, ValueError) as exc:
                result = error_result(Unavailable(f"object job did not complete: {type(exc).__name__}"))
                await asyncio.sleep(0.2 * 2**attempt)
        return result if isinstance(result, dict) else {}

    async def _map(self, todo: list[str]) -> None:
        client = Client(self.servers, client_id=f"imgworker-batch-{id(self):x}")
        queue: Iterator[str] = iter(todo)

        async def lane() -> None:
            # A fixed set of lanes pulling from one iterator: memory stays flat for 100,000 objects.
            for src in queue:
                await self._one(client, src)

        lanes = [asyncio.create_task(lane()) for _ in range(min(self.spec.in_flight, max(1, len(todo))))]
        reporter = asyncio.create_task(self._report())
        try:
            await asyncio.gather(*lanes)
        finally:
            for task in [*lanes, reporter]:
                task.cancel()
            await asyncio.gather(*lanes, reporter, return_exceptions=True)
            await client.close()

    async def _report(self) -> None:
        last_checkpoint = time.monotonic()
        checkpoint_every = CHECKPOINT_EVERY_S
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            await self._status()
            if time.monotonic() - last_checkpoint >= checkpoint_every:
                t0 = time.monotonic()
                try:
                    await asyncio.to_thread(self._write_manifest, False)
                except ImgworkerError as exc:  # a failed checkpoint must not end progress reports
                    log.warning("batch checkpoint failed code=%s message=%s", exc.code, redact(exc.message))
                # A huge manifest must not turn the coordinator into a manifest writer.
                checkpoint_every = max(CHECKPOINT_EVERY_S, 20 * (time.monotonic() - t0))
                last_checkpoint = time.monotonic()

    async def _status(self) -> None:
        if self.job is not None:
            await self.job.send_status(len(self.entries), self.total)

    # --- reduce -------------------------------------------------------------------------------

    def summary(self, final: bool) -> dict[str, Any]:
        """``complete`` only at the end of a run that left no object to try again; ``status``: succeeded (every
        object ok), partial (some failed for good: bad images), incomplete (some failed transiently, or the run
        is still going)."""
        entries = [self.entries[s] for s in self.order if s in self.entries]
        errors: dict[str, int] = {}
        for e in entries:
            if not e.get("ok"):
                code = str(e.get("error", {}).get("code"))
                errors[code] = errors.get(code, 0) + 1
        retry = sum(1 for e in entries if transient(e))
        complete = final and not retry
        failed = len(entries) - sum(1 for e in entries if e.get("ok"))
        return {
            "complete": complete,
            "status": "incomplete" if not complete else "partial" if failed else "succeeded",
            "src": self.spec.src,
            "dst": self.spec.dst,
            "function": self.spec.function,
            "params": self.spec.params,
            "id": self.spec.id,
            "attempt": self.attempt,
            "total": self.total,
            "done": len(entries),
            "succeeded": sum(1 for e in entries if e.get("ok")),
            "skipped": sum(1 for e in entries if e.get("skipped")),
            "failed": failed,
            "transient": retry,
            "errors": errors,
            "bytes": sum(int(e.get("bytes", 0)) for e in entries),
            "wall_s": round(time.monotonic() - self.started, 3),
            "manifest": self.spec.manifest,
        }

    def _write_manifest(self, final: bool) -> None:
        # A checkpoint thread cancelled in flight still runs: it must never land after the final manifest.
        with self._manifest_lock:
            if self._final_written:
                return
            body = self.summary(final)
            body["objects"] = [self.entries[s] for s in self.order if s in self.entries]
            data = json.dumps(body, separators=(",", ":")).encode()
            self.manifest_store.write(self.spec.manifest, data, WriteOptions(content_type="application/json"))
            self._final_written = final

    async def _write_final_manifest(self) -> None:
        for attempt in range(MANIFEST_TRIES):
            try:
                await asyncio.to_thread(self._write_manifest, True)
                return
            except ImgworkerError as exc:
                if not exc.retryable or attempt + 1 == MANIFEST_TRIES:
                    raise
                log.warning("batch manifest not written (%s); again in %.1f s", exc.code, 0.5 * 2**attempt)
                await asyncio.sleep(0.5 * 2**attempt)

    async def run(self) -> dict[str, Any]:
        todo = await asyncio.to_thread(self._plan)
        log.info(
            "batch start src=%s dst=%s objects=%d todo=%d attempt=%d",
            self.spec.src, self.spec.dst, self.total, len(todo), self.attempt,
        )
        await self._status()
        if todo:
            await self._map(todo)
        await self._status()
        await self._write_final_manifest()
        # "ok" is the job's outcome, as in every result (the count of objects done well is "succeeded"): a batch
        # left with objects to try again did not reach its end, whatever else it did.
        summary = self.summary(True)
        if summary["complete"]:
            result = {**summary, "ok": True, "contract": CONTRACT_VERSION}
        else:
            codes = ", ".join(f"{c} {n}" for c, n in sorted(summary["errors"].items()))
            result = {**summary, **error_result(Unavailable(
                f"batch incomplete: {summary['transient']} of {summary['total']} objects failed transiently after "
                f"{self.retries + 1} tries each ({codes}); submit the batch again to redo them (objects done are "
                "skipped)", retryable=True))}
        log.log(
            logging.INFO if result["ok"] else logging.WARNING,
            "batch %s src=%s objects=%d succeeded=%d failed=%d transient=%d skipped=%d wall_s=%.1f",
            result["status"],
            self.spec.src,
            result["total"],
            result["succeeded"],
            result["failed"],
            result["transient"],
            result["skipped"],
            result["wall_s"],
        )
        return result


class BatchRunner:
    """Serves ``batch`` on its own Gearman connection so a batch never takes an image job slot or thread."""

    def __init__(self, config: WorkerConfig, stores: Stores, client_id: str) -> None:
        self.config = config
        self.stores = stores
        # A batch payload over the limit is refused unread, as an image job's is (oversized_result).
        self.gearman = Worker(config.servers, client_id=f"{client_id}-batch", max_jobs=config.batch_slots,
                              on_oversized=functools.partial(oversized_result, config.limits),
                              max_job_data=config.limits.max_payload_bytes,
                              request_timeout=config.job_server_timeout)
        self.gearman.register(FUNCTION, self.handle)

    async def handle(self, job: Job) -> bytes:
        try:
            spec = parse_batch(job.data, self.config.limits)
            result = await Batch(spec, self.stores, self.config.servers, job, retries=self.config.retries,
                                 retry_backoff=self.config.retry_backoff).run()
        except ImgworkerError as exc:
            log.info("batch failed code=%s message=%s", exc.code, redact(exc.message))
            result = error_result(exc)
        except Exception as exc:
            log.exception("batch failed with an internal error")
            result = error_result(exc)
        return json.dumps(result, separators=(",", ":")).encode()

    async def run(self) -> None:
        await self.gearman.run()

    async def close(self) -> None:
        # A batch in progress is left unanswered: gearmand re-queues it and another worker resumes it.
        await self.gearman.close()
