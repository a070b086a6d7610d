"""One TCP connection to a gearmand: an asyncio Protocol that parses frames in data_received.

No per-packet await: packets are decoded straight from the bytes the loop read and handed to
``on_packet`` in the same callback, and every packet sent while that runs goes out in one write at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import cast

from .errors import ConnectionLost, ProtocolError
from .protocol import ARGC, DEFAULT_MAX_PACKET, HEADER_SIZE, REQ, RES, P, encode_header, parse_address

log = logging.getLogger(__name__)

# Above this many buffered bytes the transport pauses us and async senders wait (back-pressure).
_HIGH_WATER = 4 * 1024 * 1024
# Payloads above this are written as their own buffer instead of being concatenated with the header.
_BIG = 65536
_READ_SIZE = 65536  # receive buffer kept between reads
_MIN_READ = 16384  # never offer the kernel less room than this
_unpack_header = struct.Struct(">4sII").unpack_from
# A job assignment over max_packet, or over max_job when given (the size that says the payload is over the
# caller's limit), is skipped unread (its first bytes kept: handle, function, unique) and reported to
# on_oversized, so the job can be answered instead of the connection dropped (gearmand would re-queue it), and
# its body never becomes a string: the refusal costs the receive buffer, whatever the packet's size.
_SKIPPABLE = (P.JOB_ASSIGN_UNIQ, P.JOB_ASSIGN)
_SKIP_HEAD = 4096
# Packets without arguments (GRAB_JOB_UNIQ, PRE_SLEEP, ...), encoded once.
_EMPTY = {t: encode_header(t, 0) for t, argc in ARGC.items() if argc == 0}
# TCP keepalive: probe after 30 s idle, every 10 s, drop after 3 unanswered. A worker idle on a server whose
# node died (or a client waiting on one) would otherwise wait forever; the same values as imgworker's gearmand.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 30, 10, 3


def enable_keepalive(sock: socket.socket, idle: int = KEEPALIVE_IDLE_S, interval: int = KEEPALIVE_INTERVAL_S,
                     count: int = KEEPALIVE_COUNT) -> None:
    """SO_KEEPALIVE plus the timings where the OS has them, and TCP_USER_TIMEOUT to match, so unacknowledged
    writes to a dead peer give up in the same time (keepalive alone does not probe while data is in flight)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count),
                        ("TCP_USER_TIMEOUT", (idle + interval * count) * 1000)):
        opt = getattr(socket, name, None)
        if opt is not None:
            # Not supported for this socket / OS: keepalive with the OS timings still works.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)


class Connection(asyncio.BufferedProtocol):
    """Hands each packet to ``on_packet(type, args)``; ``on_close`` runs once when the connection ends."""

    def __init__(
        self,
        server: str,
        on_packet: Callable[[int, tuple[bytes, ...]], None],
        on_close: Callable[[BaseException | None], None],
        max_packet: int = DEFAULT_MAX_PACKET,
        on_oversized: Callable[[int, bytes, int], None] | None = None,
        max_job: int | None = None,
    ) -> None:
        self.server = server
        self._max_job = min(max_packet, max_job) if max_job is not None and on_oversized is not None else max_packet
        self._on_oversized = on_oversized
        self._skip = 0  # bytes of an oversized packet still to discard
        self._skip_type = 0
        self._skip_size = 0
        self._skip_head = bytearray()
        self._on_packet = on_packet
        self._on_close = on_close
        self._max_packet = max_packet
        self._transport: asyncio.Transport | None = None
        self._rbuf = bytearray(_READ_SIZE)  # received bytes; [: _rlen] not yet parsed
        self._rlen = 0
        self._need = 0  # size of the incomplete frame at the buffer start, once its header is read
        self._shrink = False
        self._wbuf: list[bytes] = []
        self._wbig = False  # _wbuf holds a payload too big to concatenate
        self._corked = 0
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        # When bytes last came in (time.monotonic()): a peer that stops answering (SIGSTOP, a wedged server)
        # still has its kernel ACK our writes, so keepalive never fires; the worker and client judge it by this.
        self.last_rx = time.monotonic()

    @classmethod
    async def open(
        cls,
        server: str,
        on_packet: Callable[[int, tuple[bytes, ...]], None],
        on_close: Callable[[BaseException | None], None],
        timeout: float | None = 5.0,
        max_packet: int = DEFAULT_MAX_PACKET,
        on_oversized: Callable[[int, bytes, int], None] | None = None,
        max_job: int | None = None,
    ) -> Connection:
        host, port = parse_address(server)
        loop = asyncio.get_running_loop()
        transport, conn = await asyncio.wait_for(
            loop.create_connection(lambda: cls(server, on_packet, on_close, max_packet, on_oversized, max_job),
                                  host, port),
            timeout,
        )
        sock = transport.get_extra_info("socket")
        try:
            self_connected = sock is not None and sock.getsockname() == sock.getpeername()
        except OSError:
            self_connected = False
        if self_connected:
            # TCP simultaneous open: retrying a loopback port nobody listens on can pick that very port as the
            # source port and connect the socket to itself, which would also keep gearmand from binding it.
            transport.abort()
            raise ConnectionRefusedError(f"{server}: nothing listening (the socket connected to itself)")
        return conn

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCPTransport does not subclass asyncio.Transport.
        transport = self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Request/response traffic of small packets: Nagle would add 40 ms stalls.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_keepalive(sock)
        transport.set_write_buffer_limits(high=_HIGH_WATER)

    def get_buffer(self, sizehint: int) -> memoryview:
        # recv_into a reused buffer: asyncio's plain data_received path allocates 256 KiB per read.
        buf, start = self._rbuf, self._rlen
        if self._shrink:  # a big frame was read: give its memory back
            self._shrink = False
            buf = self._rbuf = bytearray(_READ_SIZE) if not start else buf
        # Room for the whole frame being read (its size comes from a header already validated against
        # max_packet), so a 5 MB body is received in place: one allocation, no quadratic re-copying.
        want = max(self._need, start + _MIN_READ)
        if len(buf) < want:
            buf.extend(bytes(want - len(buf)))
        return memoryview(buf)[start:]

    def buffer_updated(self, nbytes: int) -> None:
        self._rlen += nbytes
        self.last_rx = time.monotonic()
        self._corked += 1  # replies sent by packet handlers leave in one write, below
        try:
            buf = self._rbuf
            used = self._parse(buf, self._rlen)
            if used and not self.closed:
                left = self._rlen - used
                if left:
                    buf[:left] = buf[used : self._rlen]  # same-size move: the buffer is exported now
                self._rlen = left
                if not left and len(buf) > _READ_SIZE:
                    self._shrink = True  # a big frame is done: give the memory back at the next read
        except ProtocolError as e:
            log.error("%s: protocol error: %s", self.server, e)
            self._fail(e)
        except Exception as e:  # a bug in a packet handler: drop the connection rather than hang
            log.exception("%s: error handling packet", self.server)
            self._fail(e)
        finally:
            self._corked -= 1
            if not self._corked:
                self.flush()

    def _parse(self, buf: bytearray, n: int) -> int:
        """Dispatch every complete frame in ``buf[:n]``; return the number of bytes consumed."""
        pos = self._skip_bytes(buf, n) if self._skip else 0
        self._need = 0
        on_packet = self._on_packet
        while not self._skip and n - pos >= HEADER_SIZE:
            # The header is validated before waiting for the body, so a bogus size never grows the buffer.
            magic, ptype, size = _unpack_header(buf, pos)
            if magic != RES and magic != REQ:
                raise ProtocolError(f"bad magic {magic!r}")
            argc = ARGC.get(ptype)
            if argc is None:
                raise ProtocolError(f"unknown packet type {ptype}")
            if size > self._max_job and ptype in _SKIPPABLE and self._on_oversized is not None:
                # Decided on the header alone: nothing of the body is buffered, parsed or copied.
                self._skip, self._skip_type, self._skip_size = size, ptype, size
                self._skip_head = bytearray()
                pos = self._skip_bytes(buf, n, pos + HEADER_SIZE)
                continue
            if size > self._max_packet:
                raise ProtocolError(f"packet of {size} bytes exceeds the {self._max_packet}-byte limit")
            start = pos + HEADER_SIZE
            end = start + size
            if end > n:
                self._need = end - pos  # get_buffer() makes room for the whole frame
                break
            if argc == 0:
                if size:
                    raise ProtocolError(f"packet type {ptype} takes no arguments, got {size} bytes")
                args: tuple[bytes, ...] = ()
            else:
                with memoryview(buf) as mv:
                    body = bytes(mv[start:end])  # the one copy of a (possibly 5 MB) body
                args = tuple(body.split(b"\0", argc - 1)) if argc > 1 else (body,)
                if len(args) != argc:
                    raise ProtocolError(f"packet type {ptype} needs {argc} arguments, got {len(args)}")
            pos = end
            on_packet(ptype, args)  # (type, args): no Packet object on the hot path
            if self.closed:
                break
        return pos

    def _skip_bytes(self, buf: bytearray, n: int, pos: int = 0) -> int:
        """Discard what is here of an oversized packet; report it once the last byte has gone by."""
        take = min(self._skip, n - pos)
        room = _SKIP_HEAD - len(self._skip_head)
        if room > 0:
            self._skip_head += buf[pos : pos + min(room, take)]
        self._skip -= take
        pos += take
        if not self._skip and self._on_oversized is not None:
            self._on_oversized(self._skip_type, bytes(self._skip_head), self._skip_size)
        return pos

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
        lost = ConnectionLost(f"{self.server}: {exc}" if exc else f"{self.server}: connection closed by server")
        self._wake_drain(lost)
        self._shutdown(lost)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain(None)

    # --- sending ------------------------------------------------------------------------------

    def send(self, ptype: int, *args: bytes) -> None:
        """Write a packet now, or at uncork() / the end of the current read when corked."""
        if self.closed:
            raise ConnectionLost(f"{self.server}: connection is closed")
        if not args:
            self._wbuf.append(_EMPTY[ptype])
        elif len(args) > 1 and len(args[-1]) > _BIG:
            # Big payload: header+small args and the payload as separate buffers (no concatenation here).
            head = b"\0".join(args[:-1]) + b"\0"
            self._wbuf.append(encode_header(ptype, len(head) + len(args[-1])) + head)
            self._wbuf.append(args[-1])
            self._wbig = True
        else:
            body = b"\0".join(args)
            self._wbuf.append(encode_header(ptype, len(body)) + body)
        if not self._corked:
            self.flush()

    def cork(self) -> None:
        """Hold sends until the matching uncork(), so several packets leave in one write."""
        self._corked += 1

    def uncork(self) -> None:
        self._corked -= 1
        if not self._corked:
            self.flush()

    def flush(self) -> None:
        if not self._wbuf or self.closed:
            return
        buf, self._wbuf = self._wbuf, []
        assert self._transport is not None
        try:
            if len(buf) == 1:
                self._transport.write(buf[0])
            elif not self._wbig:
                self._transport.write(b"".join(buf))  # one syscall for a batch of small packets
            else:
                self._wbig = False
                for b in buf:
                    self._transport.write(b)
        except (OSError, RuntimeError) as e:
            self._fail(ConnectionLost(f"{self.server}: {e}"))

    @property
    def write_paused(self) -> bool:
        return self._paused

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above the high-water mark."""
        if not self._paused or self.closed:
            return
        if self._drain_waiter is None:
            self._drain_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain_waiter)

    async def send_and_drain(self, ptype: int, *args: bytes) -> None:
        """send(), then wait while the write buffer is full (for large payloads)."""
        self.send(ptype, *args)
        if self._paused:
            await self.drain()

    def _wake_drain(self, exc: BaseException | None) -> None:
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            if exc is None:
                w.set_result(None)
            else:
                w.set_exception(exc if isinstance(exc, ConnectionLost) else ConnectionLost(str(exc)))
                w.exception()  # retrieved: nobody may be waiting any more

    # --- closing ------------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """Drop the connection now (no flush), reporting ``exc`` to on_close: a peer that stopped answering."""
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._shutdown(exc)
        if self._transport is not None:
            self._transport.abort()

    def _shutdown(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._wbuf.clear()
        if self._transport is not None:
            self._transport.close()
        try:
            self._on_close(exc)
        except Exception:
            log.exception("%s: on_close callback failed", self.server)

    async def close(self) -> None:
        if not self.closed:
            self.flush()
        self._shutdown(ConnectionLost(f"{self.server}: connection closed"))
        if not self._lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), 1.0)
            except TimeoutError:
                if self._transport is not None:
                    self._transport.abort()

    def abort(self) -> None:
        """Close at once without flushing (a test / drain-deadline helper)."""
        if self._transport is not None:
            self._transport.abort()
