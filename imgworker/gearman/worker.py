"""Asyncio Gearman worker: registers with every server, runs up to ``max_jobs`` handlers at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .connection import Connection
from .eager import eager_task
from .errors import ConnectionLost
from .job import Job, StatusWaiters
from .protocol import P

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[bytes]]
# What to answer for a job whose packet was over the size limit (its body was never read): function name ->
# WORK_COMPLETE body, or None for WORK_FAIL.
OversizedHandler = Callable[[str, int], bytes | None]  # (function, payload bytes) -> the answer, or WORK_FAIL
# Room for a job assignment's handle, function name and unique id beside its payload: an assignment bigger than
# max_job_data + this is refused from its header alone (the exact payload size is checked by the handler).
ASSIGN_HEAD_ROOM = 4096
# A connection that ends sooner than this after it was made does not reset the reconnect backoff: a server
# that drops us at once, every time (a job we cannot take, a protocol mismatch), must not be hammered.
STABLE_S = 5.0
# gearmand answers GRAB_JOB and ECHO_REQ at once; this long without an answer (and without any other byte from it)
# and the server is taken for stopped (SIGSTOP, wedged): its kernel still ACKs, so TCP keepalive never notices.
REQUEST_TIMEOUT_S = 15.0


@dataclass(slots=True)
class _Ability:
    handler: Handler
    timeout: int | None


class _Session:
    """Per-server state: the live connection and its grab/sleep state."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.conn: Connection | None = None
        self.registered = False
        self.asleep = False
        self.grabs = 0  # GRAB_JOB_UNIQ sent, answer not yet received
        self.active = 0  # jobs from this connection still running
        # gearmand re-queues a worker's running jobs when it drops their function (CANT_DO,
        # RESET_ABILITIES), so those are deferred until the connection has no job running.
        self.cant_do: set[str] = set()
        self.reset_pending = False
        self.lost = asyncio.Event()
        # Answer watchdog (_check_answering): when the oldest request still unanswered was sent (GRAB_JOB_UNIQ,
        # or the ECHO_REQ probe of an idle connection), and whether the server is taken for stopped.
        self.asked_at = 0.0
        self.echo_pending = False
        self.unresponsive = False
        self.status_waiters: StatusWaiters = {}  # Job.is_background() questions awaiting STATUS_RES_UNIQUE


class Worker:
    def __init__(
        self,
        servers: Sequence[str],
        *,
        client_id: str | None = None,
        max_jobs: int = 1,
        reconnect_max_delay: float = 30.0,
        on_connection_change: Callable[[str, bool], None] | None = None,
        on_oversized: OversizedHandler | None = None,
        max_job_data: int | None = None,
        request_timeout: float = REQUEST_TIMEOUT_S,
        on_unresponsive: Callable[[str, bool], None] | None = None,
    ) -> None:
        if not servers:
            raise ValueError("at least one server is required")
        if max_jobs < 1:
            raise ValueError("max_jobs must be >= 1")
        self.servers = list(servers)
        self.client_id = client_id or f"{socket.gethostname()}-{os.getpid()}"
        self.max_jobs = max_jobs
        self.reconnect_max_delay = reconnect_max_delay
        self.on_connection_change = on_connection_change
        self.on_oversized = on_oversized
        # Payloads over this are skipped unread and handed to on_oversized (None: only over the packet limit).
        self.max_job = max_job_data + ASSIGN_HEAD_ROOM if max_job_data is not None else None
        self.request_timeout = request_timeout
        self.on_unresponsive = on_unresponsive
        self._held = 0  # slots not to fill (see hold())
        self._abilities: dict[str, _Ability] = {}
        self._retiring: dict[str, _Ability] = {}
        self._sessions = [_Session(s) for s in self.servers]
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._unsolicited: collections.deque[Job] = collections.deque()  # assigned unasked, waiting for a slot
        self._unasked = 0  # answers to GRABs never sent
        self._ended = 0  # _run_job calls that reached their end (tells _start_job a job finished eagerly)
        self._draining = False
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self.jobs_done = 0
        self.jobs_failed = 0

    # --- public API ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def connected(self) -> list[str]:
        return [s.server for s in self._sessions
                if s.registered and not s.unresponsive and s.conn and not s.conn.closed]

    @property
    def unresponsive(self) -> list[str]:
        """Servers that stopped answering requests (the worker reconnects to them with backoff)."""
        return [s.server for s in self._sessions if s.unresponsive]

    @property
    def held(self) -> int:
        return self._held

    def hold(self, slots: int) -> None:
        """Keep ``slots`` of ``max_jobs`` unfilled (0 frees them): for slots whose thread is stuck past its job,
        or a process that cannot open files. Jobs already running are not touched."""
        self._held = max(0, min(slots, self.max_jobs))
        self._fill()

    def register(self, name: str, handler: Handler, timeout: int | None = None) -> None:
        self._abilities[name] = _Ability(handler, timeout)
        for s in self._sessions:
            if s.registered and s.conn and not self._draining:
                self._send_can_do(s.conn, name)
                self._fill()

    def unregister(self, name: str) -> None:
        """Stop announcing ``name``; jobs of it already assigned still run with the old handler."""
        ab = self._abilities.pop(name, None)
        if ab is not None:
            self._retiring[name] = ab
        for s in self._sessions:
            if s.registered and s.conn and not s.conn.closed:
                s.cant_do.add(name)
                self._flush_deferred(s)

    async def run(self) -> None:
        """Serve until close() is called."""
        self._stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        for s in self._sessions:
            name = f"gearman-worker-{s.server}"
            t = asyncio.get_running_loop().create_task(self._session_loop(s), name=name)
            self._tasks.add(t)
        try:
            await self._stopped.wait()
        finally:
            await self._shutdown()

    async def wait_connected(self, n: int | None = None, timeout: float = 10.0) -> None:
        """Wait until ``n`` (default: all) servers are connected and registered (for tests, startup)."""
        want = len(self.servers) if n is None else n
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.connected) < want:
            if loop.time() > deadline:
                raise TimeoutError(f"only {self.connected} connected after {timeout}s")
            await asyncio.sleep(0.01)

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop taking jobs (RESET_ABILITIES everywhere), wait for jobs in flight; True if all finished."""
        self._draining = True  # no GRAB is sent from now on, so gearmand assigns nothing new
        for s in self._sessions:
            if s.conn and not s.conn.closed:
                s.reset_pending = True
                self._flush_deferred(s)
        if self._in_flight == 0:
            return True
        idle = self._idle
        assert idle is not None
        try:
            await asyncio.wait_for(idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Close connections; gearmand hands jobs still in flight to other workers."""
        self._closed = True
        if self._stopped is not None:
            self._stopped.set()
        await self._shutdown()

    # --- connection management ----------------------------------------------------------------

    async def _session_loop(self, s: _Session) -> None:
        attempt = 0
        while not self._closed:
            try:
                attempt = await self._session_once(s, attempt)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let one unexpected error end reconnecting to this server for the life of the process.
                log.exception("%s: session failed; reconnecting", s.server)
                s.registered = False
                if s.conn is not None and not s.conn.closed:
                    await s.conn.close()
                attempt += 1
                await asyncio.sleep(min(self.reconnect_max_delay, 0.1 * 2 ** min(attempt, 20)))

    async def _session_once(self, s: _Session, attempt: int) -> int:
        """One connection's life: connect (or back off once), register, serve until lost. Returns attempts."""
        if not self._closed:
            s.lost.clear()
            try:
                conn = await Connection.open(
                    s.server, functools.partial(self._on_packet, s), functools.partial(self._on_lost, s),
                    on_oversized=functools.partial(self._on_oversized, s), max_job=self.max_job,
                )
            except (TimeoutError, OSError) as e:
                attempt += 1
                delay = min(self.reconnect_max_delay, 0.1 * 2 ** min(attempt, 20))
                delay *= random.uniform(0.5, 1.0)  # jitter: a fleet must not reconnect in lockstep
                log.warning("%s: connect failed (%s); retry in %.2fs", s.server, e, delay)
                await asyncio.sleep(delay)
                return attempt
            connected_at = asyncio.get_running_loop().time()
            s.conn, s.grabs, s.asleep, s.active = conn, 0, False, 0
            s.echo_pending = False
            s.cant_do.clear()
            s.reset_pending = False
            conn.cork()  # SET_CLIENT_ID, every CAN_DO and the first GRABs in one write
            try:
                conn.send(P.SET_CLIENT_ID, self.client_id.encode())
                if not self._draining:
                    for name in self._abilities:
                        self._send_can_do(conn, name)
                s.registered = True
                log.info("%s: connected and registered", s.server)
                self._notify(s.server, True)
                if s.unresponsive:  # no grab until it answers this probe, or its grabs hold slots again
                    s.echo_pending, s.asked_at = True, time.monotonic()
                    conn.send(P.ECHO_REQ, b"imgworker-probe")
                self._fill()
            finally:
                conn.uncork()
            # Wait for the loss; also look at the connection itself now and then, so a close that somehow
            # bypassed the callback still leads to a reconnect instead of a silent, unregistered worker, and
            # whether the server still answers (a stopped one is dropped: its grabs would hold job slots forever).
            stalled = False
            tick = min(5.0, max(0.05, self.request_timeout / 4))
            while not s.lost.is_set() and not conn.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(s.lost.wait(), tick)
                if not s.lost.is_set() and not conn.closed and not self._check_answering(s, conn):
                    stalled = True
                    conn.fail(ConnectionLost(f"{s.server}: no answer for {self.request_timeout:g} s"))
            if not stalled and asyncio.get_running_loop().time() - connected_at >= STABLE_S:
                return 0
            # Lost at once, or stopped answering: back off as if the connect had failed, or a server that drops
            # us every time gets thousands of reconnects a second (a stopped one accepts every connect).
            attempt += 1
            if not self._closed:
                delay = min(self.reconnect_max_delay, 0.1 * 2 ** min(attempt, 20)) * random.uniform(0.5, 1.0)
                log.warning("%s: connection lasted under %.0f s; reconnect in %.2fs", s.server, STABLE_S, delay)
                await asyncio.sleep(delay)
        return attempt

    def _check_answering(self, s: _Session, conn: Connection) -> bool:
        """False when a request has gone unanswered for ``request_timeout`` with nothing else heard from the
        server; an idle connection is probed with ECHO_REQ so that a stopped server is noticed there too."""
        now = time.monotonic()
        quiet = now - conn.last_rx
        if s.grabs > 0 or s.echo_pending:
            if min(quiet, now - s.asked_at) < self.request_timeout:
                return True
            if not s.unresponsive:
                s.unresponsive = True
                log.warning("%s: no answer to a request for %.0f s (server stopped?): marked unresponsive, its "
                            "job slots freed for the other servers; reconnecting", s.server, self.request_timeout)
                self._notify_unresponsive(s.server, True)
            return False
        if quiet >= self.request_timeout:
            s.echo_pending, s.asked_at = True, now
            conn.send(P.ECHO_REQ, b"imgworker-probe")
        return True

    def _answering(self, s: _Session) -> None:
        s.unresponsive = False
        log.warning("%s: answering again", s.server)
        self._notify_unresponsive(s.server, False)
        self._fill()

    def _send_can_do(self, conn: Connection, name: str) -> None:
        ab = self._abilities[name]
        if ab.timeout is None:
            conn.send(P.CAN_DO, name.encode())
        else:
            conn.send(P.CAN_DO_TIMEOUT, name.encode(), str(ab.timeout).encode())

    def _flush_deferred(self, s: _Session) -> None:
        if s.active or s.conn is None or s.conn.closed:
            return
        if s.reset_pending:
            s.reset_pending = False
            s.cant_do.clear()
            s.conn.send(P.RESET_ABILITIES)
        for name in s.cant_do:
            s.conn.send(P.CANT_DO, name.encode())
        s.cant_do.clear()

    def _on_lost(self, s: _Session, exc: BaseException | None) -> None:
        was = s.registered
        s.registered = False
        s.grabs = 0
        s.lost.set()
        for waiting in s.status_waiters.values():  # no answer will come on this connection
            for fut in waiting:
                if not fut.done():
                    fut.set_result(-1)
        if was:
            if not self._closed:
                log.warning("%s: connection lost (%s)", s.server, exc)
            self._notify(s.server, False)
        self._fill()  # the grabs it held are free for the other servers now

    def _notify(self, server: str, up: bool) -> None:
        self._tell(self.on_connection_change, server, up)

    def _notify_unresponsive(self, server: str, unresponsive: bool) -> None:
        self._tell(self.on_unresponsive, server, unresponsive)

    @staticmethod
    def _tell(callback: Callable[[str, bool], None] | None, server: str, flag: bool) -> None:
        if callback is not None:
            try:
                callback(server, flag)
            except Exception:
                log.exception("%s callback failed", getattr(callback, "__name__", "connection"))

    async def _shutdown(self) -> None:
        self._closed = True
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._jobs):
            t.cancel()
        for s in self._sessions:
            if s.conn is not None:
                await s.conn.close()
        await asyncio.gather(*self._tasks, *self._jobs, return_exceptions=True)
        self._tasks.clear()

    # --- job flow -----------------------------------------------------------------------------

    def _fill(self) -> None:
        """Send grabs on awake connections while jobs in flight + grabs outstanding < max_jobs."""
        if self._draining or self._closed or not self._abilities:
            return
        sessions = self._sessions
        if len(sessions) == 1:  # the common case, kept cheap: it runs after every job
            s = sessions[0]
            budget = self.max_jobs - self._held - self._in_flight - s.grabs
            # A pending CANT_DO waits for the connection to go idle: grabbing more would postpone it forever.
            if (budget > 0 and s.registered and not s.asleep and not s.cant_do and not s.unresponsive and s.conn
                    and not s.conn.closed):
                if not s.grabs:
                    s.asked_at = time.monotonic()
                s.grabs += budget
                for _ in range(budget):
                    s.conn.send(P.GRAB_JOB_UNIQ)
            return
        budget = self.max_jobs - self._held - self._in_flight - sum(s.grabs for s in sessions)
        if budget <= 0:
            return
        # Rotate the start so one busy server does not starve the others.
        if len(sessions) > 1:
            k = random.randrange(len(sessions))
            sessions = sessions[k:] + sessions[:k]
        progress = True
        while budget > 0 and progress:
            progress = False
            for s in sessions:
                if (budget > 0 and s.registered and not s.asleep and not s.cant_do and not s.unresponsive
                        and s.conn and not s.conn.closed):
                    if not s.grabs:
                        s.asked_at = time.monotonic()
                    s.conn.send(P.GRAB_JOB_UNIQ)
                    s.grabs += 1
                    budget -= 1
                    progress = True

    def _on_packet(self, s: _Session, t: int, args: tuple[bytes, ...]) -> None:
        if s.unresponsive:
            self._answering(s)
        if t == P.JOB_ASSIGN_UNIQ:
            solicited = self._grab_answered(s)
            handle, fn, unique, data = args
            assert s.conn is not None
            s.active += 1
            self._assigned(s, solicited, Job(s.conn, handle.decode(), fn.decode(), unique.decode(errors="replace"),
                                             data, s.status_waiters))
        elif t == P.NO_JOB:
            self._grab_answered(s)
            if s.grabs <= 0 and not s.asleep:
                s.grabs = 0
                s.asleep = True
                assert s.conn is not None
                s.conn.send(P.PRE_SLEEP)  # gearmand answers NOOP at once if work is already queued
                # The freed grab slot goes to a server not yet asked: with max_jobs < servers, a server
                # that never got a GRAB is neither grabbing nor asleep, so gearmand never wakes us for it.
                self._fill()
        elif t == P.NOOP:
            s.asleep = False
            self._fill()
        elif t == P.JOB_ASSIGN:  # only if a server ignores GRAB_JOB_UNIQ; keep working anyway
            solicited = self._grab_answered(s)
            handle, fn, data = args
            assert s.conn is not None
            s.active += 1
            self._assigned(s, solicited, Job(s.conn, handle.decode(), fn.decode(), "", data))
        elif t == P.STATUS_RES_UNIQUE:
            unique, known, _running, _num, _den, clients = args
            waiting = s.status_waiters.get(unique.decode(errors="replace"))
            if waiting:
                fut = waiting.pop(0)
                if not fut.done():
                    fut.set_result(int(clients) if known == b"1" and clients.isdigit() else -1)
        elif t == P.ECHO_RES:
            s.echo_pending = False
        elif t == P.ERROR:
            log.error("%s: server error %s: %s", s.server, args[0], args[1])
        else:
            log.debug("%s: ignoring packet type %d", s.server, t)

    def _grab_answered(self, s: _Session) -> bool:
        """One outstanding GRAB answered (a job or NO_JOB); False when none was outstanding: a server that
        sends what nobody asked for must not drive the count negative (it would buy more grabs than slots)."""
        if s.grabs > 0:
            s.grabs -= 1
            return True
        self._unasked += 1
        if self._unasked in (1, 10, 100) or not self._unasked % 10000:  # a hostile server must not flood the log
            log.warning("%s: an answer to a GRAB that was not sent (%d so far); the count of grabs stays at 0",
                        s.server, self._unasked)
        return False

    def _assigned(self, s: _Session, solicited: bool, job: Job) -> None:
        """Start a job, unless it came unasked and no slot is free: then it waits for one (at most max_jobs
        wait; beyond that it is answered WORK_FAIL at once rather than held without bound)."""
        if solicited or self._free_slots() > 0:
            self._start_job(job)
        elif len(self._unsolicited) < self.max_jobs:
            self._unsolicited.append(job)
        else:
            log.error("%s: job %s assigned unasked with no free slot: refused", s.server, job.handle[:200])
            s.active -= 1
            job._conn.send(P.WORK_FAIL, job.handle.encode())
            self.jobs_failed += 1

    def _free_slots(self) -> int:
        return self.max_jobs - self._held - self._in_flight - sum(x.grabs for x in self._sessions)

    def _on_oversized(self, s: _Session, ptype: int, head: bytes, size: int) -> None:
        """A job packet over the size limit, skipped unread: answer it once, so gearmand does not hand it out
        again and again (it re-queues a job whose worker dropped the connection)."""
        self._grab_answered(s)
        argc = 4 if ptype == P.JOB_ASSIGN_UNIQ else 3
        parts = head.split(b"\0", argc - 1)
        if len(parts) < 2 or s.conn is None or s.conn.closed:
            return
        handle, function = parts[0], parts[1].decode(errors="replace")
        # The payload's own size when the head holds every argument before it (it does, but for a giant unique).
        data_size = size - sum(len(p) + 1 for p in parts[:-1]) if len(parts) == argc else size
        log.error("%s: job %s (%s) has a payload of %d bytes, over the limit: refused unread", s.server,
                  handle.decode(errors="replace")[:200], function[:200], data_size)
        body = None
        if self.on_oversized is not None:
            try:
                body = self.on_oversized(function, data_size)
            except Exception:
                log.exception("on_oversized callback failed")
        if body is None:
            s.conn.send(P.WORK_FAIL, handle)
            self.jobs_failed += 1
        else:
            s.conn.send(P.WORK_COMPLETE, handle, body)
            self.jobs_done += 1
        self._fill()

    def _start_job(self, job: Job) -> None:
        self._in_flight += 1
        assert self._idle is not None
        self._idle.clear()
        # Eager: a handler that does not suspend completes here, inside the read callback, and its
        # WORK_COMPLETE + the next GRAB leave in that callback's single write (no event-loop pass).
        ended = self._ended
        task = eager_task(asyncio.get_running_loop(), self._run_job(job))
        if self._ended == ended and not task.done():
            # Still running: track it so close() can cancel it (a finished job needs no bookkeeping).
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def _run_job(self, job: Job) -> None:
        conn = job._conn
        try:
            ab = self._abilities.get(job.function) or self._retiring.get(job.function)
            if ab is None:
                raise LookupError(f"no handler registered for {job.function!r}")
            result = await ab.handler(job)
            if type(result) is not bytes and not isinstance(result, bytearray | memoryview):
                raise TypeError(f"handler returned {type(result).__name__}, expected bytes")
            ok = True
        except asyncio.CancelledError:
            # Worker closing: leave the job unanswered; gearmand re-queues it when the connection drops.
            self._job_done(conn)
            raise
        except Exception:
            log.exception("job %s (%s) failed", job.handle, job.function)
            ok = False
        conn.cork()  # the result, any deferred CANT_DO and the next GRAB leave in one write
        try:
            if conn.closed:
                log.warning("%s: connection lost before %s finished; result dropped", job.server, job.handle)
            elif ok:
                conn.send(P.WORK_COMPLETE, job.handle.encode(), result if type(result) is bytes else bytes(result))
                self.jobs_done += 1
            else:
                # Never WORK_EXCEPTION: gearmand 1.1.20 mangles it for clients without the exceptions option.
                conn.send(P.WORK_FAIL, job.handle.encode())
                self.jobs_failed += 1
        except ConnectionLost:
            pass
        try:
            self._job_done(conn)
            self._fill()
        finally:
            conn.uncork()
            self._ended += 1

    def _job_done(self, conn: Connection) -> None:
        for s in self._sessions:
            if s.conn is conn:
                s.active -= 1
                self._flush_deferred(s)
        self._in_flight -= 1
        while self._unsolicited and self._free_slots() > 0:
            job = self._unsolicited.popleft()
            if not job._conn.closed:  # a lost connection's jobs are gearmand's to hand out again
                self._start_job(job)
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()
