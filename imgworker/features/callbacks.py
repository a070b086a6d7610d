"""HTTP callbacks: a job's ``callback`` URL receives the result JSON, signed, when the job ends.

The worker POSTs from a few threads of its own, fed by a bounded queue, so a slow or dead receiver never holds
a job slot and never changes a job's result. Only hosts on ``--callback-allow`` are reached (anything else is
refused before the job runs, FORBIDDEN_PATH); the host is resolved once per delivery and every attempt connects
to that address (a DNS answer that changes between check and connect cannot redirect it); redirects are not
followed; timeouts are short. The signing key is never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from imgworker.core.callback_url import DEFAULT_PORTS, Target, parse_allow, parse_target
from imgworker.core.errors import BadRequest, ForbiddenPath, redact
from imgworker.features import metrics

log = logging.getLogger("imgworker.features.callbacks")

SIGNATURE_HEADER = "X-Imgworker-Signature"
QUEUE_SIZE = 256  # callbacks waiting for a sender thread; beyond this one is given up at once
SENDERS = 4
MAX_DELAY_S = 10.0


class CallbackPolicy:
    """Which callback URLs this worker may call: checked before a job does any work."""

    def __init__(self, allow: Iterable[str]) -> None:
        self.allowed = parse_allow(allow)

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

    def precheck(self, payload: bytes) -> None:
        """JobRunner pre-check: refuse a job whose ``callback`` is malformed or not allowed."""
        url = callback_of(payload)
        if url is not None:
            self.check(url)


def callback_of(payload: bytes) -> Any:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # the contract rejects it, with the reason
    return obj.get("callback") if isinstance(obj, dict) else None


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to an address resolved beforehand; the Host header keeps the name."""

    def __init__(self, host: str, port: int, address: tuple[Any, ...], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

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


def resolve(target: Target) -> tuple[Any, ...]:
    """One address for the target. IP literals are used as they are (the operator listed them); a name that
    resolves to a link-local (169.254.0.0/16: cloud metadata, fe80::/10), multicast or unspecified address is
    refused, so a DNS record pointed there cannot reach the metadata service through an allowed name."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(target.host)
        return (target.host, target.port)
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{target.host} does not resolve")
    address = tuple(infos[0][4][:2])
    ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        raise AddressRefused(f"{target.host} resolves to {ip}, which callbacks may not reach")
    return address


@dataclass(slots=True)
class Delivery:
    target: Target
    body: bytes
    function: str
    payload: bytes
    unique: str


GiveUp = Callable[[Delivery, str, int], None]  # (delivery, reason, tries)


class CallbackSender:
    """Background POSTs with retries; ``give_up`` hears of each callback that never got a 2xx."""

    def __init__(
        self, policy: CallbackPolicy, secret: str, *, tries: int = 5, timeout: float = 5.0,
        backoff: float = 0.5, give_up: GiveUp | None = None, senders: int = SENDERS,
    ) -> None:
        self.policy = policy
        self._secret = secret
        self.tries = tries
        self.timeout = timeout
        self.backoff = backoff
        self.give_up = give_up
        self._queue: queue.Queue[Delivery | None] = queue.Queue(QUEUE_SIZE)
        self._threads = [
            threading.Thread(target=self._serve, name=f"imgworker-callback-{i}", daemon=True) for i in range(senders)
        ]
        for t in self._threads:
            t.start()

    def send(self, payload: bytes, function: str, unique: str, result: dict[str, Any]) -> bool:
        """Queue the callback of a finished job, if it has one; never blocks."""
        url = callback_of(payload)
        if url is None:
            return False
        try:
            target = self.policy.check(url)
        except (BadRequest, ForbiddenPath):
            return False  # the job was refused for it already
        body = json.dumps(result_body(payload, function, result), separators=(",", ":")).encode()
        delivery = Delivery(target, body, function, payload, unique)
        try:
            self._queue.put_nowait(delivery)
        except queue.Full:
            self._gave_up(delivery, "callback queue full", 0)
            return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Let queued callbacks go out for up to ``timeout`` seconds, then stop the threads."""
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        while True:  # what is still queued will not be sent: say so, and record it
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                return
            if left is not None:
                self._gave_up(left, "worker stopped before it was sent", 0)

    def _serve(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            try:
                self.deliver(delivery)
            except Exception:  # a bug here must not end the thread
                log.exception("callback to %s: unexpected error", delivery.target)

    def deliver(self, d: Delivery) -> bool:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(d.body, self._secret),
            "User-Agent": "imgworker-callback",
        }
        reason = ""
        address: tuple[Any, ...] | None = None
        for attempt in range(1, self.tries + 1):
            try:
                if address is None:
                    address = resolve(d.target)  # once per delivery: every attempt goes to this address
                status = self._post(d.target, address, d.body, headers)
            except AddressRefused as exc:
                status, reason = 0, str(exc)
                metrics.CALLBACKS.labels("failed").inc()
                break  # not a transient error: no retry
            except (OSError, http.client.HTTPException) as exc:
                status, reason = 0, f"connection failed ({type(exc).__name__})"
            else:
                reason = f"HTTP {status}"
            if 200 <= status < 300:
                metrics.CALLBACKS.labels("sent").inc()
                return True
            metrics.CALLBACKS.labels("failed").inc()
            log.warning("callback to %s: attempt %d/%d: %s", d.target, attempt, self.tries, reason)
            if status and status < 500 and status != 429:
                break  # 3xx (redirects are not followed) and 4xx will not change on a retry
            if attempt < self.tries:
                time.sleep(min(MAX_DELAY_S, self.backoff * 2 ** (attempt - 1)))
        self._gave_up(d, reason, attempt)
        return False

    def _post(self, target: Target, address: tuple[Any, ...], body: bytes, headers: dict[str, str]) -> int:
        cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
        conn = cls(target.host, target.port, address, self.timeout)
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(64 * 1024)  # a bounded look at the body, so keep-alive servers see a clean end
            return int(resp.status)
        finally:
            conn.close()

    def _gave_up(self, d: Delivery, reason: str, tries: int) -> None:
        metrics.CALLBACKS.labels("given_up").inc()
        log.error("callback to %s: gave up after %d attempt(s): %s", d.target, tries, reason)
        if self.give_up is not None:
            try:
                self.give_up(d, reason, tries)
            except Exception:
                log.exception("recording the given-up callback failed")


def result_body(payload: bytes, function: str, result: dict[str, Any]) -> dict[str, Any]:
    """What a callback receives: the job's result plus function, id, src and dst (as ``notify`` sends)."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        obj = {}
    obj = obj if isinstance(obj, dict) else {}
    body = {**result, "function": function, "src": obj.get("src"), "dst": result.get("dst", obj.get("dst"))}
    job_id = obj.get("id")
    if job_id is not None and not isinstance(job_id, bool) and isinstance(job_id, str | int):
        body.setdefault("id", job_id)
    for key in ("src", "dst"):
        if isinstance(body[key], str):
            body[key] = redact(body[key])
    return body
