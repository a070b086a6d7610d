"""The container images, run as k8s/ runs them: ``./dev images`` builds them, then runs this folder.

Each container gets what k8s/overlays/production (rendered) gives it: its user (uid 10001 / 10002), a read-only root
filesystem, a tmpfs /tmp, every capability dropped, no privilege escalation, its memory limit, and the manifest's own
command and args. Two gearmand containers stand in for the Services gearmand-a and gearmand-b (host network, each on
its own loopback address, port 4730 as in the manifest; ``--add-host`` gives the worker the Service names), and a
real S3 server (moto) stands in for the bucket (IMGWORKER_S3_ENDPOINT, the one setting a cluster does not need). The
worker's environment is the overlay's imgworker-config (job servers, bucket, region) and env. Jobs go from the Python
client on this machine through the gearmand image to the worker image.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.corpus import photo
from support.fixtures_s3 import S3_ENV, MotoServer
from support.kustomize import config_env, find, render

from imgworker import Client, __version__

CPU_IMAGE = os.environ.get("IMGWORKER_IMAGE_CPU", f"localhost/imgworker:{__version__}-cpu")
GEARMAND_IMAGE = os.environ.get("IMGWORKER_IMAGE_GEARMAND", "localhost/imgworker-gearmand:1.1.20")
# The Service names the manifests use, each on its own loopback address so both keep port 4730.
SERVICES = {"gearmand-a": "127.0.0.2", "gearmand-b": "127.0.0.3"}
# runc and explicit ulimits: what runs in sandboxed kernels (gVisor) where crun and podman's defaults do not.
RUNTIME = ["--runtime", "runc"] if shutil.which("runc") else []
BASE_FLAGS = [*RUNTIME, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "host"]
NAME = f"imgw-images-{os.getpid()}"


def manifest(name: str) -> dict[str, Any]:
    return find(render("production"), "Deployment", name)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def security_flags(container: dict[str, Any], pod: dict[str, Any], user: str) -> list[str]:
    """The podman flags for what the manifest's securityContext and limits ask for (asserted, not assumed)."""
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    limit = container["resources"]["limits"]["memory"]
    memory = re.sub(r"(\d+)([MG])i", lambda m: f"{m.group(1)}{m.group(2).lower()}", limit)
    return ["--user", user, "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--memory", memory]


def wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout} s")


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@dataclass
class Stack:
    worker: str
    bucket: str
    s3: Any
    metrics_port: int
    servers: list[str]


def start_gearmand(service: str, address: str, queue_dir: Path) -> str:
    dep = manifest(service)
    pod = dep["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (c,) = pod["containers"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    queue_dir.mkdir()
    os.chown(queue_dir, pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"])
    volume = ["-v", f"{queue_dir}:{c['volumeMounts'][0]['mountPath']}"]
    # The initContainer first (the queue file in WAL mode), as the kubelet runs it.
    podman("run", "--rm", *BASE_FLAGS, *security_flags(init, pod, user), *volume, "--entrypoint", init["command"][0],
           GEARMAND_IMAGE, *init["command"][1:])
    args = [a if not a.startswith("--listen=") else f"--listen={address}" for a in c["args"]]
    port = int(next(a for a in args if a.startswith("--port=")).split("=")[1])
    name = f"{NAME}-{service}"
    podman("run", "-d", "--name", name, *BASE_FLAGS, *security_flags(c, pod, user), *volume,
           "--entrypoint", c["command"][0], GEARMAND_IMAGE, *args)
    wait_port(address, port, 30)
    return name


def start_worker(endpoint: str) -> tuple[str, list[str], int, str]:
    dep = manifest("imgworker-cpu")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = config_env(render("production"), c)
    env |= {"IMGWORKER_S3_ENDPOINT": endpoint, **S3_ENV}  # the secretRef's AWS keys; the endpoint: not AWS here
    hosts = [f"--add-host={service}:{address}" for service, address in SERVICES.items()]
    tmp = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "tmp")
    name = f"{NAME}-worker"
    podman("run", "-d", "--name", name, *BASE_FLAGS, *security_flags(c, pod, "10001:10001"), "--tmpfs", tmp,
           *hosts, *(f"-e={k}={v}" for k, v in env.items()), CPU_IMAGE, *c["args"])
    port = int(next(a for a in c["args"] if a.startswith("--metrics-port=")).split("=")[1])
    return name, env["IMGWORKER_SERVERS"].split(","), port, env["IMGWORKER_S3_BUCKETS"].split(",")[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for image in (CPU_IMAGE, GEARMAND_IMAGE):
        assert podman("image", "exists", image, check=False).returncode == 0, f"{image}: build it with ./dev images"
    moto = MotoServer().start()
    names: list[str] = []
    try:
        root = tmp_path_factory.mktemp("images")
        for service, address in SERVICES.items():
            names.append(start_gearmand(service, address, root / service))
        worker, servers, port, bucket = start_worker(moto.endpoint)
        names.append(worker)
        s3 = moto.client()
        s3.create_bucket(Bucket=bucket)
        yield Stack(worker, bucket, s3, port, servers)
    finally:
        for name in reversed(names):
            logs = podman("logs", name, check=False)
            print(f"--- {name}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
            podman("rm", "-f", "-t", "5", name, check=False)
        moto.stop()


def healthy(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", stack.worker, "imgworker", "health", *args, check=False)


def wait_healthy(stack: Stack, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(stack, "--ready").returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"worker not ready after {timeout} s: {podman('logs', stack.worker, check=False).stderr}")


def client_servers(stack: Stack) -> list[str]:
    return [f"{SERVICES[s.split(':')[0]]}:{s.split(':')[1]}" for s in stack.servers]


def test_worker_runs_as_the_manifest_says(stack: Stack) -> None:
    wait_healthy(stack)
    proc = healthy(stack)  # no arguments: IMGWORKER_METRICS_PORT from the image, as the HEALTHCHECK runs it
    assert proc.returncode == 0 and " 200 " in proc.stdout, proc.stdout + proc.stderr
    assert podman("exec", stack.worker, "id", "-u").stdout.strip() == "10001"
    denied = podman("exec", stack.worker, "touch", "/opt/imgworker/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    caps = podman("exec", stack.worker, "grep", "CapEff", "/proc/1/status").stdout.split()[1]
    assert int(caps, 16) == 0, caps
    inspect = json.loads(podman("inspect", stack.worker).stdout)[0]
    assert inspect["Config"]["Healthcheck"]["Test"][-3:] == ["imgworker", "health", "--quiet"]  # --format docker
    # The memory budget comes from the container's limit (the manifest's, given as --memory), not the host's RAM.
    logs = podman("logs", stack.worker).stderr
    budget = re.search(r"memory budget (\d+) MiB per process \(container limit shared by 1 process", logs)
    assert budget and 1000 < int(budget.group(1)) < 1536, logs[-2000:]


def test_resize_and_pipeline_jobs_through_the_gearmand_image(stack: Stack) -> None:
    wait_healthy(stack)
    src = f"s3://{stack.bucket}/in/{uuid.uuid4().hex}.jpg"
    stack.s3.put_object(Bucket=stack.bucket, Key=src.split("/", 3)[3], Body=photo("baseline").read_bytes())
    with Client(client_servers(stack), timeout=60) as client:
        result = client.resize(src=src, dst=f"s3://{stack.bucket}/out/k512.webp", width=512)
        assert (result.width, result.format, result.backend) == (512, "webp", "cpu")
        body = stack.s3.get_object(Bucket=stack.bucket, Key="out/k512.webp")["Body"].read()
        assert pyvips.Image.new_from_buffer(body, "").width == 512
        web = client.run("web", {"src": src, "dst": f"s3://{stack.bucket}/web/"})
    keys = {o["Key"] for o in stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="web/")["Contents"]}
    assert len(web.outputs) >= 2 and {o["dst"].split("/", 3)[3] for o in web.outputs} <= keys


def test_stop_drains_the_job_in_flight(stack: Stack, tmp_path: Path) -> None:
    """`podman stop` sends SIGTERM to tini, which hands it to the worker: the job running finishes, exit 0."""
    wait_healthy(stack)
    big = pyvips.Image.gaussnoise(6000, 4000).cast("uchar").bandjoin([128, 64])
    stack.s3.put_object(Bucket=stack.bucket, Key="in/big.jpg", Body=big.jpegsave_buffer(Q=95))
    with Client(client_servers(stack)) as client:
        # An AVIF encode of 3000 px: seconds of work, still running when the stop comes.
        client.submit_background("resize", {"src": f"s3://{stack.bucket}/in/big.jpg", "width": 3000,
                                            "dst": f"s3://{stack.bucket}/drained/big.avif"})
    deadline = time.monotonic() + 60
    while metric(stack.metrics_port, "imgworker_jobs_in_flight") < 1:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    podman("stop", "-t", "75", stack.worker, timeout=120)
    state = json.loads(podman("inspect", stack.worker).stdout)[0]["State"]
    logs = podman("logs", stack.worker).stderr
    assert state["ExitCode"] == 0, logs[-3000:]
    assert "draining: no new jobs; 1 in flight" in logs and "worker stopped cleanly" in logs, logs[-3000:]
    assert re.search(r"outcome=ok .*dst=s3://\S+/drained/big.avif", logs), logs[-3000:]
    head = stack.s3.head_object(Bucket=stack.bucket, Key="drained/big.avif")
    assert head["ContentLength"] > 0
