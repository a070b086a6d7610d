"""The job object handed to worker handlers."""

from __future__ import annotations

from .connection import Connection
from .protocol import P


class Job:
    """A job assigned to this worker. Results are sent by the worker from the handler's return value."""

    __slots__ = ("_conn", "data", "function", "handle", "server", "unique")

    def __init__(self, conn: Connection, handle: str, function: str, unique: str, data: bytes) -> None:
        self._conn = conn
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

    def __repr__(self) -> str:
        return f"Job({self.server}/{self.handle} {self.function} {len(self.data)}B)"
