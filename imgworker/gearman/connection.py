"""One TCP connection to a gearmand: framed reads and batched writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from .errors import ConnectionLost, ProtocolError
from .protocol import (
    DEFAULT_MAX_PACKET,
    HEADER_SIZE,
    Packet,
    encode_header,
    parse_address,
    parse_header,
    split_body,
)

log = logging.getLogger(__name__)

# Above this many buffered bytes, async senders wait for the socket to drain (back-pressure).
_HIGH_WATER = 4 * 1024 * 1024


class Connection:
    """Reads packets in a task and hands each to ``on_packet``; ``on_close`` runs once when it ends."""

    def __init__(
        self,
        server: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_packet: Callable[[Packet], None],
        on_close: Callable[[BaseException | None], None],
        max_packet: int = DEFAULT_MAX_PACKET,
    ) -> None:
        self.server = server
        self._reader = reader
        self._writer = writer
        self._on_packet = on_packet
        self._on_close = on_close
        self._max_packet = max_packet
        self._wbuf: list[bytes] = []
        self._flush_scheduled = False
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._read_loop(), name=f"gearman-read-{server}")

    @classmethod
    async def open(
        cls,
        server: str,
        on_packet: Callable[[Packet], None],
        on_close: Callable[[BaseException | None], None],
        timeout: float | None = 5.0,
        max_packet: int = DEFAULT_MAX_PACKET,
    ) -> Connection:
        host, port = parse_address(server)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=2**20), timeout
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Request/response traffic of small packets: Nagle would add 40 ms stalls.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(server, reader, writer, on_packet, on_close, max_packet)

    async def _read_loop(self) -> None:
        reader = self._reader
        exc: BaseException | None = None
        try:
            while True:
                header = await reader.readexactly(HEADER_SIZE)
                magic, ptype, size = parse_header(header, self._max_packet)
                # readexactly on the body: one allocation per packet, no quadratic buffer growth.
                body = await reader.readexactly(size) if size else b""
                self._on_packet(Packet(magic, ptype, split_body(ptype, body)))
        except asyncio.IncompleteReadError:
            exc = ConnectionLost(f"{self.server}: connection closed by server")
        except ProtocolError as e:
            log.error("%s: protocol error: %s", self.server, e)
            exc = e
        except OSError as e:
            exc = ConnectionLost(f"{self.server}: {e}")
        except asyncio.CancelledError:
            exc = ConnectionLost(f"{self.server}: connection closed")
        except Exception as e:  # a bug in a packet handler: drop the connection rather than hang
            log.exception("%s: error handling packet", self.server)
            exc = e
        finally:
            self._shutdown(exc)

    def _shutdown(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._wbuf.clear()
        self._writer.close()
        try:
            self._on_close(exc)
        except Exception:
            log.exception("%s: on_close callback failed", self.server)

    def send(self, ptype: int, *args: bytes) -> None:
        """Queue a packet; all packets queued in one loop iteration go out in one write."""
        if self.closed:
            raise ConnectionLost(f"{self.server}: connection is closed")
        if len(args) > 1 and len(args[-1]) > 65536:
            # Big payload: send header+small args and the payload as separate buffers (no concat copy).
            head = b"\0".join(args[:-1]) + b"\0"
            self._wbuf.append(encode_header(ptype, len(head) + len(args[-1])) + head)
            self._wbuf.append(args[-1])
        else:
            body = b"\0".join(args)
            self._wbuf.append(encode_header(ptype, len(body)) + body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._wbuf:
            return
        buf, self._wbuf = self._wbuf, []
        try:
            self._writer.writelines(buf)
        except (OSError, RuntimeError) as e:
            self._shutdown(ConnectionLost(f"{self.server}: {e}"))

    async def send_and_drain(self, ptype: int, *args: bytes) -> None:
        """send(), then wait while the kernel buffer is full (for large payloads)."""
        self.send(ptype, *args)
        transport = self._writer.transport
        if transport.get_write_buffer_size() + sum(map(len, self._wbuf)) > _HIGH_WATER:
            self._flush()
            try:
                await self._writer.drain()
            except (OSError, RuntimeError) as e:
                raise ConnectionLost(f"{self.server}: {e}") from e

    async def close(self) -> None:
        self._flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._shutdown(None)
        with contextlib.suppress(TimeoutError, OSError, ConnectionError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    def abort(self) -> None:
        """Close at once without flushing (a test / drain-deadline helper)."""
        self._writer.transport.abort()
