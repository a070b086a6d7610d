"""HTTP callbacks: a job's ``callback`` URL receives the result JSON, signed, when the job ends.

The worker POSTs from a few threads of its own, fed by a bounded queue, so a slow or dead receiver never holds
a job slot and never changes a job's result. Only hosts on ``--callback-allow`` are reached (anything else is
refused before the job runs, FORBIDDEN_PATH); the host is resolved once per delivery and every attempt connects
to that address (a DNS answer that changes between check and connect cannot redirect it); redirects are not
followed; timeouts are short. The signing key is never logged.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import heapq
import hmac
import http.client
import itertools
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from imgworker.core.callback_url import DEFAULT_PORTS, Target, parse_allow, parse_target
from imgworker.core.contract import Payload
from imgworker.core.errors import BadRequest, ForbiddenPath, redact
from imgworker.features import metrics
from imgworker.features.callback_address import IP, parse_ip, refusal

log = logging.getLogger("imgworker.features.callbacks")

SIGNATURE_HEADER = "X-Imgworker-Signature"
QUEUE_SIZE = 256  # callbacks queued, in backoff or in an attempt; beyond this one is given up at once
SENDERS = 8
PER_HOST = 2  # attempts at once to one host:port: a slow receiver holds at most this many threads
MAX_DELAY_S = 10.0


class CallbackPolicy:
    """Which callback URLs this worker may call: checked before a job does any work."""

    def __init__(self, allow: Iterable[str]) -> None:
        self.allowed = parse_allow(allow)
        # The exact addresses the operator listed: the one way past the address rule (callback_address.py).
        self.addresses = frozenset(ip for host, _ in self.allowed if (ip := parse_ip(host)) is not None)

    def check(self, url: Any) -> Target:
        target = parse_target(url)
        default = DEFAULT_PORTS[target.scheme]
        if (target.host, target.port) in self.allowed or (
            target.port == default and (target.host, None) in self.allowed
        ):
            return target
        if not self.allowed:
            raise ForbiddenPath("callbacks are not enabled on this worker (--callback-allow HOST[:PORT])")
        raise ForbiddenPath(f"callback host {target.host}:{target.port} is not on this worker's --callback-allow list")

    def precheck(self, payload: Payload) -> None:
        """JobRunner pre-check: refuse a job whose ``callback`` is malformed or not allowed."""
        url = payload.fields.get("callback")  # {} for a payload the contract refuses: it says why
        if url is not None:
            self.check(url)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to an address resolved beforehand; the Host header keeps the name."""

    def __init__(self, host: str, port: int, address: tuple[Any, ...], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address
        self.aborted = False

    def connect(self) -> None:
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._address)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        if self.aborted:  # the deadline passed during the connect: abort() found no socket to shut
            self.abort()

    def abort(self) -> None:
        """From another thread, at the attempt's deadline: a blocked send or read returns at once."""
        self.aborted = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw fd, even under TLS


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, host: str, port: int, address: tuple[Any, ...], timeout: float) -> None:
        super().__init__(host, port, address, timeout)
        self._context = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        # The certificate is checked against the name, not the pinned address.
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


class AddressRefused(OSError):
    """An allowed name resolved to an address no callback may reach."""


class DeadlinePassed(OSError):
    """An attempt ran past its total deadline (a receiver that drips its answer a byte at a time)."""


def resolve(target: Target, allowed: Iterable[IP] = ()) -> tuple[Any, ...]:
    """The address every attempt of one delivery connects to: the first the name resolves to that the address
    rule (callback_address.py) lets through, so a DNS record pointed at the metadata service, loopback or a
    translated form of them (``::ffff:169.254.169.254``) cannot be reached through an allowed name. An IP literal
    is checked by the same rule (it passes when listed: ``allowed`` holds the literals of --callback-allow)."""
    addresses: list[tuple[Any, ...]]
    if parse_ip(target.host) is not None:
        addresses = [(target.host, target.port)]
    else:
        addresses = [tuple(info[4][:2]) for info in socket.getaddrinfo(target.host, target.port,
                                                                       type=socket.SOCK_STREAM)]
    if not addresses:
        raise OSError(f"{target.host} does not resolve")
    reasons = []
    for address in addresses:
        ip = parse_ip(str(address[0]))
        why = "not an address" if ip is None else refusal(ip, allowed)
        if why is None:
            return address
        reasons.append(why)
    raise AddressRefused(f"{target.host} resolves only to addresses callbacks may not reach: {'; '.join(reasons)}")


@dataclass(slots=True)
class Delivery:
    target: Target
    body: bytes
    function: str
    payload: Payload  # the job's, as decoded once: its record is built from it if the callback is given up
    unique: str
    tries: int = 0  # attempts made so far
    address: tuple[Any, ...] | None = None  # resolved at the first attempt; every later one connects there
    ended: bool = False  # delivered, given up or recorded: set once, under the sender's lock


GiveUp = Callable[[Delivery, str, int], None]  # (delivery, reason, tries made); d.tries as well


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    final: bool  # no retry: delivered, a 3xx/4xx answer, a refused address, or the last try
    reason: str


class CallbackSender:
    """Background POSTs with retries; ``give_up`` hears of each callback that never got a 2xx.

    Every callback ends delivered, given up (``give_up``: 4xx, refused address, tries used up, queue full) or,
    when the worker stops, handed to ``give_up`` with its tries left (``close``). A sender thread makes one
    *attempt* at a time, never sleeps through a backoff (a delivery waiting for its retry holds no thread), and
    each attempt has a total deadline of ``timeout`` seconds (connect, send and the whole answer), so a receiver
    that drips its answer cannot hold a thread longer; at most ``per_host`` attempts go to one host:port at
    once, so one slow receiver cannot take every thread.
    """

    def __init__(
        self, policy: CallbackPolicy, secret: str, *, tries: int = 5, timeout: float = 5.0,
        backoff: float = 0.5, give_up: GiveUp | None = None, senders: int = SENDERS, per_host: int = PER_HOST,
    ) -> None:
        self.policy = policy
        self._secret = secret
        self.tries = tries
        self.timeout = timeout
        self.backoff = backoff
        self.give_up = give_up
        self.per_host = max(1, per_host)
        self._lock = threading.Condition()
        self._ready: collections.deque[Delivery] = collections.deque()  # due now, oldest first
        self._waiting: list[tuple[float, int, Delivery]] = []  # (due, seq, delivery): in backoff
        self._seq = itertools.count()
        self._in_flight: dict[int, Delivery] = {}  # id(delivery) -> delivery, while an attempt runs
        self._per_host: collections.Counter[tuple[str, int]] = collections.Counter()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"imgworker-callback-{i}", daemon=True) for i in range(senders)
        ]
        for t in self._threads:
            t.start()

    def send(self, payload: Payload, function: str, unique: str, result: dict[str, Any]) -> bool:
        """Queue the callback of a finished job, if it has one; never blocks."""
        url = payload.fields.get("callback")
        if url is None:
            return False
        try:
            target = self.policy.check(url)
        except (BadRequest, ForbiddenPath):
            return False  # the job was refused for it already
        body = json.dumps(result_body(payload.fields, function, result), separators=(",", ":")).encode()
        return self.submit(Delivery(target, body, function, payload, unique))

    def submit(self, delivery: Delivery) -> bool:
        with self._lock:
            full = self._stopping or len(self._ready) + len(self._waiting) + len(self._in_flight) >= QUEUE_SIZE
            if not full:
                self._ready.append(delivery)
                self._lock.notify()
                return True
        self._end(delivery, "worker stopping" if self._stopping else "callback queue full")
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Stop: a delivery in its backoff is recorded at once with its tries left; queued ones get one attempt
        each while ``timeout`` lasts; what is still queued or mid-attempt at the end is recorded too."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            waiting = [d for _, _, d in self._waiting]
            self._waiting.clear()
            self._lock.notify_all()
        for d in waiting:
            self._end(d, "worker stopped while the callback waited to be retried")
        with self._lock:
            while (self._ready or self._in_flight) and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            leftover = list(self._ready) + list(self._in_flight.values())
            self._ready.clear()
        for d in leftover:
            self._end(d, "worker stopped before the callback was sent")
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> Delivery | None:
        """The next delivery due whose host has a free slot; waits for one; None once stopping and empty."""
        with self._lock:
            while True:
                now = time.monotonic()
                while self._waiting and self._waiting[0][0] <= now:
                    self._ready.append(heapq.heappop(self._waiting)[2])
                for d in self._ready:
                    key = (d.target.host, d.target.port)
                    if self._per_host[key] < self.per_host:
                        self._ready.remove(d)
                        self._per_host[key] += 1
                        self._in_flight[id(d)] = d
                        return d
                if self._stopping and not self._ready:
                    return None
                wait = self._waiting[0][0] - now if self._waiting else None
                self._lock.wait(wait)

    def _serve(self) -> None:
        while (d := self._take()) is not None:
            try:
                outcome = self._attempt(d)
            except Exception:  # a bug here must not end the thread
                log.exception("callback to %s: unexpected error", d.target)
                outcome = Outcome(False, True, "internal error")
            with self._lock:
                self._in_flight.pop(id(d), None)
                key = (d.target.host, d.target.port)
                self._per_host[key] -= 1
                if self._per_host[key] <= 0:
                    del self._per_host[key]
                retry = not outcome.final and not self._stopping and not d.ended
                if retry:
                    due = time.monotonic() + self._delay(d.tries)
                    heapq.heappush(self._waiting, (due, next(self._seq), d))
                self._lock.notify_all()
            if outcome.delivered:
                self._end(d, None)
            elif not retry:
                reason = outcome.reason if outcome.final else f"worker stopped during the retries ({outcome.reason})"
                self._end(d, reason)

    def _delay(self, tries: int) -> float:
        return min(MAX_DELAY_S, self.backoff * 2 ** (tries - 1))

    def deliver(self, d: Delivery) -> bool:
        """Every attempt of one delivery, in the calling thread (tests; the threads use ``_attempt``)."""
        while True:
            outcome = self._attempt(d)
            if outcome.delivered or outcome.final:
                self._end(d, None if outcome.delivered else outcome.reason)
                return outcome.delivered
            time.sleep(self._delay(d.tries))

    def _attempt(self, d: Delivery) -> Outcome:
        """One POST, within its total deadline; the outcome says whether another may follow."""
        d.tries += 1
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(d.body, self._secret),
            "User-Agent": "imgworker-callback",
        }
        try:
            if d.address is None:
                d.address = resolve(d.target, self.policy.addresses)  # once per delivery: every attempt goes there
            status = self._post(d.target, d.address, d.body, headers)
        except AddressRefused as exc:
            metrics.CALLBACKS.labels("failed").inc()
            return Outcome(False, True, str(exc))  # not a transient error: no retry
        except (OSError, http.client.HTTPException) as exc:
            status, reason = 0, f"connection failed ({type(exc).__name__})"
            if isinstance(exc, DeadlinePassed):
                reason = str(exc)
        else:
            reason = f"HTTP {status}"
        if 200 <= status < 300:
            metrics.CALLBACKS.labels("sent").inc()
            return Outcome(True, True, reason)
        metrics.CALLBACKS.labels("failed").inc()
        log.warning("callback to %s: attempt %d/%d: %s", d.target, d.tries, self.tries, reason)
        # 3xx (redirects are not followed) and 4xx will not change on a retry.
        final = bool(status and status < 500 and status != 429) or d.tries >= self.tries
        return Outcome(False, final, reason)

    def _post(self, target: Target, address: tuple[Any, ...], body: bytes, headers: dict[str, str]) -> int:
        cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
        conn = cls(target.host, target.port, address, self.timeout)
        # The whole attempt (connect, TLS, send, answer) ends at its deadline, however the receiver drips.
        watchdog = threading.Timer(self.timeout, conn.abort)
        watchdog.daemon = True
        passed = DeadlinePassed(f"connection failed (its deadline of {self.timeout:g} s passed)")
        watchdog.start()
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(64 * 1024)  # a bounded look at the body, so keep-alive servers see a clean end
        except (OSError, http.client.HTTPException):
            if conn.aborted:
                raise passed from None
            raise
        finally:
            watchdog.cancel()
            conn.close()
        # An answer cut short by the deadline may still parse ("200 OK", then EOF): it is not an answer.
        if conn.aborted:
            raise passed
        return int(resp.status)

    def _end(self, d: Delivery, reason: str | None) -> None:
        """The one way a delivery ends: delivered (``reason`` None), or given up and recorded, exactly once."""
        with self._lock:
            if d.ended:
                return
            d.ended = True
        if reason is None:
            return
        metrics.CALLBACKS.labels("given_up").inc()
        log.error("callback to %s: gave up after %d attempt(s), %d left: %s", d.target, d.tries,
                  max(0, self.tries - d.tries), reason)
        if self.give_up is not None:
            try:
                self.give_up(d, reason, d.tries)
            except Exception:
                log.exception("recording the given-up callback failed")


def result_body(fields: dict[str, Any], function: str, result: dict[str, Any]) -> dict[str, Any]:
    """What a callback receives: the job's result plus function, id, src and dst (as ``notify`` sends)."""
    body = {**result, "function": function, "src": fields.get("src"), "dst": result.get("dst", fields.get("dst"))}
    job_id = fields.get("id")
    if job_id is not None and not isinstance(job_id, bool) and isinstance(job_id, str | int):
        body.setdefault("id", job_id)
    for key in ("src", "dst"):
        if isinstance(body[key], str):
            body[key] = redact(body[key])
    return body
