"""Peer: thumbor (PyPI, its default Pillow engine) over HTTP with its file loader, one process per core.

thumbor forks ``--processes N`` servers on one port; the client keeps 2 requests per process in flight over
keep-alive connections (as imgworker's client keeps one job queued per worker process). Installed by
setup_peers.sh into benchmarks/.peers/venv. Pillow does no colour management of CMYK JPEGs and thumbor drops
alpha to black for JPEG output: bench_colour shows the difference.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

from benchmarks.harness import PEERS, PEERS_DIR, Row, Workload, fill_latency, tree_rss_mb

ENGINE = "thumbor (Pillow)"
THUMBOR = PEERS / "venv" / "bin" / "thumbor"


def unavailable() -> str | None:
    if not THUMBOR.exists():
        return "thumbor is not installed: run benchmarks/setup_peers.sh"
    return None


def version() -> str:
    py = str(PEERS / "venv" / "bin" / "python")
    code = "import thumbor, PIL; print(thumbor.__version__, '(Pillow', PIL.__version__ + ')')"
    return subprocess.run([py, "-c", code], capture_output=True, text=True, check=False).stdout.strip() or "?"


def url_for(workload: Workload, path: str) -> str:
    op = workload.op
    size = f"fit-in/{op.width}x{op.height}" if op.height else f"{op.width}x0"
    return f"/unsafe/{size}/filters:quality({op.quality})/{quote(path.lstrip('/'))}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(conn: http.client.HTTPConnection, url: str) -> tuple[int, bytes]:
    conn.request("GET", url)
    resp = conn.getresponse()
    return resp.status, resp.read()


class Server:
    def __init__(self, processes: int) -> None:
        self.port = _free_port()
        cmd = [str(THUMBOR), "-i", "127.0.0.1", "-p", str(self.port), "-c", str(PEERS_DIR / "thumbor.conf"),
               "-l", "error", "--processes", str(processes)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                     env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"thumbor exited: {self.proc.stderr.read().decode()[-600:]}")  # type: ignore[union-attr]
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                if _get(c, "/healthcheck")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("thumbor did not answer /healthcheck within 30 s")

    def stop(self) -> None:
        # The whole process group: thumbor's forked servers outlive their parent's SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the forked servers too
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def drive(port: int, urls: list[str], in_flight: int, seconds: float) -> tuple[int, float, list[float], int]:
    """Keep ``in_flight`` requests going for ``seconds``; returns (jobs, wall, latencies, errors)."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    ends: list[float] = []

    def client(k: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status, _ = _get(conn, urls[i % len(urls)])
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(ms)
                errors += status != 200
            i += 1
        with lock:
            ends.append(time.perf_counter())

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat), max(ends) - started, lat, errors


def run(workload: Workload, processes: int, seconds: float) -> Row:
    why = unavailable()
    if why:
        return Row(workload.name, ENGINE, skipped=why)
    server = Server(processes)
    try:
        urls = [url_for(workload, str(Path(f))) for f in workload.files]
        warm = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for u in urls:  # warm-up pass (imports, page cache); each forked process warms on its first jobs
            _get(warm, u)
        warm.close()
        jobs, wall, lat, errors = drive(server.port, urls, 2 * processes, seconds)
        rss_sum, rss_max = tree_rss_mb([server.proc.pid])
    finally:
        server.stop()
    note = "HTTP keep-alive, 2 requests/process in flight"
    if errors:
        note += f"; {errors} of {jobs} requests failed (non-200)"
    row = Row(workload.name, ENGINE, images_per_s=round(jobs / wall, 2), peak_rss_mb=rss_sum, max_proc_rss_mb=rss_max,
              jobs=jobs, processes=processes, note=note)
    row.extra["errors"] = errors
    return fill_latency(row, lat)
