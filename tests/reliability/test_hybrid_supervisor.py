"""Hybrid node (issue 17, docs/gpu.md "Hybrid node"): one supervisor runs GPU-backend children and CPU-backend
children on the cores the GPU path leaves. No CUDA here, so ``--backend numpy`` (the GPU backend's code on
NumPy, registering ``@numpy``) stands in for the GPU children. Real gearmand, real worker processes; which
process registered which names is read from gearmand's admin ``workers`` command."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.corpus import photo
from support.fixtures_s3 import free_port
from support.tools import needs_tool
from support.workerproc import WorkerProc

from imgworker.gearman import Client, status, workers
from imgworker.testing.gearmand import Gearmand

FUNCTIONS = ("resize", "resize@numpy", "resize@cpu", "resize@gpu")


@pytest.fixture(scope="module")
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hybrid")
    shutil.copy(photo("baseline"), root / "small.jpg")
    # Big enough that the numpy reference resize keeps its only job slot busy for a while (a few seconds
    # here), generated at test time: a smooth gradient plus noise, saved as a baseline JPEG.
    big = pyvips.Image.xyz(4000, 3000).extract_band(0).cast("uchar")
    big = big.bandjoin([big.rot180(), (big + pyvips.Image.gaussnoise(4000, 3000)).cast("uchar")])
    big.copy(interpretation="srgb").jpegsave(str(root / "big.jpg"), Q=80)
    return root


def hybrid_names(address: str) -> list[set[str]]:
    """Function sets of the imgworker processes registered on the server (one entry per process)."""
    rows = asyncio.run(workers(address, timeout=3.0))
    return [set(r.functions) & set(FUNCTIONS) for r in rows if "resize" in r.functions]


def wait_for_processes(address: str, kinds: dict[str, int], timeout: float = 60.0) -> list[set[str]]:
    """Wait until ``kinds`` (backend tag -> process count) are registered; returns the function sets."""
    deadline = time.monotonic() + timeout
    found: list[set[str]] = []
    while time.monotonic() < deadline:
        found = hybrid_names(address)
        counts = {tag: sum(1 for names in found if f"resize@{tag}" in names) for tag in kinds}
        if counts == kinds and len(found) == sum(kinds.values()):
            return found
        time.sleep(0.2)
    raise AssertionError(f"wanted {kinds}, registered: {found}")


def submit(address: str, jobs: list[tuple[str, dict[str, Any]]], timeout: float = 120) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with Client([address]) as client:
            done = await asyncio.gather(*(client.submit(f, json.dumps(p).encode(), timeout=timeout) for f, p in jobs))
        return [json.loads(d) for d in done]

    return asyncio.run(go())


def test_hybrid_supervisor_runs_both_kinds_and_each_registers_its_names(server: Gearmand, root: Path) -> None:
    port = free_port()
    with WorkerProc([server.address], [root], "--backend", "numpy", "--cpu-processes", "2", "--metrics-port",
                    str(port), processes=1, concurrency=1).start(wait_for="resize@cpu", timeout=60) as proc:
        found = wait_for_processes(server.address, {"numpy": 1, "cpu": 2})
        for names in found:
            assert "resize" in names  # the untagged name: any process may take it
            assert "resize@gpu" not in names  # a CPU (or numpy) child never claims the GPU name
            assert ("resize@numpy" in names) != ("resize@cpu" in names)  # exactly one kind per process
        assert "hybrid node" in proc.log() and "1 numpy + 2 cpu" in proc.log()
        src, out = (root / "small.jpg").as_uri(), root / "out-names"
        out.mkdir()
        done = submit(server.address, [
            ("resize@numpy", {"src": src, "dst": f"{out.as_uri()}/a.jpg", "width": 64}),
            ("resize@cpu", {"src": src, "dst": f"{out.as_uri()}/b.jpg", "width": 64}),
        ])
        assert [d.get("backend") for d in done] == ["numpy", "cpu"], done
        assert all(d["width"] == 64 for d in done)
        # The supervisor serves every child's metrics, both kinds, on its one port.
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for backend in ("numpy", "cpu"):
            assert re.search(rf'imgworker_jobs_total{{[^}}]*backend="{backend}"[^}}]*outcome="ok"[^}}]*}} 1\.0',
                             text), backend


def test_cpu_children_take_untagged_jobs_while_the_gpu_children_are_busy(server: Gearmand, root: Path) -> None:
    out = root / "out-busy"
    out.mkdir()
    with WorkerProc([server.address], [root], "--backend", "numpy", "--cpu-processes", "1", processes=1,
                    concurrency=1).start(wait_for="resize@cpu", timeout=60):
        wait_for_processes(server.address, {"numpy": 1, "cpu": 1})

        async def go() -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
            async with Client([server.address]) as client:
                big = {"src": (root / "big.jpg").as_uri(), "dst": f"{out.as_uri()}/big.png", "width": 3000,
                       "format": "png"}
                slow = asyncio.create_task(client.submit("resize@numpy", json.dumps(big).encode(), timeout=180))
                # Until gearmand shows the numpy child running it, its only slot is not yet taken.
                for _ in range(300):
                    rows = {r.name: r for r in await status(server.address)}
                    if rows.get("resize@numpy") and rows["resize@numpy"].running >= 1:
                        break
                    await asyncio.sleep(0.05)
                small = [{"src": (root / "small.jpg").as_uri(), "dst": f"{out.as_uri()}/s{i}.jpg", "width": 48}
                         for i in range(3)]
                quick = [json.loads(await client.submit("resize", json.dumps(p).encode(), timeout=120))
                         for p in small]
                still_busy = not slow.done()
                return json.loads(await slow), quick, still_busy

        slow, quick, still_busy = asyncio.run(go())
    assert slow.get("backend") == "numpy" and slow["width"] == 3000, slow
    assert still_busy, "the numpy job ended before the untagged ones: the test did not hold its slot"
    # Untagged jobs submitted while the numpy child's only slot was busy were all served by the CPU child.
    assert [q.get("backend") for q in quick] == ["cpu"] * 3, quick
    assert all(q["width"] == 48 for q in quick)


@needs_tool("taskset", "apt-get install util-linux")
def test_process_counts_follow_available_cpus(server: Gearmand, root: Path) -> None:
    """--processes 0 means one GPU process per CPU the supervisor may use (cpus.available_cpus: here the
    affinity mask that taskset sets); the CPU children are as many as --cpu-processes says."""
    proc = WorkerProc([server.address], [root], "--backend", "numpy", "--cpu-processes", "1", processes=0,
                      concurrency=1)
    proc.cmd = ["taskset", "-c", "0", *proc.cmd]
    with proc.start(wait_for="resize@cpu", timeout=60):
        wait_for_processes(server.address, {"numpy": 1, "cpu": 1})
        assert "1 numpy + 1 cpu (hybrid node, 1 CPUs" in proc.log()


def test_cpu_processes_on_a_cpu_worker_is_a_config_error(server: Gearmand, root: Path) -> None:
    proc = WorkerProc([server.address], [root], "--backend", "cpu", "--cpu-processes", "2", processes=2)
    proc.start(wait_for=None)
    assert proc.wait(timeout=60) != 0
    assert "--cpu-processes adds CPU processes to a GPU worker" in proc.log()
