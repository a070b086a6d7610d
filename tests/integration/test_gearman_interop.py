"""Interop with the C (gearman CLI), PHP (php-gearman) and Perl (Gearman::Client) implementations."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.fixtures_gearman import run_async, running_worker
from support.tools import needs, needs_tool

from imgworker.gearman import Client, Job, JobFailed
from imgworker.testing.gearmand import Gearmand

PEERS = Path(__file__).resolve().parents[1] / "peers"
FnMaker = Callable[[str], str]
HAVE_PHP = shutil.which("php") is not None and b"gearman" in subprocess.run(
    ["php", "-m"], capture_output=True, check=False
).stdout
HAVE_PERL = shutil.which("perl") is not None and subprocess.run(
    ["perl", "-MGearman::Client", "-e1"], capture_output=True, check=False
).returncode == 0
needs_php = needs(HAVE_PHP, "PHP with the gearman extension", "apt-get install php-cli php-gearman")
needs_perl = needs(HAVE_PERL, "Perl's Gearman::Client", "apt-get install libgearman-client-perl")
needs_cli = needs_tool("gearman", "apt-get install gearman-tools")

BINARY = bytes(range(256)) * 2
UTF8 = "Ünïcödé ✓ 画像".encode()


def _host_port(g: Gearmand) -> tuple[str, str]:
    return "127.0.0.1", str(g.port)


async def _upper(job: Job) -> bytes:
    return job.data.upper()


async def _echo(job: Job) -> bytes:
    return job.data


async def _fail(job: Job) -> bytes:
    raise RuntimeError("deliberate failure")


async def _prog(job: Job) -> bytes:
    await job.send_status(1, 2)
    await asyncio.sleep(0.05)
    return b"done"


@contextlib.contextmanager
def our_worker(g: Gearmand, prefix: str) -> Iterator[None]:
    """Our Worker serving PREFIX_{up,echo,fail,prog} from a background thread while peers call it."""
    ready, stop = threading.Event(), threading.Event()
    handlers = {f"{prefix}_up": _upper, f"{prefix}_echo": _echo, f"{prefix}_fail": _fail, f"{prefix}_prog": _prog}

    def serve() -> None:
        async def main() -> None:
            async with running_worker([g.address], handlers, max_jobs=4):
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        t.join(10)


def _run(cmd: list[str], data: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, check=False)


# --- our worker, foreign clients -------------------------------------------------------------------


@needs_cli
def test_cli_client_with_our_worker(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    pre = gearman_fn("cli")
    host, port = _host_port(gearmand)
    base = ["gearman", "-h", host, "-p", port, "-t", "20000"]
    with our_worker(gearmand, pre):
        r = _run([*base, "-f", f"{pre}_up", "hello world"])
        assert r.returncode == 0 and r.stdout == b"HELLO WORLD"
        r = _run([*base, "-f", f"{pre}_echo"], UTF8)
        assert r.stdout == UTF8
        r = _run([*base, "-f", f"{pre}_echo"], BINARY)
        assert r.stdout == BINARY
        # 1 MB: the CLI reads stdin quadratically (5 MB takes ~20 s there); 5 MB is covered with PHP/our client.
        big = bytes(range(256)) * 4096
        r = _run([*base, "-f", f"{pre}_echo"], big)
        assert r.stdout == big
        r = _run([*base, "-f", f"{pre}_fail", "x"])
        assert r.returncode != 0 or b"fail" in (r.stdout + r.stderr).lower()
        r = _run([*base, "-b", "-f", f"{pre}_up", "bg"])
        assert r.returncode == 0


@needs_php
def test_php_client_with_our_worker(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    pre = gearman_fn("phpc")
    host, port = _host_port(gearmand)

    def php(mode: str, fn: str, data: bytes) -> dict[str, object]:
        r = _run(["php", str(PEERS / "php_client.php"), host, port, mode, fn], data)
        assert r.returncode == 0, r.stderr
        out: dict[str, object] = json.loads(r.stdout)
        return out

    with our_worker(gearmand, pre):
        for payload in (b"plain", UTF8, BINARY, bytes(range(256)) * 20480):
            out = php("normal", f"{pre}_echo", payload)
            assert base64.b64decode(str(out["result"])) == payload
            assert base64.b64decode(str(out["direct"])) == payload
            assert out["ret"] == 0
        out = php("normal", f"{pre}_fail", b"x")
        assert out["fail"] is True and out["work_fail"] is True
        out = php("normal", f"{pre}_prog", b"x")
        assert out["status"] == [[1, 2]] and base64.b64decode(str(out["result"])) == b"done"
        out = php("background", f"{pre}_prog", b"x")
        assert str(out["handle"]).startswith("H:")
        statuses = out["statuses"]
        assert isinstance(statuses, list) and statuses[-1][0] is False  # finished: no longer known


@needs_perl
def test_perl_client_with_our_worker(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    pre = gearman_fn("perl")

    def perl(fn: str, data: bytes) -> list[str]:
        r = _run(["perl", str(PEERS / "perl_client.pl"), gearmand.address, fn], data)
        assert r.returncode == 0, r.stderr
        return r.stdout.decode().splitlines()

    with our_worker(gearmand, pre):
        for payload in (b"plain", UTF8, BINARY):
            lines = perl(f"{pre}_echo", payload)
            assert lines == [f"complete {payload.hex()}", f"do_task {payload.hex()}"]
        assert perl(f"{pre}_fail", b"x") == ["fail", "do_task undef"]
        assert perl(f"{pre}_prog", b"x") == ["status 1 2", f"complete {b'done'.hex()}", f"do_task {b'done'.hex()}"]


# --- our client, foreign workers -------------------------------------------------------------------


@contextlib.contextmanager
def _proc(cmd: list[str], wait_ready: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if wait_ready:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == b"ready"
        yield p
    finally:
        p.kill()
        p.wait(5)


async def _wait_workers(server: str, fn: str) -> None:
    from imgworker.gearman import status

    for _ in range(500):
        if any(s.name == fn and s.available_workers for s in await status(server)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no worker registered {fn}")


@needs_cli
def test_our_client_with_c_worker(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    up, cat = gearman_fn("cup"), gearman_fn("ccat")
    host, port = _host_port(gearmand)
    w = ["gearman", "-h", host, "-p", port, "-w"]
    with _proc([*w, "-f", up, "--", "tr", "a-z", "A-Z"]), _proc([*w, "-f", cat, "--", "cat"]):

        async def main() -> None:
            await _wait_workers(gearmand.address, up)
            await _wait_workers(gearmand.address, cat)
            async with Client([gearmand.address]) as c:
                assert await c.submit(up, b"hello", timeout=20) == b"HELLO"
                # `gearman -w` writes the whole job to the child's stdin before reading its stdout, so
                # payloads beyond a pipe buffer (64 KiB) deadlock the C worker itself: stay below that.
                for payload in (UTF8, BINARY, bytes(range(256)) * 200):
                    assert await c.submit(cat, payload, timeout=30) == payload
                results = await asyncio.gather(*(c.submit(up, b"n%d" % i, timeout=30) for i in range(20)))
                assert results == [b"N%d" % i for i in range(20)]

        run_async(main())


@needs_php
def test_our_client_with_php_worker(gearmand: Gearmand, gearman_fn: FnMaker) -> None:
    pre = gearman_fn("phpw")
    host, port = _host_port(gearmand)
    with _proc(["php", str(PEERS / "php_worker.php"), host, port, pre], wait_ready=True):

        async def main() -> None:
            await _wait_workers(gearmand.address, f"{pre}_up")
            async with Client([gearmand.address]) as c:
                assert await c.submit(f"{pre}_up", b"abc", timeout=20) == b"ABC"
                for payload in (UTF8, BINARY, bytes(range(256)) * (5 * 4096)):
                    assert await c.submit(f"{pre}_echo", payload, timeout=30) == payload
                seen: list[tuple[int, int]] = []
                r = await c.submit(f"{pre}_status", b"", on_status=lambda n, d: seen.append((n, d)), timeout=20)
                assert r == b"done" and seen == [(1, 2)]
                with pytest.raises(JobFailed):
                    await c.submit(f"{pre}_fail", b"", timeout=20)
                h = await c.submit_background(f"{pre}_status", b"")
                for _ in range(300):
                    if not (await c.get_status(h)).known:
                        break
                    await asyncio.sleep(0.01)
                assert not (await c.get_status(h)).known

        run_async(main())
