"""``batch`` jobs: map-reduce over a prefix through gearmand with real worker processes and a real S3 server."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.fixtures_s3 import TEST_SECRET, MotoServer, wait_for_workers
from support.workerproc import WorkerProc

from imgworker import Client
from imgworker.core.errors import BadRequest
from imgworker.testing.gearmand import Gearmand

CORRUPT = {
    "bad/text.jpg": b"this is not an image",
    "bad/empty.jpg": b"",
    "bad/trunc.jpg": b"\xff\xd8\xff\xe0" + bytes(64),
}
CORRUPT_CODES = {"bad/text.jpg": "UNSUPPORTED_IMAGE", "bad/empty.jpg": "UNSUPPORTED_IMAGE",
                 "bad/trunc.jpg": "DECODE_FAILED"}  # a JPEG header and no image data: it is a JPEG, undecodable


def jpeg(i: int, width: int, height: int) -> bytes:
    colour = [i % 256, (i * 7) % 256, (i * 13) % 256]
    image = pyvips.Image.black(width, height, bands=3).linear([1, 1, 1], colour)
    return bytes(image.cast("uchar").jpegsave_buffer(Q=80))


def upload(admin: Any, bucket: str, n: int, size: tuple[int, int]) -> list[str]:
    keys = [f"in/{i // 50:02d}/img{i:04d}.jpg" for i in range(n)]
    bodies = {k: jpeg(i, *size) for i, k in enumerate(keys)} | {f"in/{k}": v for k, v in CORRUPT.items()}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: admin.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), bodies.items()))
    return list(bodies)


def wait_manifest(admin: Any, bucket: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            manifest = json.loads(admin.get_object(Bucket=bucket, Key="out/manifest.json")["Body"].read())
            if manifest.get("complete"):
                return manifest
        except admin.exceptions.NoSuchKey:
            pass
        time.sleep(0.2)
    raise TimeoutError("batch manifest not complete")


def check_manifest(manifest: dict[str, Any], admin: Any, bucket: str, keys: list[str], width: int) -> None:
    objects = {e["src"]: e for e in manifest["objects"]}
    # One listing for every output's size (HEAD per object costs seconds against the loopback server).
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/")
    sizes = {f"s3://{bucket}/{o['Key']}": o["Size"] for page in pages for o in page.get("Contents", [])}
    assert sorted(objects) == sorted(f"s3://{bucket}/{k}" for k in keys)
    assert manifest["total"] == manifest["done"] == len(keys)
    assert manifest["failed"] == len(CORRUPT) and manifest["succeeded"] == len(keys) - len(CORRUPT)
    assert sum(manifest["errors"].values()) == len(CORRUPT)
    for src, entry in objects.items():
        rel = src.split("/in/", 1)[1]
        assert entry["dst"] == f"s3://{bucket}/out/{rel.removesuffix('.jpg')}.webp"
        if rel.startswith("bad/"):
            assert not entry["ok"] and entry["error"]["code"] == CORRUPT_CODES[rel], (rel, entry)
            continue
        assert entry["ok"], entry
        assert entry["dst"] in sizes
        if not entry.get("skipped"):
            assert entry["width"] == width and entry["bytes"] == sizes[entry["dst"]]
    sample = next(e["dst"] for e in objects.values() if e["ok"])
    assert admin.head_object(Bucket=bucket, Key=sample.split("/", 3)[3])["ContentType"] == "image/webp"


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"batch-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=name)
    return name


def test_batch_over_a_prefix_with_two_workers(
    moto_s3: MotoServer, s3_client: Any, bucket: str, s3_worker_factory: Callable[..., WorkerProc]
) -> None:
    keys = upload(s3_client, bucket, 200, (64, 48))
    with Gearmand() as g:
        workers = [s3_worker_factory(g.address, moto_s3.endpoint, [bucket]) for _ in range(2)]
        wait_for_workers(g.address, "resize", 2)
        wait_for_workers(g.address, "batch", 2)
        payload = {"src": f"s3://{bucket}/in/", "dst": f"s3://{bucket}/out/", "width": 48, "format": "webp"}
        with Client([g.address]) as client:
            handle = client.submit_background("batch", {**payload, "in_flight": 16})
            progress = []
            while (st := client.status(handle)).known:
                if st.running and st.denominator:
                    progress.append((st.numerator, st.denominator))
                time.sleep(0.05)
        manifest = wait_manifest(s3_client, bucket)
        check_manifest(manifest, s3_client, bucket, keys, 48)
        assert manifest["skipped"] == 0 and manifest["wall_s"] > 0
        assert progress and all(d == len(keys) for _, d in progress)
        for w in workers:  # the map went through gearmand to both workers
            assert "function=resize outcome=ok" in w.log()
            assert TEST_SECRET not in w.log()


def test_batch_resumes_on_another_worker_after_sigkill(
    moto_s3: MotoServer, s3_client: Any, bucket: str, s3_worker_factory: Callable[..., WorkerProc]
) -> None:
    keys = upload(s3_client, bucket, 120, (160, 120))
    with Gearmand() as g:
        # --concurrency 1: the batch must not need an image slot of its own (it would deadlock).
        workers = [s3_worker_factory(g.address, moto_s3.endpoint, [bucket], concurrency=1) for _ in range(2)]
        wait_for_workers(g.address, "batch", 2)
        payload = {"src": f"s3://{bucket}/in/", "dst": f"s3://{bucket}/out/", "width": 64, "format": "webp"}
        with Client([g.address]) as client:
            handle = client.submit_background("batch", {**payload, "in_flight": 4})
            deadline = time.monotonic() + 120
            while (st := client.status(handle)).numerator < len(keys) // 4:
                assert st.known and time.monotonic() < deadline
                time.sleep(0.05)
        holder = next(w for w in workers if "batch start" in w.log())
        survivor = next(w for w in workers if w is not holder)
        holder.signal(signal.SIGKILL)
        manifest = wait_manifest(s3_client, bucket)
        check_manifest(manifest, s3_client, bucket, keys, 64)
        assert manifest["attempt"] >= 1
        resumed = [line for line in survivor.log().splitlines() if "batch start" in line]
        assert resumed, survivor.log()[-2000:]
        todo = int(resumed[-1].split("todo=")[1].split()[0])
        assert todo <= len(keys) - len(keys) // 4  # objects done before the kill were skipped
        assert manifest["skipped"] + (manifest["attempt"] > 1) > 0


def test_file_batch_on_one_single_slot_worker_and_resubmission_skips_done(
    gearmand_factory: Callable[[], Gearmand], tmp_path: Path, moto_s3: MotoServer,
    s3_worker_factory: Callable[..., WorkerProc],
) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(12):
        (src / ("sub" if i % 2 else "") / f"p{i}.jpg").write_bytes(jpeg(i, 64, 48))
    g = gearmand_factory()
    s3_worker_factory(g.address, moto_s3.endpoint, [], concurrency=1, root=tmp_path)
    wait_for_workers(g.address, "batch", 1)
    payload = {"src": src.as_uri(), "dst": (tmp_path / "out").as_uri(), "width": 32}
    with Client([g.address], timeout=120) as client:
        first = client.run("batch", payload)
        assert first.ok is True
        assert (first.total, first.succeeded, first.failed, first.skipped) == (12, 12, 0, 0)
        assert sorted(p.name for p in (tmp_path / "out").rglob("*.jpg")) == sorted(f"p{i}.jpg" for i in range(12))
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["complete"] and len(manifest["objects"]) == 12
        again = client.run("batch", payload, unique="again")
        assert (again.total, again.succeeded, again.attempt) == (12, 12, 2)
        with pytest.raises(BadRequest) as info:
            client.run("batch", {**payload, "widht": 32})
        assert "width" in info.value.message
