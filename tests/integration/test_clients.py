"""Every client family tells success from failure and reads the error's code and message.

The examples in examples/ are what these tests run, so the documented usage is proven against a real worker.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.corpus import photo
from support.fixtures_s3 import free_port
from support.tools import require_node_client
from support.workerproc import REPO, WorkerProc

EXAMPLES = REPO / "examples"
GOOD_SRC = photo("baseline").as_uri()
BAD_SRC = "file:///etc/passwd"



def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def host_port(worker: WorkerProc) -> tuple[str, str]:
    host, _, port = worker.servers[0].rpartition(":")
    return host, port


def check_success(proc: subprocess.CompletedProcess[str], dst: Path, width: int) -> None:
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True and result["width"] == width and result["dst"] == dst.as_uri()
    assert dst.stat().st_size == result["bytes"]


def check_failure(proc: subprocess.CompletedProcess[str], code: str = "FORBIDDEN_PATH") -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is False and result["error"]["code"] == code
    assert "outside the allowed roots" in result["error"]["message"]
    assert proc.stderr.startswith(code + ":")


def test_gearman_cli(core_worker: WorkerProc, core_root: Path) -> None:
    host, port = host_port(core_worker)
    dst = core_root / "out" / "cli.jpg"
    payload = json.dumps({"src": GOOD_SRC, "dst": dst.as_uri(), "width": 300})
    raw = run(["gearman", "-h", host, "-p", port, "-f", "resize", payload])
    assert raw.returncode == 0 and json.loads(raw.stdout)["height"] == 169
    check_success(run([str(EXAMPLES / "resize.sh"), host, port, GOOD_SRC, dst.as_uri(), "320"]), dst, 320)
    check_failure(run([str(EXAMPLES / "resize.sh"), host, port, BAD_SRC, dst.as_uri(), "320"]))
    # Tagged function names work from the CLI too; a CPU worker does not register @gpu: gearmand's own status
    # lists it with @cpu and untagged (the control: the same query finds those) and never with @gpu.
    tagged = run(["gearman", "-h", host, "-p", port, "-f", "resize@cpu", payload])
    assert json.loads(tagged.stdout)["backend"] == "cpu"
    status = run(["gearadmin", "-h", host, "-p", port, "--status"])
    assert status.returncode == 0, status.stderr
    workers = {line.split("\t")[0]: int(line.split("\t")[3]) for line in status.stdout.splitlines() if "\t" in line}
    assert workers["resize@cpu"] == workers["resize"] == 1, workers
    assert workers.get("resize@gpu", 0) == 0 and not any(name.endswith("@gpu") and n for name, n in workers.items())


@pytest.mark.parametrize("script", ["resize.sh", "info.sh"])
def test_shell_examples_exit_2_without_a_job_server(script: str) -> None:
    """docs/contract.md: 2 when no job server answered (the gearman 1.1 CLI itself exits 0 then)."""
    dead = str(free_port())
    args = [GOOD_SRC, "file:///tmp/x.jpg", "64"] if script == "resize.sh" else [GOOD_SRC]
    proc = run([str(EXAMPLES / script), "127.0.0.1", dead, *args])
    assert proc.returncode == 2 and proc.stdout == "", (proc.returncode, proc.stdout, proc.stderr)
    assert f"no job server answered at 127.0.0.1:{dead}" in proc.stderr


def test_php_client(core_worker: WorkerProc, core_root: Path) -> None:
    dst = core_root / "out" / "php.jpg"
    server = core_worker.servers[0]
    check_success(run(["php", str(EXAMPLES / "resize.php"), server, GOOD_SRC, dst.as_uri(), "200"]), dst, 200)
    check_failure(run(["php", str(EXAMPLES / "resize.php"), server, BAD_SRC, dst.as_uri(), "200"]))


def test_perl_client(core_worker: WorkerProc, core_root: Path) -> None:
    dst = core_root / "out" / "perl.jpg"
    server = core_worker.servers[0]
    check_success(run(["perl", str(EXAMPLES / "resize.pl"), server, GOOD_SRC, dst.as_uri(), "210"]), dst, 210)
    check_failure(run(["perl", str(EXAMPLES / "resize.pl"), server, BAD_SRC, dst.as_uri(), "210"]))


def test_python_example(core_worker: WorkerProc, core_root: Path) -> None:
    import sys

    dst = core_root / "out" / "py.jpg"
    server = core_worker.servers[0]
    check_success(run([sys.executable, str(EXAMPLES / "resize.py"), server, GOOD_SRC, dst.as_uri(), "220"]), dst, 220)
    check_failure(run([sys.executable, str(EXAMPLES / "resize.py"), server, BAD_SRC, dst.as_uri(), "220"]))


def test_clients_see_no_server_as_transport_error(core_root: Path) -> None:
    dead = "127.0.0.1:1"
    php = run(["php", str(EXAMPLES / "resize.php"), dead, GOOD_SRC, (core_root / "x.jpg").as_uri(), "10"])
    perl = run(["perl", str(EXAMPLES / "resize.pl"), dead, GOOD_SRC, (core_root / "x.jpg").as_uri(), "10"])
    assert php.returncode == 2 and perl.returncode == 2


def test_node_client(core_worker: WorkerProc, core_root: Path) -> None:
    node_dir = EXAMPLES / "node"
    require_node_client(node_dir)  # ./dev setup ran npm ci there; the test never installs
    host, port = host_port(core_worker)
    dst = core_root / "out" / "node.jpg"
    check_success(run(["node", str(node_dir / "resize.js"), host, port, GOOD_SRC, dst.as_uri(), "230"]), dst, 230)
    check_failure(run(["node", str(node_dir / "resize.js"), host, port, BAD_SRC, dst.as_uri(), "230"]))
