"""The job object handed to worker handlers."""

from __future__ import annotations

import asyncio

from .connection import Connection
from .protocol import P

# Futures waiting for STATUS_RES_UNIQUE, by unique id, per connection (the worker routes the answers).
StatusWaiters = dict[str, list["asyncio.Future[int]"]]


class Job:
    """A job assigned to this worker. Results are sent by the worker from the handler's return value."""

    __slots__ = ("_conn", "_waiters", "data", "function", "handle", "server", "unique")

    def __init__(
        self, conn: Connection, handle: str, function: str, unique: str, data: bytes,
        status_waiters: StatusWaiters | None = None,
    ) -> None:
        self._conn = conn
        self._waiters = status_waiters
        self.handle = handle
        self.function = function
        self.unique = unique
        self.data = data
        self.server = conn.server

    def _send(self, ptype: int, *args: bytes) -> None:
        # The connection may have died; gearmand has then re-queued the job and nobody wants our updates.
        if not self._conn.closed:
            self._conn.send(ptype, self.handle.encode(), *args)

    async def send_status(self, numerator: int, denominator: int) -> None:
        self._send(P.WORK_STATUS, str(numerator).encode(), str(denominator).encode())

    async def send_data(self, data: bytes) -> None:
        self._send(P.WORK_DATA, data)

    async def send_warning(self, data: bytes) -> None:
        self._send(P.WORK_WARNING, data)

    async def is_background(self, timeout: float = 2.0) -> bool | None:
        """Whether no client waits for this job's result: True for a background job, False while a
        foreground client is attached, None when the server cannot tell (no unique id, no answer).

        JOB_ASSIGN carries no background flag, so this asks the job server: GET_STATUS_UNIQUE answers with
        the number of clients waiting on the unique id (gearmand >= 1.1; 0 for SUBMIT_JOB_BG). A foreground
        client that gave up and disconnected also counts as nobody waiting, which is what a caller of this
        wants to know. One round trip on the job's own connection.
        """
        if not self.unique or self._waiters is None or self._conn.closed:
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(self.unique, []).append(fut)
        try:
            self._conn.send(P.GET_STATUS_UNIQUE, self.unique.encode())
            clients = await asyncio.wait_for(fut, timeout)
        except (TimeoutError, OSError, ConnectionError):
            return None
        finally:
            rest = [f for f in self._waiters.get(self.unique, ()) if f is not fut]
            if rest:
                self._waiters[self.unique] = rest
            else:
                self._waiters.pop(self.unique, None)
        return None if clients < 0 else clients == 0

    def __repr__(self) -> str:
        return f"Job({self.server}/{self.handle} {self.function} {len(self.data)}B)"
