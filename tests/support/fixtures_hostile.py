"""Shared pieces of the hostile-input tests (tests/test_hostile_*.py): one real gearmand and worker per module,
a job helper that tells a JSON result from a Gearman-level WORK_FAIL, and process figures (VmHWM, open fds)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from imgworker.gearman import GearmanError, SyncClient
from support.fixtures_reliability import NamedWorker

REPO = Path(__file__).resolve().parents[2]


def job(server: str, payload: dict[str, Any] | bytes, function: str = "resize", timeout: float = 60) -> dict[str, Any]:
    """The job's JSON result; ``{"gearman": "<error>"}`` when it ended in a Gearman-level failure instead."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with SyncClient([server]) as client:
        try:
            body = client.submit(function, data, timeout=timeout)
        except GearmanError as exc:
            return {"gearman": type(exc).__name__}
    result: dict[str, Any] = json.loads(body)
    return result


def code(result: dict[str, Any]) -> str:
    if "gearman" in result:
        return "GEARMAN:" + str(result["gearman"])
    return "ok" if result.get("ok") else str(result["error"]["code"])


def vm_hwm_kb(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+)", text, re.M)
    assert match
    return int(match.group(1))


def vm_rss_kb(pid: int) -> int:
    match = re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match
    return int(match.group(1))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def load() -> str:
    """The machine's load average, for figures taken under load."""
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


__all__ = ["REPO", "NamedWorker", "code", "job", "load", "open_fds", "vm_hwm_kb", "vm_rss_kb"]
