"""Faults that wedged a real worker while it reported healthy (issue 19, items 1, 2, 4, 5): each against real
worker processes and a real gearmand, with the figure before and after in the docstring."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pyvips
from support.fixtures_hostile import NamedWorker, code, job, open_fds
from support.fixtures_reliability import make_tiny_image, wait_for

from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand
from imgworker.testing.ports import reserve_port as free_port  # held until the server binds it


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


def health(port: int) -> tuple[int, str]:
    """(/healthz status, body); a probe that gets no answer in 3 s counts as 0 (a kubelet failure too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, "no answer"


def small_jobs(root: Path, n: int, tag: str) -> list[dict[str, object]]:
    src = make_tiny_image(root / "in" / "small.png")
    return [{"src": src.as_uri(), "dst": (root / "out" / f"{tag}{i}.png").as_uri(), "width": 8} for i in range(n)]


def run_all(server: str, jobs: list[dict[str, object]], timeout: float = 60) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [{}] * len(jobs)

    def one(i: int) -> None:
        out[i] = job(server, jobs[i], timeout=timeout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return out


# --- 1: a worker that cannot open files takes no jobs --------------------------------------------------------


def test_a_worker_out_of_file_descriptors_stops_taking_jobs_and_goes_red(
        server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path) -> None:
    """Before: it kept taking jobs and failed every one (STORE_FAILED: Too many open files); /healthz 200.
    After: one job fails, the rest go to the healthy worker, /healthz is 503 until descriptors are free."""
    root = tmp_path / "root"
    jobs = small_jobs(root, 6, "fd")
    port = free_port()
    a = worker_factory([server.address], [root], name="fd-a",
                       extra=["--metrics-port", str(port)]).wait_ready()
    assert code(job(server.address, jobs[0])) == "ok"
    fds = {int(p.name) for p in Path(f"/proc/{a.pid}/fd").iterdir()}
    lowest_free = next(i for i in range(len(fds) + 1) if i not in fds)
    # Two descriptors free: enough for /healthz to answer, not for a job (root, directory, file...).
    subprocess.run(["prlimit", f"--pid={a.pid}", f"--nofile={lowest_free + 2}:"], check=True)
    first = job(server.address, jobs[1])
    assert code(first) == "STORE_FAILED" and first["error"]["retryable"]
    status, body = health(port)
    assert status == 503 and "file descriptors" in body, (status, body)
    b = worker_factory([server.address], [root], name="fd-b").wait_ready()
    results = run_all(server.address, jobs[2:])
    assert [code(r) for r in results] == ["ok"] * 4, results
    assert not a.completed_lines("fd2") and not any(a.completed_lines(f"fd{i}") for i in range(2, 6))
    subprocess.run(["prlimit", f"--pid={a.pid}", "--nofile=1024:"], check=True)
    wait_for(lambda: health(port)[0] == 200, 10, 0.2, "the worker to find descriptors free again")
    b.stop()
    assert code(job(server.address, jobs[0])) == "ok"  # served by a again
    assert "out of file descriptors" in a.log()


# --- 2: a payload over the packet limit ----------------------------------------------------------------------


def test_a_job_over_the_packet_limit_is_answered_once_and_the_worker_keeps_serving(
        server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path) -> None:
    """Before: the worker dropped the connection, reconnected at once, got the same job again: ~3,000
    reconnects/s and the job never answered. After: LIMIT_EXCEEDED once, no reconnect."""
    root = tmp_path / "root"
    jobs = small_jobs(root, 1, "big")
    w = worker_factory([server.address], [root], name="oversized").wait_ready()
    huge = b'{"src":"file:///x.png","dst":"file:///y.png","width":8,"id":"' + b"x" * (65 * 1024 * 1024) + b'"}'
    with SyncClient([server.address]) as client:
        try:
            body = client.submit("resize", huge, timeout=30)
        except Exception as exc:  # the old worker never answers: the client times out
            body = json.dumps({"gearman": type(exc).__name__}).encode()
    result = json.loads(body)
    assert code(result) == "LIMIT_EXCEEDED", result
    assert "packet limit" in result["error"]["message"]
    assert code(job(server.address, jobs[0])) == "ok"
    lost = len(re.findall(r"connection lost|protocol error", w.log()))
    assert lost == 0, w.log()[-2000:]


# --- 4: slots held by work past its time limit ---------------------------------------------------------------


def _interlaced(path: Path, side: int) -> Path:
    # An interlaced PNG decodes whole, in one libvips call that set_kill cannot interrupt; blank, it is small.
    pyvips.Image.black(side, side).cast("uchar").pngsave(str(path), compression=9, interlace=True)
    return path


@pytest.fixture(scope="module")
def long_png(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A large PNG that decodes slowly to a small output, and how long that decode takes here, now."""
    big = tmp_path_factory.mktemp("long") / "long.png"
    # 16-bit RGBA, streaming (not interlaced): decodes row by row, so set_kill stops it between strips.
    image = pyvips.Image.black(12000, 12000, bands=4).cast("ushort").copy(interpretation="rgb16")
    image.pngsave(str(big), compression=9)
    t0 = time.monotonic()
    pyvips.Image.thumbnail(str(big), 64).copy_memory()
    return big, time.monotonic() - t0


def _killed_at_the_deadline(server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path,
                            long_png: tuple[Path, float], function: str, extra: list[str]) -> None:
    root = tmp_path / "root"
    big = long_png[0]
    decode_s = long_png[1]  # on this machine, now: the limit is a quarter of it
    limit = max(0.25, decode_s / 4)
    jobs = small_jobs(root, 1, "warm")
    w = worker_factory([server.address], [root, long_png[0].parent], name="killed",
                       extra=["--job-timeout", f"{limit:.2f}", *extra]).wait_ready()
    assert code(job(server.address, jobs[0])) == "ok"  # warm: a first job's imports do not count
    size = {"width": 64} if function == "resize" else {}  # the pipeline's own output is 64 px wide
    payload = {"src": big.as_uri(), "dst": (root / "out" / "k.png").as_uri(), **size}
    result = job(server.address, payload, function=function)
    assert code(result) == "TIMEOUT", (result, decode_s)
    # Stopped inside the decode (libvips' kill flag: "during decode"), not run to its end and caught at a later
    # check ("before ...") or by the runner's backstop (no stage named).
    assert "during" in result["error"]["message"], result
    assert "overran" not in w.log()  # answered by the job itself, not by the runner's backstop
    assert not (root / "out" / "k.png").exists()


def test_a_plain_resize_past_its_limit_stops_at_the_deadline(
        server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path,
        long_png: tuple[Path, float]) -> None:
    """Before: the job ran to its end (ok after several times its limit; its thread busy all along).
    After: TIMEOUT at the deadline, the thread stopped by libvips' set_kill."""
    _killed_at_the_deadline(server, worker_factory, tmp_path, long_png, "resize", [])


def test_a_pipeline_past_its_limit_stops_at_the_deadline(
        server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path,
        long_png: tuple[Path, float]) -> None:
    """The pipeline engine's decode is killed at the deadline too (pipeline/decode.materialise: kill_at on the
    loader's image). Before: its "eval" handler ran once per output tile, so the job ran to its end."""
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "small.yaml").write_text("name: small\noutputs: [{resize: {width: 64}, encode: png}]\n")
    _killed_at_the_deadline(server, worker_factory, tmp_path, long_png, "small", ["--pipelines", str(pipelines)])


def test_a_worker_whose_slots_are_all_stuck_takes_no_jobs_and_goes_red(
        server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path) -> None:
    """Before: 2 of 8 small jobs sat behind the stuck one for 50 s while an idle worker ran the others in
    30 ms; /healthz stayed 200. After: the stuck worker takes none until its thread ends; /healthz 503."""
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    big = _interlaced(root / "in" / "stuck.png", 20_000)
    jobs = small_jobs(root, 6, "st")
    port = free_port()
    a = worker_factory([server.address], [root], name="stuck-a",
                       extra=["--job-timeout", "1", "--metrics-port", str(port), "--max-source-pixels",
                              "500000000"]).wait_ready()
    stuck = job(server.address, {"src": big.as_uri(), "dst": (root / "out" / "s.png").as_uri(), "width": 64})
    assert code(stuck) == "TIMEOUT", stuck
    status, body = health(port)
    assert status == 503 and "time limit" in body, (status, body)
    worker_factory([server.address], [root], name="stuck-b").wait_ready()
    results = run_all(server.address, jobs)
    assert [code(r) for r in results] == ["ok"] * 6
    # None waited behind the stuck thread: A, its only slot held, took none of them.
    assert not any(a.completed_lines(f"st{i}") for i in range(6))
    wait_for(lambda: health(port)[0] == 200, 60, 0.5, "the stuck thread to end and /healthz to turn green")


# --- 5: a store that never answers ---------------------------------------------------------------------------


@pytest.fixture
def silent_store() -> Iterator[int]:
    """A TCP server that accepts connections and never sends a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(sock.getsockname()[1])
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    sock.close()


def test_a_store_that_never_answers_fails_the_job_in_time_and_the_next_job_runs(
        server: Gearmand, worker_factory: Callable[..., NamedWorker], tmp_path: Path, silent_store: int) -> None:
    """Before (--job-timeout 5, one slot): the next 18 ms job waited 99 s. After: the S3 job fails within its
    limit (timeouts sized to the time left) and the next job runs at once."""
    root = tmp_path / "root"
    jobs = small_jobs(root, 1, "after")
    w = worker_factory([server.address], [root], name="silent", concurrency=1,
                       extra=["--job-timeout", "5", "--s3-endpoint", f"http://127.0.0.1:{silent_store}",
                              "--s3-bucket", "bkt"],
                       env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}).wait_ready()
    s3 = {"src": "s3://bkt/k.jpg", "dst": (root / "out" / "s3.png").as_uri(), "width": 8}
    # A ceiling (40 s), not a measurement: before, the S3 job took 99 s and the next job waited behind it.
    out = run_all(server.address, [s3, jobs[0]], timeout=40)
    assert code(out[0]) in ("STORE_FAILED", "TIMEOUT"), out[0]  # which one depends on where the 5 s run out
    assert code(out[1]) == "ok"
    assert "never retrieved" not in w.log()
    assert open_fds(w.pid) < 200
