"""s3:// end to end: a real worker process, real gearmand, a real S3 HTTP server, the corpus photos."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.corpus import photo, photos
from support.fixtures_s3 import S3_ENV, TEST_SECRET, MotoServer, start_s3_worker, wait_for_workers
from support.workerproc import WorkerProc

from imgworker import Client
from imgworker.core.errors import ForbiddenPath, LimitExceeded, SourceNotFound, StoreFailed
from imgworker.testing.gearmand import Gearmand

MAX_SOURCE = 8 * 1024 * 1024


@dataclass
class Env:
    gearmand: Gearmand
    worker: WorkerProc
    bucket: str  # allowed whole
    shared: str  # only shared/in/ and shared/out/ allowed
    root: Path
    admin: Any


@pytest.fixture(scope="module")
def env(moto_s3: MotoServer, s3_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    bucket, shared = f"imgs-{uuid.uuid4().hex[:10]}", f"shared-{uuid.uuid4().hex[:10]}"
    for b in (bucket, shared):
        s3_client.create_bucket(Bucket=b)
    for path in photos():
        s3_client.put_object(Bucket=bucket, Key=f"in/{path.name}", Body=path.read_bytes())
    kleiber = photo("baseline").read_bytes()
    s3_client.put_object(Bucket=shared, Key="private/k.jpg", Body=kleiber)
    root = tmp_path_factory.mktemp("s3root")
    with Gearmand() as g:
        worker = start_s3_worker(
            g.address, moto_s3.endpoint, [bucket, f"{shared}/in", f"{shared}/out", "allowed-but-missing"], root,
            "--max-source-bytes", str(MAX_SOURCE),
        )
        try:
            worker.wait_registered("resize")
            yield Env(g, worker, bucket, shared, root, s3_client)
        finally:
            worker.stop()
            assert TEST_SECRET not in worker.log()


@pytest.fixture
def client(env: Env) -> Iterator[Client]:
    with Client([env.gearmand.address], timeout=120) as c:
        yield c


def decoded(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


def test_corpus_photos_s3_to_s3(env: Env, client: Client) -> None:
    for path in photos():
        dst = f"s3://{env.bucket}/out/{path.stem}.webp"
        result = client.resize(src=f"s3://{env.bucket}/in/{path.name}", dst=dst, width=320)
        obj = env.admin.get_object(Bucket=env.bucket, Key=f"out/{path.stem}.webp")
        data = obj["Body"].read()
        assert obj["ContentType"] == "image/webp"
        assert result.bytes == len(data) and result.width == 320
        image = decoded(data)
        assert (image.width, image.height) == (result.width, result.height)


def test_cross_scheme_both_ways(env: Env, client: Client) -> None:
    out = env.root / "from-s3" / "k.jpg"
    client.resize(src=f"s3://{env.bucket}/in/{photo('baseline').name}", dst=out.as_uri(), width=200)
    assert decoded(out.read_bytes()).width == 200
    result = client.resize(src=out.as_uri(), dst=f"s3://{env.bucket}/from-file/k.png", width=100)
    obj = env.admin.get_object(Bucket=env.bucket, Key="from-file/k.png")
    assert obj["ContentType"] == "image/png" and result.format == "png"
    assert decoded(obj["Body"].read()).width == 100


def test_bucket_allow_list(env: Env, client: Client) -> None:
    k = photo("baseline").name
    forbidden = [
        (f"s3://{env.shared}/private/k.jpg", f"s3://{env.shared}/out/k.jpg"),  # src outside the prefixes
        (f"s3://{env.bucket}/in/{k}", f"s3://{env.shared}/private/k2.jpg"),  # dst outside the prefixes
        (f"s3://{env.bucket}/in/{k}", "s3://some-other-bucket/k.jpg"),  # not listed at all
        (f"s3://{env.bucket}/in/{k}", f"s3://{env.shared}/out/../private/k.jpg"),  # escape by dot segments
    ]
    for src, dst in forbidden:
        with pytest.raises(ForbiddenPath):
            client.resize(src=src, dst=dst, width=64)
    assert env.admin.list_objects_v2(Bucket=env.shared, Prefix="out/").get("KeyCount") == 0
    client.resize(src=f"s3://{env.bucket}/in/{k}", dst=f"s3://{env.shared}/out/k.jpg", width=64)


def test_missing_key_and_bucket(env: Env, client: Client) -> None:
    for src in (f"s3://{env.bucket}/in/nope.jpg", "s3://allowed-but-missing/a.jpg"):
        with pytest.raises(SourceNotFound):
            client.resize(src=src, dst=f"s3://{env.bucket}/out/x.jpg", width=64)


def test_oversized_object_is_limit_exceeded(env: Env, client: Client) -> None:
    env.admin.put_object(Bucket=env.bucket, Key="big/huge.jpg", Body=b"\xff" * (MAX_SOURCE + 1))
    with pytest.raises(LimitExceeded):
        client.resize(src=f"s3://{env.bucket}/big/huge.jpg", dst=f"s3://{env.bucket}/out/huge.jpg", width=64)


def test_submit_cli_over_an_s3_prefix(env: Env, moto_s3: MotoServer) -> None:
    """``imgworker submit`` lists the prefix (client side, AWS_ENDPOINT_URL) and submits one job per object."""
    cmd = [sys.executable, "-m", "imgworker", "submit", "--server", env.gearmand.address, "--width", "64",
           "--format", "jpeg", f"s3://{env.bucket}/in/", f"s3://{env.bucket}/cli-out/"]
    run_env = {**env.worker.env, "AWS_ENDPOINT_URL": moto_s3.endpoint}
    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)
    summary = json.loads(proc.stdout)
    shipped = photos()
    assert proc.returncode == 0 and (summary["jobs"], summary["done"]) == (len(shipped), len(shipped)), proc.stderr
    listed = env.admin.list_objects_v2(Bucket=env.bucket, Prefix="cli-out/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"cli-out/{p.stem}.jpg" for p in shipped)


def test_store_down_mid_test_is_retryable_and_the_worker_recovers(
    moto_factory: Any, tmp_path: Path
) -> None:
    server = moto_factory()
    webp = photo("webp").read_bytes()

    def seed() -> None:
        admin = server.client()
        admin.create_bucket(Bucket="flaky")
        admin.put_object(Bucket="flaky", Key="in/s.webp", Body=webp)

    seed()
    job = {"src": "s3://flaky/in/s.webp", "dst": "s3://flaky/out/s.jpg", "width": 64}
    with Gearmand() as g:
        # At debug level too: botocore's own DEBUG lines would print the Authorization header.
        worker = start_s3_worker(g.address, server.endpoint, ["flaky"], tmp_path, "--log-level", "debug")
        try:
            wait_for_workers(g.address, "resize", 1)
            with Client([g.address], timeout=120) as c:
                assert c.run("resize", job).width == 64
                server.stop()
                with pytest.raises(StoreFailed) as info:
                    c.run("resize", job, unique="while-down")
                assert info.value.retryable
                assert TEST_SECRET not in info.value.message
                server.start()  # same port; a fresh server starts empty
                seed()
                assert c.run("resize", job, unique="after").width == 64
            assert worker.alive()
        finally:
            worker.stop()
        log = worker.log()
        assert "STORE_FAILED" in log
        for secret in (TEST_SECRET, "Signature=", "Credential=", S3_ENV["AWS_ACCESS_KEY_ID"]):
            assert secret not in log
