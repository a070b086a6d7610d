"""Issue 26 item 3: an allowed callback name that resolves to the metadata service in a translated form
(``::ffff:169.254.169.254``) or to AWS's IPv6 metadata address (``fd00:ec2::254``) must not receive the POST.

End to end in a private network namespace (``unshare --net --mount``, root): the addresses live on the
namespace's loopback, names point at them through a bind-mounted /etc/hosts, and gearmand, the worker and the
receiver all run inside (tests/support/netns_callbacks.py), so no test traffic leaves the machine. Before the
fix the mapped and IPv6 names received their POST.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.tools import needs_tool, require_privilege

TESTS = Path(__file__).resolve().parents[1]


def run_in_namespace() -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}"}
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "--", sys.executable, "-m", "support.netns_callbacks"],
        capture_output=True, env=env, timeout=150, cwd=TESTS,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@needs_tool("unshare", "apt-get install util-linux")
@needs_tool("ip", "apt-get install iproute2")
def test_metadata_addresses_behind_allowed_names_receive_nothing() -> None:
    if os.geteuid() != 0:
        require_privilege("a private network namespace (unshare --net --mount)", "run as root")
    out = run_in_namespace()
    got = {h["path"].lstrip("/") for h in out["hits"]}
    # The control: the namespace delivers, so silence below means refusal, not a broken set-up.
    assert "plain.test" in got, out["log"]
    for name in ("meta-mapped.test", "meta-v6.test", "meta-v4.test"):
        assert name not in got, f"{name} received the callback: {out['hits']}"
        # The job itself is unchanged (the callback is not the job's result) ...
        assert out["results"][name]["ok"] is True
        # ... and the refused callback is recorded as given up, with the reason, after one try (no retries).
        (rec,) = [r for r in out["records"] if r["payload"]["id"] == name]
        assert rec["kind"] == "callback" and rec["attempts"] == 1, rec
        assert "may not reach" in rec["callback"]["reason"], rec
    assert all(h["to"] in ("::ffff:198.51.100.7", "198.51.100.7") for h in out["hits"]), out["hits"]
