"""How many CPUs this process may really use: the pod's, not the node's.

``os.cpu_count()`` counts the node (96 on a 96-core node, whatever the pod got). The usable count is the
smaller of the CPU affinity mask (cpusets, Kubernetes' static CPU manager, ``taskset``) and the cgroup CPU
quota (a pod's ``limits.cpu``: cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``), taken
over the process's cgroup and its parents, since any of them may hold the limit. A fractional quota rounds
down (2.5 CPUs -> 2 processes: a third would be throttled), never below 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (os.cpu_count() where the OS has no sched_getaffinity)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")  # "max 100000" (no limit) or "150000 100000"
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not period:
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v1_quota(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or "-1"), int(period or "0")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # -1: no limit


def _chain(mount: Path, path: str) -> list[Path]:
    """The process's cgroup directory under ``mount`` and each parent up to the mount itself.

    Inside a container with its own cgroup namespace the path is "/" and the mount is the pod's cgroup; without
    one the path names a directory that may not be mounted here, so the mount itself is always checked too.
    """
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    dirs = [mount.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)]
    return [d for d in dirs if d.is_dir()] + [mount]


def cgroup_cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> float | None:
    """The tightest CPU quota over this process's cgroups, in CPUs (1.5 = 150000/100000); None: no quota."""
    lines = (_read(Path(proc_cgroup)) or "").splitlines()
    base = Path(root)
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2 (unified), possibly beside v1 hierarchies
            mount = base / "unified" if (base / "unified" / "cgroup.controllers").exists() else base
            for d in _chain(mount, path):
                limits += [q for q in [_v2_quota(d)] if q is not None]
        elif "cpu" in controllers.split(","):
            for name in (controllers, "cpu,cpuacct", "cpu"):
                mount = base / name
                if mount.is_dir():
                    for d in _chain(mount, path):
                        limits += [q for q in [_v1_quota(d)] if q is not None]
                    break
    return min(limits) if limits else None


def available_cpus(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int:
    """Whole CPUs this process may use: min(affinity, cgroup quota rounded down), at least 1."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)
