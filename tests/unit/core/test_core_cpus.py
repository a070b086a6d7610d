"""CPU counts from the pod (affinity, cgroup v2/v1 quota), not the node: imgworker/core/cpus.py and its users."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imgworker.core import cpus
from imgworker.core.config import WorkerConfig


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def limit(root: Path, proc_cgroup: str) -> float | None:
    (root / "self-cgroup").write_text(proc_cgroup)
    return cpus.cgroup_cpu_limit(str(root / "fs"), str(root / "self-cgroup"))


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    tree(tmp_path, {"fs/cgroup.controllers": "cpu", "fs/cpu.max": "250000 100000\n"})
    assert limit(tmp_path, "0::/\n") == 2.5  # a container with its own cgroup namespace
    (tmp_path / "fs" / "cpu.max").write_text("max 100000\n")
    assert limit(tmp_path, "0::/\n") is None


def test_cgroup_v2_nested_takes_the_tightest(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "fs/cgroup.controllers": "cpu",
            "fs/cpu.max": "max 100000",
            "fs/kubepods/pod1/cpu.max": "400000 100000",  # the pod's limit
            "fs/kubepods/pod1/ctr/cpu.max": "max 100000",  # the container: none of its own
        },
    )
    assert limit(tmp_path, "0::/kubepods/pod1/ctr\n") == 4.0
    # a path not mounted here (no cgroup namespace): the mount itself still counts
    (tmp_path / "fs" / "cpu.max").write_text("300000 100000")
    assert limit(tmp_path, "0::/elsewhere/x\n") == 3.0


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "fs/cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "fs/cpu,cpuacct/cpu.cfs_period_us": "100000",
            "fs/cpu,cpuacct/kubepods/podx/cpu.cfs_quota_us": "150000",
            "fs/cpu,cpuacct/kubepods/podx/cpu.cfs_period_us": "100000",
        },
    )
    assert limit(tmp_path, "4:memory:/kubepods/podx\n2:cpu,cpuacct:/kubepods/podx\n") == 1.5
    assert limit(tmp_path, "2:cpu,cpuacct:/\n") is None  # -1: no quota
    assert limit(tmp_path, "") is None  # no cgroup information at all


def test_available_cpus_rounds_the_quota_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, {"fs/cgroup.controllers": "cpu", "fs/cpu.max": "250000 100000", "self-cgroup": "0::/"})
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 96)
    assert cpus.available_cpus(str(tmp_path / "fs"), str(tmp_path / "self-cgroup")) == 2
    (tmp_path / "fs" / "cpu.max").write_text("50000 100000")
    assert cpus.available_cpus(str(tmp_path / "fs"), str(tmp_path / "self-cgroup")) == 1  # never 0
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 1)
    (tmp_path / "fs" / "cpu.max").write_text("800000 100000")
    assert cpus.available_cpus(str(tmp_path / "fs"), str(tmp_path / "self-cgroup")) == 1  # affinity is smaller


CHILD = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from imgworker.core.config import WorkerConfig
from imgworker.core.cpus import available_cpus
print(available_cpus(), WorkerConfig(servers=["127.0.0.1:4730"], processes=0).effective_processes, os.cpu_count())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2+ CPUs")
def test_processes_0_follows_the_affinity_mask_not_the_node() -> None:
    """A real process pinned to one CPU (as a cpuset or the static CPU manager does) starts one worker process."""
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    available, processes, node = map(int, proc.stdout.split())
    assert (available, processes) == (1, 1) and node >= 2  # os.cpu_count() would have said `node`


def test_this_process_is_sized_by_its_real_cgroup() -> None:
    """On this machine: the real /proc/self/cgroup and /sys/fs/cgroup give no more than the affinity mask."""
    n = cpus.available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    quota = cpus.cgroup_cpu_limit()
    if quota is not None:
        assert n <= max(1, int(quota))
    assert WorkerConfig(servers=["127.0.0.1:4730"], processes=0).effective_processes == n
    assert WorkerConfig(servers=["127.0.0.1:4730"], processes=3).effective_processes == 3


def test_gpu_backend_shares_the_pods_cpus_between_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_backend: decode threads per process = the pod's CPUs / processes (8 / 2 = 4), not the node's count."""
    import imgworker.backends.gpu as gpu

    seen: dict[str, Any] = {}
    monkeypatch.setattr(gpu, "available_cpus", lambda: 8)
    monkeypatch.setattr(gpu, "GpuBackend", lambda **kw: seen.update(kw))
    config = WorkerConfig(servers=["127.0.0.1:4730"], processes=2, concurrency=32)
    gpu.create_backend(config)
    assert seen["cpu_threads"] == 4
    monkeypatch.setattr(gpu, "available_cpus", lambda: 1)
    gpu.create_backend(config)
    assert seen["cpu_threads"] == 1
