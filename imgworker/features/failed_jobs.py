"""Failed-job records: one JSON object per failed job under a ``file://`` or ``s3://`` prefix.

A web backend that submitted a background job learns from these which uploads failed and why, and
``imgworker failed retry`` resubmits them. Records are written through the worker's own stores, so the
``--root`` and ``--s3-bucket`` rules apply to them as to any job. Credentials never reach a record: the
user:password part of URLs and the values of secret-looking keys are replaced by ``***`` (so a job that
carried credentials in its payload cannot be replayed as it was; docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from imgworker.core.contract import Payload
from imgworker.core.errors import ImgworkerError, redact
from imgworker.features import metrics
from imgworker.stores import Store, Stores, WriteOptions
from imgworker.stores.file import url_to_path
from imgworker.stores.s3_url import parse_s3_url

log = logging.getLogger("imgworker.features.failed_jobs")

RECORD_VERSION = 1
MAX_RECORD_BYTES = 1024 * 1024
# A record the store refused goes to the log instead, cut to this: one log line must stay a line, not a payload.
MAX_LOGGED_RECORD_BYTES = 16 * 1024
_TEXT = 2048  # characters of each text field kept in a record that was over MAX_RECORD_BYTES
_PAYLOAD_TEXT = 65536
_KEPT = ("version", "kind", "function", "unique", "payload", "payload_truncated", "error", "attempts", "background",
         "time", "worker", "callback", "truncated")
_SECRET_KEY = re.compile(r"secret|passw|passwd|token|api[-_]?key|access[-_]?key|credential|signature|auth|cookie",
                         re.I)
# Query parameters with secret-looking names (?token=..., X-Amz-Signature=...) in any URL-ish string.
_SECRET_QUERY = re.compile(
    r"([?&][^=&#\s]*(?:secret|passw|token|api[-_]?key|access[-_]?key|credential|signature|auth)[^=&#\s]*=)"
    r"[^&#\s'\"]*",
    re.I,
)


def redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with credentials replaced by ``***``, however deeply they are nested."""
    if depth > 32:
        return "***"
    if isinstance(value, str):
        return _SECRET_QUERY.sub(r"\1***", redact(value))
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_value(v, depth + 1) for v in value]
    return value


def redact_payload(payload: bytes | Payload) -> Any:
    """The job's payload as JSON (redacted), or its redacted text (the first 64 KiB) when it is not a JSON
    object. A ``Payload`` is not parsed again: its decoded fields are used (the worker parses a job once)."""
    if isinstance(payload, Payload):
        if payload.fields:
            return redact_value(payload.fields)
        return redact_value(payload.raw[:65536].decode("utf-8", errors="replace"))
    try:
        return redact_value(json.loads(payload))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return redact_value(payload[:65536].decode("utf-8", errors="replace"))


def build_record(
    function: str, payload: bytes | Payload, unique: str, error: dict[str, Any], attempts: int, *,
    background: bool | None = None, callback: dict[str, Any] | None = None, worker: str = "",
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "kind": "callback" if callback is not None else "job",
        "function": function,
        "unique": unique,
        "payload": redact_payload(payload),
        "error": {
            "code": str(error.get("code", "INTERNAL")),
            "message": redact_value(str(error.get("message", ""))),
            "retryable": bool(error.get("retryable", False)),
        },
        "attempts": attempts,
        "background": background,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "worker": worker,
    }
    if callback is not None:
        record["callback"] = redact_value(callback)
    return record


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def encode_record(record: dict[str, Any]) -> bytes:
    """The record's bytes, at most MAX_RECORD_BYTES, so every record can be listed and retried: texts are cut
    first (``truncated``); a payload still too big (never a valid job's: those are at most 64 KiB) keeps its
    start as text and ``payload_truncated``, which ``failed retry`` will not resubmit."""
    data = _dumps(record)
    if len(data) <= MAX_RECORD_BYTES:
        return data
    small = {k: v[:_TEXT] if isinstance(v, str) else v for k, v in record.items()}
    small["truncated"] = True
    for key in ("error", "callback"):
        if isinstance(record.get(key), dict):
            small[key] = {k: v[:_TEXT] if isinstance(v, str) else v for k, v in record[key].items()}
    data = _dumps(small)
    if len(data) <= MAX_RECORD_BYTES:
        return data
    small["payload"] = json.dumps(record.get("payload"))[:_PAYLOAD_TEXT]
    small["payload_truncated"] = True
    small = {k: v for k, v in small.items() if k in _KEPT}  # anything else that might be big goes
    return _dumps(small)


def _join(prefix: str, name: str) -> str:
    return prefix.rstrip("/") + "/" + name


class FailedJobs:
    """Writes, lists and removes records under one prefix, through the given stores."""

    def __init__(self, stores: Stores, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.store: Store = stores.for_url(prefix)

    def check(self) -> None:
        """At start-up: the prefix must be writable under this worker's roots / buckets."""
        self.store.check(_join(self.prefix, "probe.json"), write=True)

    def write(self, record: dict[str, Any]) -> str | None:
        """Store one record; returns its URL, or None (logged, counted) when the store refused it."""
        # Time first, so a listing is in order of failure; the random part keeps names unique.
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:16]}.json"
        url = _join(self.prefix, name)
        data = encode_record(record)
        try:
            self.store.write(url, data, WriteOptions(content_type="application/json"))
        except ImgworkerError as exc:
            # The store that failed the job is often the one holding the records (a blip of the one S3): the
            # record must not be lost with it, so it goes to the log, whole (redacted, capped), and says so.
            metrics.FAILED_RECORDS.labels("logged").inc()
            text = data.decode(errors="replace")
            if len(data) > MAX_LOGGED_RECORD_BYTES:
                text = text[:MAX_LOGGED_RECORD_BYTES] + f"...[{len(data)} bytes in all]"
            log.error("failed-job record not written to %s (%s): logged here instead: failed-job record %s",
                      redact(self.prefix), exc.to_dict()["message"], text)
            return None
        metrics.FAILED_RECORDS.labels("written").inc()
        log.info("failed-job record %s: %s %s", redact(url), record["function"], record["error"]["code"])
        return url

    def list(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(url, record) for every readable record, oldest first; unreadable ones are logged and skipped."""
        for url in sorted(self.store.list(self.prefix)):
            if not url.endswith(".json"):
                continue
            try:
                record = json.loads(self.store.read(url, max_bytes=MAX_RECORD_BYTES))
            except (ImgworkerError, ValueError, UnicodeDecodeError) as exc:
                # Records are capped when written; one over the cap was written by an older worker.
                why = (f"over {MAX_RECORD_BYTES} bytes, written before records were capped"
                       if getattr(exc, "code", "") == "LIMIT_EXCEEDED" else type(exc).__name__)
                log.warning("skipping %s: not a readable record (%s)", redact(url), why)
                continue
            if isinstance(record, dict) and isinstance(record.get("function"), str):
                yield url, record

    def remove(self, url: str) -> None:
        """Delete one record (the stores have no delete: file:// and s3:// are handled here)."""
        store: Any = getattr(self.store, "inner", self.store)  # metrics.MeteredStore wraps the real one
        store.check(url, write=True)
        if store.scheme == "file":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(url_to_path(url))
        else:
            loc = parse_s3_url(url)
            try:
                store.client.delete_object(Bucket=loc.bucket, Key=loc.key)
            except Exception as exc:
                raise store._translate(exc, "delete", url) from None
