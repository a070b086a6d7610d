"""The Python client: submit imgworker jobs and get typed results or typed errors.

    from imgworker import Client
    with Client(["127.0.0.1:4730"]) as client:
        result = client.resize(src="file:///data/in.jpg", dst="file:///data/out.jpg", width=512)
        print(result.width, result.height, result.ms)
        facts = client.info(src="file:///data/in.jpg", analyze=["meta", "thumbhash"])
        print(facts.analysis["meta"]["width"], facts.analysis["thumbhash"])

A failed job raises the ImgworkerError subclass for its code (``SourceNotFound``, ``DecodeFailed``...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from imgworker.core.errors import InternalError, Unavailable, error_from_dict
from imgworker.gearman import ConnectionLost, GearmanError, GearmanTimeout, JobStatus, SyncClient, unserved_hint_sync

Priority = Literal["normal", "high", "low"]


@dataclass(frozen=True)
class Result:
    """A successful job's result object (see docs/contract.md for the fields)."""

    raw: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.raw[name]
        except KeyError:
            raise AttributeError(name) from None


def default_unique(payload: dict[str, Any]) -> str:
    """Same payload, same unique id: gearmand coalesces duplicate submissions of a queued/running job."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def parse_result(body: bytes) -> Result:
    try:
        obj = json.loads(body)
    except ValueError:
        raise InternalError(f"worker sent a result that is not JSON: {body[:200]!r}") from None
    if not isinstance(obj, dict):
        raise InternalError("worker sent a result that is not a JSON object")
    if not obj.get("ok", False):
        raise error_from_dict(obj.get("error") or {})
    return Result(obj)


class Client:
    def __init__(
        self, servers: Sequence[str] = ("127.0.0.1:4730",), *, timeout: float | None = 120.0,
        request_timeout: float = 10.0,
    ) -> None:
        """``timeout``: longest wait for a job's result. ``request_timeout``: longest wait for a job server to
        acknowledge a submit (or a connect); a server silent that long is taken for stopped and the job goes to
        the next server."""
        self.timeout = timeout
        self._gearman = SyncClient(
            list(servers), connect_timeout=min(5.0, request_timeout), request_timeout=request_timeout
        )
        self._servers = len(servers)
        self._addresses = list(servers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._gearman.close()

    def run(
        self,
        function: str,
        payload: dict[str, Any],
        *,
        unique: str | None = None,
        priority: Priority = "normal",
        timeout: float | None = None,
    ) -> Result:
        """Submit any job (``resize``, ``resize@gpu``, a pipeline name) and wait for its result."""
        data = json.dumps(payload).encode()
        # A job whose job server is lost mid-wait goes to the next server (the client rotates): safe because
        # a job is idempotent (same unique id; a re-run overwrites its destination with identical bytes).
        for attempt in range(self._servers):
            try:
                body = self._gearman.submit(
                    function,
                    data,
                    unique=unique or default_unique(payload),
                    priority=priority,
                    timeout=timeout if timeout is not None else self.timeout,
                )
                break
            except ConnectionLost as exc:
                if attempt + 1 >= self._servers:
                    raise Unavailable(f"job {function!r} did not complete: {exc}") from exc
            except GearmanError as exc:
                raise Unavailable(self._not_completed(function, exc)) from exc
        return parse_result(body)

    def _not_completed(self, function: str, exc: GearmanError) -> str:
        """Why a job did not complete; a timeout asks the job servers whether any worker serves ``function``."""
        hint = unserved_hint_sync(self._addresses, function) if isinstance(exc, GearmanTimeout) else None
        return f"job {function!r} did not complete: {exc}" + (f"; {hint}" if hint else "")

    def resize(self, *, src: str, dst: str, function: str = "resize", **params: Any) -> Result:
        return self.run(function, {"src": src, "dst": dst, **params})

    def info(self, *, src: str, analyze: Sequence[str] = ("meta",), function: str = "info") -> Result:
        """The facts of ``src`` (``meta``, ``thumbhash``, ``blurhash``, ``dominant``, ``phash``); nothing written."""
        return self.run(function, {"src": src, "analyze": list(analyze)})

    def submit_background(
        self, function: str, payload: dict[str, Any], *, unique: str | None = None, priority: Priority = "normal"
    ) -> str:
        """Queue a job without waiting; returns its handle for ``status``."""
        data = json.dumps(payload).encode()
        try:
            return self._gearman.submit_background(
                function, data, unique=unique or default_unique(payload), priority=priority
            )
        except GearmanError as exc:
            raise Unavailable(f"job {function!r} was not queued: {exc}") from exc

    def status(self, handle: str) -> JobStatus:
        return self._gearman.get_status(handle)
