"""Blocking wrapper around Client: one event loop in a daemon thread, usable from many threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .client import REQUEST_TIMEOUT_S, Client, JobStatus, Priority

T = TypeVar("T")


class SyncClient:
    def __init__(
        self, servers: Sequence[str], *, client_id: str | None = None, connect_timeout: float = 5.0,
        request_timeout: float | None = REQUEST_TIMEOUT_S,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gearman-sync-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return Client(servers, client_id=client_id, connect_timeout=connect_timeout,
                          request_timeout=request_timeout)

        self._client = self._call(make())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("SyncClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def submit(
        self,
        function: str,
        data: bytes,
        *,
        unique: str | None = None,
        priority: Priority = "normal",
        timeout: float | None = None,
        on_status: Callable[[int, int], object] | None = None,
        on_data: Callable[[bytes], object] | None = None,
        on_warning: Callable[[bytes], object] | None = None,
    ) -> bytes:
        """Callbacks run on the client's loop thread."""
        return self._call(
            self._client.submit(
                function, data, unique=unique, priority=priority, timeout=timeout,
                on_status=on_status, on_data=on_data, on_warning=on_warning,
            )
        )

    def submit_background(
        self, function: str, data: bytes, *, unique: str | None = None, priority: Priority = "normal"
    ) -> str:
        return self._call(self._client.submit_background(function, data, unique=unique, priority=priority))

    def get_status(self, handle: str, *, timeout: float | None = None) -> JobStatus:
        return self._call(self._client.get_status(handle, timeout=timeout))

    def close(self) -> None:
        if self._closed:
            return
        self._call(self._client.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
