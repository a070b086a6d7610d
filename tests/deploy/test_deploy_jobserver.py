"""The job server as k8s/ runs it (gearmand-a and gearmand-b of k8s/overlays/production, rendered), run for real: the
manifest's command and args verbatim, as its runAsUser with every capability dropped and no new privileges, in a
fresh mount and network namespace where the root filesystem is read-only and only the queue volume (a temp dir
bound to the volume's mountPath) is writable. Port 4730 is the namespace's own, so the args need no change.
Clients reach it with ``nsenter --net`` (the gearman CLI). Building the sandbox needs root, as CI has; without it
these tests fail and say so.

It must serve, keep background jobs across a SIGKILL on the volume, drop a poison job after the manifest's
``--job-retries``, and keep TCP keepalive on its connections; the local default (imgworker.testing.gearmand) must use
the same flags.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.kustomize import render
from support.tools import require_privilege, require_tool

from imgworker.testing import gearmand as local

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("unshare", "nsenter", "setpriv", "ip", "ss", "gearman", "gearadmin", "sqlite3")


def deployments() -> list[dict[str, Any]]:
    return [d for d in render("production") if d["kind"] == "Deployment"]


def pod_of(name: str) -> dict[str, Any]:
    return next(d for d in deployments() if d["metadata"]["name"] == name)["spec"]["template"]["spec"]


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` (or True-ish ``""`` for a bare switch) in a container's args."""
    for a in args:
        if a == f"--{name}":
            return ""
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


class PodGearmand:
    """gearmand in its own namespaces, started exactly as the manifest's container would be."""

    def __init__(self, pod: dict[str, Any], volume_dir: Path, log: Path) -> None:
        (self.container,) = pod["containers"]
        self.init_containers = pod.get("initContainers", [])
        for c in [self.container, *self.init_containers]:
            sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            assert sc["runAsNonRoot"] and sc["runAsUser"] != 0 and sc["readOnlyRootFilesystem"], c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"] and sc["allowPrivilegeEscalation"] is False, c["name"]
            assert c["volumeMounts"] == self.container["volumeMounts"], c["name"]
        self.uid, self.gid = int(sc["runAsUser"]), int(sc.get("runAsGroup", sc["runAsUser"]))
        (mount,) = self.container["volumeMounts"]
        self.mount_path = mount["mountPath"]
        self.volume = volume_dir
        self.log = log
        # What kubelet does with fsGroup: the volume belongs to the pod's group and is group-writable.
        os.chown(volume_dir, 0, int(sc.get("fsGroup", self.gid)))
        volume_dir.chmod(0o2770)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        return [*self.container["command"], *self.container.get("args", [])]

    def _script(self, exec_line: str) -> str:
        return "\n".join([
            "set -e",
            "mount --make-rprivate /",
            f"mount --bind {shlex.quote(str(self.volume))} {shlex.quote(self.mount_path)}",
            # Every other mount read-only (root, /dev/shm, /tmp if separate, ...): only the volume is writable.
            f"awk '$5 != \"{self.mount_path}\" {{print $5}}' /proc/self/mountinfo | while read -r m; do"
            ' mount -o remount,bind,ro "$m" 2>/dev/null || true; done',
            "ip link set lo up",
            f"exec setpriv --reuid={self.uid} --regid={self.gid} --clear-groups --no-new-privs"
            f" --inh-caps=-all --bounding-set=-all -- {exec_line}",
        ])

    def start(self) -> PodGearmand:
        for c in self.init_containers:  # as kubelet does: each to completion, in order, before the container
            init = self.as_pod_user(shlex.join([*c["command"], *c.get("args", [])]))
            assert init.returncode == 0, (c["name"], init.stdout, init.stderr)
        script = self._script(shlex.join(self.argv))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["unshare", "--mount", "--net", "--kill-child", "sh", "-c", script],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        port = int(flag(self.argv, "port") or 4730)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gearmand exited: {self.log.read_text()[-2000:]}"
            if f":{port} " in self.ns(["ss", "-Htln"]).stdout:
                return self
            time.sleep(0.1)
        raise AssertionError(f"gearmand did not listen on {port}: {self.log.read_text()[-2000:]}")

    def ns(self, cmd: list[str], timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the pod's network namespace (the host's filesystem and user)."""
        assert self.proc is not None
        return subprocess.run(["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", "--", *cmd],
                              capture_output=True, text=True, timeout=timeout, **kw)

    def as_pod_user(self, shell: str) -> subprocess.CompletedProcess[str]:
        """A shell command in a sandbox like the pod's (its user, read-only root, the volume writable)."""
        script = self._script(f"sh -c {shlex.quote(shell)}")
        return subprocess.run(["unshare", "--mount", "--net", "sh", "-c", script], capture_output=True, text=True,
                              timeout=30)

    @property
    def gearmand_pid(self) -> int:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        (pid,) = children
        assert Path(f"/proc/{pid}/exe").resolve() == Path(self.argv[0]).resolve()
        return int(pid)

    def status(self) -> dict[str, tuple[int, int, int]]:
        out = self.ns(["gearadmin", "--status"]).stdout
        rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    def kill(self) -> None:
        """SIGKILL gearmand itself (a crash / OOM kill), then reap the namespace holder."""
        os.kill(self.gearmand_pid, 9)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.gearmand_pid, 15)  # unshare --fork ignores SIGTERM; gearmand stops on it
            self.proc.wait(10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()  # --kill-child: gearmand gets SIGKILL when its parent dies
            self.proc.wait(10)


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[PodGearmand]:
    if os.geteuid() != 0:
        require_privilege("the pod sandbox needs root (unshare --mount --net, setpriv)", "run the tests as root")
    for tool in TOOLS:
        require_tool(tool, "apt-get install util-linux iproute2 gearman-tools")
    volume = tmp_path / "volume"
    volume.mkdir()
    g = PodGearmand(pod_of("gearmand-a"), volume, tmp_path / "gearmand.log")
    yield g
    g.stop()


def test_both_job_servers_run_the_same_command() -> None:
    a, b = (pod_of(n)["containers"][0] for n in ("gearmand-a", "gearmand-b"))
    assert a["command"] == b["command"] == ["/usr/sbin/gearmand"]
    assert pod_of("gearmand-a")["initContainers"] == pod_of("gearmand-b")["initContainers"]
    assert a["args"] == b["args"] and a["securityContext"] == b["securityContext"]
    assert all(pod_of(n)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
               for n in ("gearmand-a", "gearmand-b"))
    claims = {pod_of(n)["volumes"][0]["persistentVolumeClaim"]["claimName"] for n in ("gearmand-a", "gearmand-b")}
    assert len(claims) == 2, "each job server has its own queue volume"


def test_the_sandbox_leaves_only_the_volume_writable(pod: PodGearmand) -> None:
    """The sandbox is what it claims: as the pod user, / /tmp /dev/shm are read-only; the volume is not."""
    probe = pod.as_pod_user(f"id -u; for d in / /tmp /dev/shm /var/lib {pod.mount_path}; do"
                            ' if touch "$d/.w" 2>/dev/null; then echo "rw $d"; rm -f "$d/.w"; else echo "ro $d"; fi;'
                            " done")
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.split("\n")
    assert lines[0] == str(pod.uid)
    assert [line for line in lines[1:] if line.startswith("rw")] == [f"rw {pod.mount_path}"], probe.stdout


def test_manifest_gearmand_starts_non_root_read_only_and_serves(pod: PodGearmand, tmp_path: Path) -> None:
    pod.start()
    assert Path(f"/proc/{pod.gearmand_pid}/status").read_text().split("Uid:")[1].split()[0] == str(pod.uid)
    worker = subprocess.Popen(["nsenter", f"--net=/proc/{pod.proc.pid}/ns/net", "--",  # type: ignore[union-attr]
                               "gearman", "-h", "127.0.0.1", "-w", "-f", "rev", "-c", "1", "--", "rev"])
    try:
        reply = pod.ns(["gearman", "-h", "127.0.0.1", "-f", "rev", "hello"], timeout=60)
        assert reply.stdout.strip() == "olleh", (reply.stdout, reply.stderr, pod.log.read_text())
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    # The queue lives on the volume, and nowhere else could be written.
    db = flag(pod.argv, "libsqlite3-db")
    assert db and db.startswith(pod.mount_path + "/") and flag(pod.argv, "queue-type") == "libsqlite3"
    assert (pod.volume / Path(db).name).is_file()
    assert "ERROR" not in pod.log.read_text(), pod.log.read_text()
    # The initContainer's write-ahead-log mode is stored in the file and gearmand kept it.
    with contextlib.closing(sqlite3.connect(pod.volume / Path(db).name)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_manifest_gearmand_keeps_queued_jobs_through_sigkill(pod: PodGearmand, tmp_path: Path) -> None:
    pod.start()
    for i in range(5):
        queued = pod.ns(["gearman", "-h", "127.0.0.1", "-b", "-f", "later", "-u", f"job{i}", f"payload {i}"])
        assert queued.returncode == 0, queued.stderr
    assert pod.status()["later"][0] == 5
    pod.kill()
    pod.start()  # a new container on the same claim
    assert pod.status()["later"][0] == 5, "the restarted server lost its queue"
    out = tmp_path / "out"
    out.mkdir()
    run = pod.ns(["gearman", "-h", "127.0.0.1", "-w", "-f", "later", "-c", "5", "--", "sh", "-c",
                  f'cat > "$(mktemp -p {out})"'], timeout=60)
    assert run.returncode == 0, run.stderr
    assert sorted(p.read_text() for p in out.iterdir()) == [f"payload {i}" for i in range(5)]
    assert pod.status()["later"] == (0, 0, 0)


Gearman = Callable[..., subprocess.CompletedProcess[str]]


def poison(gearman: Gearman, retries: int) -> int:
    """Submit one background job whose every worker dies holding it; return how many workers it killed."""
    assert gearman(["-b", "-f", "poison", "x"]).returncode == 0
    killed = 0
    for _ in range(retries + 2):
        # The job's command SIGKILLs its own worker (a decoder crash); a worker that gets no job times out.
        w = gearman(["-w", "-f", "poison", "-c", "1", "--", "sh", "-c", "kill -9 $PPID"], limit=10)
        if w.returncode == 124:
            break
        assert w.returncode in (137, -9), (w.returncode, w.stderr)
        killed += 1
    return killed


def test_manifest_gearmand_drops_a_poison_job_after_its_retries(pod: PodGearmand) -> None:
    retries = int(flag(pod.argv, "job-retries") or 0)
    assert retries > 0, "--job-retries must be set: gearmand's default (0) hands a poison job on forever"
    pod.start()

    def gearman(args: list[str], limit: float = 30) -> subprocess.CompletedProcess[str]:
        return pod.ns(["timeout", str(limit), "gearman", "-h", "127.0.0.1", *args], timeout=limit + 30)

    assert poison(gearman, retries) == retries
    assert pod.status().get("poison", (0, 0, 0)) == (0, 0, 0)


def test_local_default_drops_a_poison_job_after_its_retries() -> None:
    with local.Gearmand() as g:
        def gearman(args: list[str], limit: float = 30) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["timeout", str(limit), "gearman", "-h", "127.0.0.1", "-p", str(g.port), *args],
                                  capture_output=True, text=True, timeout=limit + 30)

        assert poison(gearman, local.JOB_RETRIES) == local.JOB_RETRIES


def keepalive_left_s(ss_output: str, port: int) -> list[float]:
    """Seconds left on the keepalive timer of each established connection whose local port is ``port``
    (``ss -Htno``: Recv-Q Send-Q Local Peer [timer:(keepalive,29sec,0)]); inf where there is no timer."""
    left = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2].endswith(f":{port}"):
            m = re.search(r"timer:\(keepalive,(\d+(?:\.\d+)?)(ms|sec|min)", line)
            scale = {"ms": 0.001, "sec": 1, "min": 60}
            left.append(float(m.group(1)) * scale[m.group(2)] if m else float("inf"))
    return left


def test_manifest_gearmand_sets_keepalive_on_its_connections(pod: PodGearmand) -> None:
    idle = int(flag(pod.argv, "keepalive-idle") or 0)
    assert flag(pod.argv, "keepalive") == "" and 0 < idle <= 60
    assert int(flag(pod.argv, "keepalive-interval") or 0) > 0 and int(flag(pod.argv, "keepalive-count") or 0) > 0
    pod.start()
    # SIGKILL: the gearman CLI survives a SIGTERM that comes early in its start (16 of 20 tries here), and a
    # survivor holds the output pipe open until the timeout. Wait for the connection rather than a fixed second.
    out = pod.ns(["sh", "-c", "gearman -h 127.0.0.1 -w -f idle & for i in $(seq 100); do "
                  "out=$(ss -Htno state established); case $out in *:4730*) break;; esac; sleep 0.1; done; "
                  "echo \"$out\"; kill -KILL $!"])
    left = keepalive_left_s(out.stdout, 4730)
    assert left and all(0 < s <= idle for s in left), out.stdout


def test_local_default_matches_the_manifest() -> None:
    """The job-server flags the tests and `./dev demo` run with are the pod's (paths and address aside)."""
    args = pod_of("gearmand-a")["containers"][0]["args"]
    local_args = local.default_args("/var/lib/gearman/queue.sqlite3")
    for name in ("queue-type", "job-retries", "keepalive", "keepalive-idle", "keepalive-interval", "keepalive-count"):
        assert flag(args, name) == flag(local_args, name), name
    db = flag(args, "libsqlite3-db")
    assert db is not None and Path(db).name == local.QUEUE_FILE
    assert "--store-queue-on-shutdown" not in args + local_args


def test_queue_claims_are_valid() -> None:
    import kubernetes_validate

    claims = [d for d in render("production") if d["kind"] == "PersistentVolumeClaim"]
    assert {c["metadata"]["name"] for c in claims} == {"gearmand-a-queue", "gearmand-b-queue"}
    for claim in claims:
        kubernetes_validate.validate(claim, "1.29.0", strict=True)  # test_deploy.K8S_VERSION
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # one writer: the pod of strategy Recreate
    for name in ("gearmand-a", "gearmand-b"):
        dep = next(d for d in deployments() if d["metadata"]["name"] == name)
        assert dep["spec"]["strategy"] == {"type": "Recreate"} and dep["spec"]["replicas"] == 1
