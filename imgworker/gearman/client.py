"""Asyncio Gearman client: foreground/background submits routed by job handle, round robin + failover."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .connection import Connection
from .errors import ConnectionLost, GearmanError, GearmanTimeout, JobError, JobFailed, NoServerAvailable
from .protocol import DEFAULT_MAX_PACKET, P

log = logging.getLogger(__name__)

Priority = Literal["normal", "high", "low"]
# gearmand answers SUBMIT_JOB* with JOB_CREATED at once; a server silent this long is taken for stopped
# (SIGSTOP, wedged: its kernel still ACKs, so TCP keepalive never notices) and its connection dropped.
REQUEST_TIMEOUT_S = 10.0
# A server that stopped answering is tried last for this long, so every submit does not wait on it again.
QUARANTINE_S = 30.0
_FG = {"normal": P.SUBMIT_JOB, "high": P.SUBMIT_JOB_HIGH, "low": P.SUBMIT_JOB_LOW}
_BG = {"normal": P.SUBMIT_JOB_BG, "high": P.SUBMIT_JOB_HIGH_BG, "low": P.SUBMIT_JOB_LOW_BG}


@dataclass(frozen=True, slots=True)
class JobStatus:
    known: bool
    running: bool
    numerator: int
    denominator: int


@dataclass(slots=True, eq=False)
class _Waiter:
    """A foreground job waiting for its result."""

    future: asyncio.Future[bytes]
    on_status: Callable[[int, int], object] | None = None
    on_data: Callable[[bytes], object] | None = None
    on_warning: Callable[[bytes], object] | None = None
    # Where JOB_CREATED filed it, so a submit that gives up (timeout, cancel) can take it out again:
    # otherwise it stays in ``jobs`` until a WORK_COMPLETE that may never come (no worker for the function).
    owner: _ClientConn | None = None
    handle: str | None = None

    def forget(self) -> None:
        cc, h = self.owner, self.handle
        if cc is None or h is None:
            return
        self.owner = None
        ws = cc.jobs.get(h)
        if ws is None:
            return
        rest = [w for w in ws if w is not self]
        if rest:
            cc.jobs[h] = rest
        else:
            del cc.jobs[h]


class _ClientConn:
    """A connection plus the routing tables for what is outstanding on it."""

    def __init__(self, server: str, request_timeout: float | None = None,
                 on_stall: Callable[[str], None] | None = None) -> None:
        self.server = server
        self.request_timeout = request_timeout
        self.on_stall = on_stall
        self.conn: Connection | None = None
        # Answer watchdog: when ``pending`` last went from empty to not empty; armed while anything is pending.
        self.asked_at = 0.0
        self._watch: asyncio.TimerHandle | None = None
        # Responses answered in request order (JOB_CREATED, OPTION_RES, ERROR): FIFO of
        # (future-or-None, waiter-or-None). The waiter is registered under its handle the moment JOB_CREATED
        # is read, before any WORK_* for that handle can be processed. A foreground submit has no future: it
        # only waits for its result, so JOB_CREATED wakes nobody (one event-loop pass less per job).
        self.pending: deque[tuple[asyncio.Future[object] | None, _Waiter | None]] = deque()
        self.jobs: dict[str, list[_Waiter]] = {}
        self.status: dict[str, list[asyncio.Future[JobStatus]]] = {}

    def expect(self, entry: tuple[asyncio.Future[object] | None, _Waiter | None]) -> None:
        """Queue a request's answer slot; the watchdog drops the connection if answers stop coming."""
        if not self.pending:
            self.asked_at = time.monotonic()
        self.pending.append(entry)
        if self._watch is None and self.request_timeout is not None:
            self._watch = asyncio.get_running_loop().call_later(self.request_timeout, self._check)

    def _check(self) -> None:
        self._watch = None
        conn, timeout = self.conn, self.request_timeout
        if conn is None or conn.closed or not self.pending or timeout is None:
            return
        waited = time.monotonic() - max(self.asked_at, conn.last_rx)
        if waited < timeout:
            self._watch = asyncio.get_running_loop().call_later(timeout - waited, self._check)
            return
        log.warning("%s: no answer for %.0f s (server stopped?): connection dropped", self.server, waited)
        if self.on_stall is not None:
            self.on_stall(self.server)
        conn.fail(GearmanTimeout(f"no answer from the job server for {timeout:g} s"))

    def on_packet(self, t: int, args: tuple[bytes, ...]) -> None:
        if t == P.JOB_CREATED:
            fut, waiter = self.pending.popleft()
            handle = args[0].decode()
            if waiter is not None and not waiter.future.done():
                waiter.owner, waiter.handle = self, handle
                ws = self.jobs.get(handle)
                if ws is None:
                    self.jobs[handle] = [waiter]
                else:
                    ws.append(waiter)  # same unique submitted twice: gearmand coalesces to one handle
            if fut is not None and not fut.done():
                fut.set_result(handle)
        elif t == P.WORK_COMPLETE or t == P.WORK_FAIL or t == P.WORK_EXCEPTION:
            h = args[0].decode()
            for w in self.jobs.pop(h, ()):
                if w.future.done():
                    continue
                if t == P.WORK_COMPLETE:
                    w.future.set_result(args[1])
                elif t == P.WORK_FAIL:
                    w.future.set_exception(JobFailed(h))
                else:
                    w.future.set_exception(JobError(h, args[1].decode(errors="replace")))
        elif t == P.WORK_STATUS or t == P.WORK_DATA or t == P.WORK_WARNING:
            for w in self.jobs.get(args[0].decode(), ()):
                self._callback(w, t, args)
        elif t == P.STATUS_RES:
            hb, known, running, num, den = args
            st = JobStatus(known == b"1", running == b"1", _int(num), _int(den))
            for f in self.status.pop(hb.decode(), ()):
                if not f.done():
                    f.set_result(st)
        elif t == P.OPTION_RES:
            fut, _ = self.pending.popleft()
            if fut is not None and not fut.done():
                fut.set_result(args[0].decode())
        elif t == P.ERROR:
            err = GearmanError(f"{self.server}: server error {args[0].decode()}: {args[1].decode()}")
            if self.pending:
                fut, waiter = self.pending.popleft()
                if fut is not None and not fut.done():
                    fut.set_exception(err)
                if waiter is not None and not waiter.future.done():
                    waiter.future.set_exception(err)
            else:
                log.error("%s", err)
        else:
            log.debug("%s: ignoring packet type %d", self.server, t)

    @staticmethod
    def _callback(w: _Waiter, t: int, args: tuple[bytes, ...]) -> None:
        try:
            if t == P.WORK_STATUS:
                if w.on_status:
                    w.on_status(_int(args[1]), _int(args[2]))
            elif t == P.WORK_DATA:
                if w.on_data:
                    w.on_data(args[1])
            elif w.on_warning:
                w.on_warning(args[1])
        except Exception:
            log.exception("job callback failed")

    def on_close(self, exc: BaseException | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        err = ConnectionLost(f"{self.server}: connection lost while waiting ({exc})")
        for fut, w in self.pending:
            if w is not None and not w.future.done():
                w.future.set_exception(err)
            if fut is not None and not fut.done():
                fut.set_exception(err)
        self.pending.clear()
        for ws in self.jobs.values():
            for w in ws:
                if not w.future.done():
                    w.future.set_exception(err)
        self.jobs.clear()
        for fs in self.status.values():
            for f in fs:
                if not f.done():
                    f.set_exception(err)
        self.status.clear()


def _unique(unique: str | None) -> bytes:
    """A fresh unique id when none is given (as libgearman does): a worker can then ask the server about
    the job (GET_STATUS_UNIQUE: is anyone waiting?), and no two such jobs are ever coalesced."""
    return (uuid.uuid4().hex if unique is None else unique).encode()


def _int(b: bytes) -> int:
    try:
        return int(b)
    except ValueError:
        return 0


class Client:
    def __init__(
        self,
        servers: Sequence[str],
        *,
        client_id: str | None = None,
        connect_timeout: float = 5.0,
        max_packet: int = DEFAULT_MAX_PACKET,
        request_timeout: float | None = REQUEST_TIMEOUT_S,
    ) -> None:
        """``request_timeout``: longest wait for JOB_CREATED (or any answer the server owes) with nothing heard
        from it; then its connection is dropped, a background submit fails over to the next server, and that
        server is tried last for QUARANTINE_S. None: wait forever."""
        if not servers:
            raise ValueError("at least one server is required")
        self.servers = list(servers)
        self.client_id = client_id
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._quarantine: dict[str, float] = {}  # server -> monotonic time until which it is tried last
        self.max_packet = max_packet
        self._conns: dict[str, _ClientConn] = {}
        self._connecting: dict[str, asyncio.Task[_ClientConn]] = {}
        self._rr = 0
        self._closed = False

    async def submit(
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
        """Run a foreground job and return its result."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), on_status, on_data, on_warning)
        try:
            if timeout is None:
                await self._submit_fg(_FG[priority], function, data, unique, waiter)
                return await waiter.future
            async with asyncio.timeout(timeout):
                await self._submit_fg(_FG[priority], function, data, unique, waiter)
                return await waiter.future
        except TimeoutError as e:
            raise GearmanTimeout(f"job {function!r} did not finish within {timeout}s") from e
        finally:
            # Gave up (timeout, cancel: awaiting it cancelled the future) or finished: either way it must
            # leave the routing table; after WORK_* it already has and forget() is a no-op.
            waiter.forget()
            if not waiter.future.done():
                waiter.future.cancel()
            elif not waiter.future.cancelled():
                waiter.future.exception()  # mark retrieved: no "never retrieved" noise

    async def submit_background(
        self, function: str, data: bytes, *, unique: str | None = None, priority: Priority = "normal"
    ) -> str:
        """Queue a background job; returns 'host:port/handle' (the server part routes get_status)."""
        cc, handle = await self._submit_bg(_BG[priority], function, data, unique)
        return f"{cc.server}/{handle}"

    async def get_status(self, handle: str, *, timeout: float | None = None) -> JobStatus:
        server, sep, h = handle.partition("/")
        if not sep:
            server, h = self.servers[0], handle
        cc = await self._get_conn(server)
        assert cc.conn is not None
        fut: asyncio.Future[JobStatus] = asyncio.get_running_loop().create_future()
        cc.status.setdefault(h, []).append(fut)
        cc.conn.send(P.GET_STATUS, h.encode())
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as e:
            raise GearmanTimeout(f"no status for {handle} within {timeout}s") from e
        finally:
            if not fut.done() or fut.cancelled():  # gave up: drop it so unanswered requests do not pile up
                rest = [f for f in cc.status.get(h, ()) if f is not fut]
                if rest:
                    cc.status[h] = rest
                else:
                    cc.status.pop(h, None)

    async def close(self) -> None:
        self._closed = True
        for t in self._connecting.values():
            t.cancel()
        for cc in list(self._conns.values()):
            if cc.conn is not None:
                await cc.conn.close()
        self._conns.clear()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- internals ----------------------------------------------------------------------------

    async def _submit_fg(
        self, ptype: int, function: str, data: bytes, unique: str | None, waiter: _Waiter
    ) -> None:
        """Send a foreground job; JOB_CREATED registers ``waiter`` by handle, ERROR fails its future."""
        cc = self._live_next() or await self._pick()
        conn = cc.conn
        assert conn is not None
        # Append before sending: JOB_CREATED cannot arrive before this line runs (single-threaded loop).
        cc.expect((None, waiter))
        conn.send(ptype, function.encode(), _unique(unique), data)
        if conn.write_paused:
            await conn.drain()

    async def _submit_bg(
        self, ptype: int, function: str, data: bytes, unique: str | None
    ) -> tuple[_ClientConn, str]:
        """Queue on the next server; one that drops the connection or stops answering before JOB_CREATED hands
        the submit to the next one (at least once: a server that stopped may still hold the job when it wakes;
        the same unique id lets an idempotent job run twice harmlessly)."""
        key = _unique(unique)
        tries = len(self.servers)
        for attempt in range(tries):
            cc = self._live_next() or await self._pick()
            assert cc.conn is not None
            fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            # Append before sending: JOB_CREATED cannot arrive before this line runs (single-threaded loop).
            cc.expect((fut, None))
            try:
                await cc.conn.send_and_drain(ptype, function.encode(), key, data)
                handle = await fut
            except ConnectionLost as e:
                if attempt + 1 >= tries:
                    raise
                log.warning("%s: background submit not acknowledged (%s); trying the next server", cc.server, e)
                continue
            assert isinstance(handle, str)
            return cc, handle
        raise AssertionError("unreachable")

    def _live_next(self) -> _ClientConn | None:
        """Fast path of _pick(): the next server in the rotation if it is already connected."""
        if self._closed:
            return None
        server = self.servers[self._rr]
        cc = self._conns.get(server)
        if cc is None or cc.conn is None or cc.conn.closed or (self._quarantine and server in self._quarantine):
            return None
        self._rr = (self._rr + 1) % len(self.servers)
        return cc

    def _stalled(self, server: str) -> None:
        self._quarantine[server] = time.monotonic() + QUARANTINE_S

    async def _pick(self) -> _ClientConn:
        """Round robin over servers, skipping ones that refuse connections; ones that stopped answering last."""
        n = len(self.servers)
        start = self._rr
        self._rr = (self._rr + 1) % n
        errors = []
        now = time.monotonic()
        for server, until in list(self._quarantine.items()):
            if until <= now:
                del self._quarantine[server]
        order = [self.servers[(start + i) % n] for i in range(n)]
        order.sort(key=lambda s: s in self._quarantine)  # stable: the rotation holds among the others
        for server in order:
            try:
                return await self._get_conn(server)
            except (TimeoutError, OSError, ConnectionLost) as e:
                if isinstance(e, TimeoutError):  # connected but no answer to OPTION_REQ: stopped, not down
                    self._stalled(server)
                errors.append(f"{server}: {e or type(e).__name__}")
        raise NoServerAvailable("no gearman server available: " + "; ".join(errors))

    async def _get_conn(self, server: str) -> _ClientConn:
        if self._closed:
            raise GearmanError("client is closed")
        cc = self._conns.get(server)
        if cc is not None and cc.conn is not None and not cc.conn.closed:
            return cc
        task = self._connecting.get(server)
        if task is None:
            # One connect per server even when 1,000 submits arrive together.
            task = asyncio.get_running_loop().create_task(self._connect(server))
            self._connecting[server] = task
            task.add_done_callback(lambda _t: self._connecting.pop(server, None))
        return await asyncio.shield(task)

    async def _connect(self, server: str) -> _ClientConn:
        cc = _ClientConn(server, self.request_timeout, self._stalled)
        cc.conn = await Connection.open(
            server, cc.on_packet, cc.on_close, timeout=self.connect_timeout, max_packet=self.max_packet
        )
        if self.client_id:
            cc.conn.send(P.SET_CLIENT_ID, self.client_id.encode())
        opt: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        cc.expect((opt, None))
        cc.conn.send(P.OPTION_REQ, b"exceptions")
        try:
            await asyncio.wait_for(opt, self.connect_timeout)
        except BaseException:
            await cc.conn.close()
            raise
        self._conns[server] = cc
        return cc
