"""Fixtures for s3:// tests: a real S3-compatible HTTP server (moto in server mode, its own process) on a
free loopback port, boto3 clients talking real HTTP to it, a byte-counting TCP proxy that can also cut the
line, and real ``python -m imgworker worker`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgworker.gearman import status as gearman_status
from imgworker.testing.ports import reserve_port as free_port  # held until the server binds it
from support.workerproc import WorkerProc

__all__ = [
    "S3_ENV",
    "TEST_SECRET",
    "CountingProxy",
    "MotoServer",
    "moto_factory",
    "moto_s3",
    "s3_bucket",
    "s3_client",
    "s3_proxy",
    "s3_worker_factory",
    "start_s3_worker",
    "wait_for_workers",
]

# A distinctive secret: tests scan every message and log line for it.
TEST_SECRET = "imgwkrTESTsecret/K7q+ZzW9xY2vB4nM6pL8rT0sU3"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIMGWORKERTEST01",
    "AWS_SECRET_ACCESS_KEY": TEST_SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Small multipart parts on the test server, so multipart paths run with a few hundred KiB.
TEST_PART_SIZE = 256 * 1024
_counter = itertools.count()


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class MotoServer:
    """``moto_server`` in its own process; state lives in that process (a restart starts empty)."""

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        env = {**os.environ, "S3_UPLOAD_PART_MIN_SIZE": str(TEST_PART_SIZE), **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 30, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, endpoint: str | None = None, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, **config),
        )


class CountingProxy:
    """A loopback TCP proxy that counts the bytes it forwards; ``cut()`` drops every connection and refuses
    new ones, ``restore()`` accepts again, ``cut_after_upload`` cuts once that many request bytes passed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.down_bytes = 0  # server -> client
        self.up_bytes = 0  # client -> server
        self.cut_after_upload: int | None = None
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:  # cut while accepting
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    if upload:
                        self.up_bytes += len(data)
                    else:
                        self.down_bytes += len(data)
                    limit = self.cut_after_upload
                    over = upload and limit is not None and self.up_bytes > limit
                if over:
                    self.cut()
                    break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the accept() blocked in another thread; close() alone would not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def wait_for_workers(server: str, function: str, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {f.name: f.available_workers for f in asyncio.run(gearman_status(server))}
        if found.get(function, 0) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{n} workers for {function!r} not registered on {server} after {timeout}s")


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def moto_factory() -> Iterator[Callable[..., MotoServer]]:
    """Private S3 servers (for tests that stop them or enforce auth); all stopped at test end."""
    started: list[MotoServer] = []

    def make(**kw: Any) -> MotoServer:
        server = MotoServer(**kw).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_s3: MotoServer) -> Any:
    """The tests' own boto3 client (setup and inspection), straight to the server."""
    return moto_s3.client()


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"t{next(_counter)}-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_proxy(moto_s3: MotoServer) -> Iterator[CountingProxy]:
    proxy = CountingProxy(moto_s3.port)
    yield proxy
    proxy.cut()


def start_s3_worker(
    server: str,
    endpoint: str,
    buckets: list[str],
    root: Path,
    *extra: str,
    concurrency: int = 2,
) -> WorkerProc:
    """A real worker process with only the test credentials in its environment (not yet waited for)."""
    args = ["--s3-endpoint", endpoint, "--s3-max-attempts", "2", "--s3-timeout", "5", "--drain-timeout", "5"]
    for b in buckets:
        args += ["--s3-bucket", b]
    proc = WorkerProc([server], [root], *args, *extra, concurrency=concurrency)
    # Nothing from the developer's own AWS environment or profile.
    proc.env = {k: v for k, v in proc.env.items() if not k.startswith("AWS_")} | S3_ENV
    proc.env["AWS_CONFIG_FILE"] = proc.env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return proc.start(wait_for=None)


@pytest.fixture
def s3_worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    """``make(server, endpoint, buckets, *extra_args, root=DIR, concurrency=2)``; all stopped at test end."""
    started: list[WorkerProc] = []

    def make(
        server: str,
        endpoint: str,
        buckets: list[str],
        *extra: str,
        root: Path | None = None,
        concurrency: int = 2,
    ) -> WorkerProc:
        proc = start_s3_worker(server, endpoint, buckets, root or tmp_path, *extra, concurrency=concurrency)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop(timeout=15)
