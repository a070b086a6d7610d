"""Real HTTP receivers for callback tests: a ThreadingHTTPServer in a thread that records every POST; the
``receivers`` fixture stops those a test appends to it."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Receiver:
    """A local HTTP server in a thread; ``mode``: ok, fail_first (500 once per path), throttle_first (429 once
    per path), reject (404), hang, redirect, status
    (answers ``status``, which a test may change), drip (sends its answer one byte every ``drip_s`` seconds,
    for ever: each read is quick, the whole answer never ends)."""

    mode: str
    port: int = 0
    host: str = "127.0.0.1"
    status: int = 200
    drip_s: float = 0.2
    drips: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each dripping connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen = [r for r in owner.requests if r["path"] == self.path]
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if owner.mode == "hang":
                    owner.release.wait(60)
                    return
                if owner.mode == "drip":
                    started = time.monotonic()
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                        self.wfile.flush()
                        # A byte every drip_s; the peer closing is seen at once (readable, then EOF).
                        while not owner.release.is_set():
                            readable, _, _ = select.select([self.connection], [], [], owner.drip_s)
                            if readable and not self.connection.recv(1):
                                break
                            self.wfile.write(b"x")
                            self.wfile.flush()
                    except OSError:
                        pass
                    with owner.lock:
                        owner.drips.append((started, time.monotonic()))
                    return
                if owner.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                elif owner.mode == "fail_first" and not seen:
                    self.send_response(500)
                elif owner.mode == "throttle_first" and not seen:
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                elif owner.mode == "reject":
                    self.send_response(404)
                elif owner.mode == "status":
                    self.send_response(owner.status)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def for_path(self, path: str, n: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.requests if r["path"] == path]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"{self.mode} receiver: {n} request(s) for {path} not seen in {timeout} s")

    def most_at_once(self, slack: float = 0.1) -> int:
        """The most dripping connections open at once, each taken as ending ``slack`` s earlier (the receiver
        notices a close a moment after the peer, which may already have opened the next one)."""
        with self.lock:
            events = sorted([(a, 1) for a, _ in self.drips] + [(b - slack, -1) for _, b in self.drips])
        most = now = 0
        for _, step in events:
            now += step
            most = max(most, now)
        return most

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.stop()
