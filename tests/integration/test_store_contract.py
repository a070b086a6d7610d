"""One contract for every store: the same tests run against FileStore and S3Store (a real S3 HTTP server)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.fixtures_s3 import S3_ENV, TEST_PART_SIZE

from imgworker.core.errors import BadRequest, ForbiddenPath, LimitExceeded, SourceNotFound
from imgworker.stores import FileStore, Store, WriteOptions
from imgworker.stores.s3 import S3Store
from imgworker.stores.s3_client import make_client

OPTS = WriteOptions(content_type="image/jpeg")


@dataclass
class Case:
    store: Store
    url: Callable[[str], str]  # key -> URL inside the allowed area
    forbidden: str  # an existing object the store must refuse to touch
    malformed: str
    read_raw: Callable[[str], bytes]  # read the forbidden object around the store


@pytest.fixture(params=["file", "s3"])
def case(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    if request.param == "file":
        root = tmp_path / "root"
        root.mkdir()
        outside = tmp_path / "outside" / "secret.jpg"
        outside.parent.mkdir()
        outside.write_bytes(b"outside")
        return Case(
            FileStore([root]),
            lambda key: (root / key).as_uri(),
            outside.as_uri(),
            "file://somehost/x.jpg",
            lambda _url: outside.read_bytes(),
        )
    moto = request.getfixturevalue("moto_s3")
    admin = request.getfixturevalue("s3_client")
    bucket = request.getfixturevalue("s3_bucket")
    admin.put_object(Bucket=bucket, Key="outside/secret.jpg", Body=b"outside")
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    client = make_client(endpoint=moto.endpoint, max_attempts=2, timeout=5)
    # Multipart from two parts up, so the large-object tests below go through it.
    store = S3Store(client, [f"{bucket}/allowed"], multipart_threshold=2 * TEST_PART_SIZE, part_size=TEST_PART_SIZE)
    return Case(
        store,
        lambda key: f"s3://{bucket}/allowed/{key}",
        f"s3://{bucket}/outside/secret.jpg",
        "s3://not a bucket/x.jpg",
        lambda _url: admin.get_object(Bucket=bucket, Key="outside/secret.jpg")["Body"].read(),
    )


def test_write_then_read_gives_the_same_bytes(case: Case) -> None:
    url = case.url(f"a/{uuid.uuid4().hex}.jpg")
    case.store.write(url, b"first" * 1000, OPTS)
    assert case.store.read(url, max_bytes=10**6) == b"first" * 1000
    case.store.write(url, b"second", OPTS)
    assert case.store.read(url, max_bytes=10**6) == b"second"


def test_large_objects_round_trip(case: Case) -> None:
    data = uuid.uuid4().bytes * (5 * TEST_PART_SIZE // 16 + 3)  # over the multipart threshold, not a part multiple
    url = case.url("big/object.bin")
    case.store.write(url, data, OPTS)
    assert case.store.read(url, max_bytes=len(data)) == data


def test_missing_source_is_source_not_found(case: Case) -> None:
    with pytest.raises(SourceNotFound):
        case.store.read(case.url("no/such/object.jpg"), max_bytes=1000)


def test_oversized_source_is_refused(case: Case) -> None:
    url = case.url("sized.bin")
    case.store.write(url, b"x" * 5000, OPTS)
    with pytest.raises(LimitExceeded) as info:
        case.store.read(url, max_bytes=4999)
    assert "5000" in info.value.message
    assert case.store.read(url, max_bytes=5000) == b"x" * 5000  # the limit is inclusive


def test_exists(case: Case) -> None:
    url = case.url("e/x.jpg")
    assert not case.store.exists(url)
    case.store.write(url, b"1", OPTS)
    assert case.store.exists(url)


def test_list_is_a_stable_recursive_directory_listing(case: Case) -> None:
    for key in ("d/1.jpg", "d/2.png", "d/sub/3.jpg", "d/.hidden.jpg", "dx/not-in-d.jpg"):
        case.store.write(case.url(key), b"1", OPTS)
    listed = list(case.store.list(case.url("d")))
    assert sorted(listed) == sorted(case.url(k) for k in ("d/1.jpg", "d/2.png", "d/sub/3.jpg"))
    assert list(case.store.list(case.url("d/"))) == listed  # trailing slash or not, same order every time


def test_write_is_atomic_for_concurrent_readers(case: Case) -> None:
    """A reader sees the old object or the whole new one, never a part (multipart included for s3://)."""
    url = case.url("atomic.bin")
    versions = [bytes([i]) * (2 * TEST_PART_SIZE + 4097) for i in (1, 2)]
    case.store.write(url, versions[0], OPTS)
    seen: list[bytes] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(case.store.read(url, max_bytes=10**7))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(8):
            case.store.write(url, versions[i % 2], OPTS)
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert seen and all(data in versions for data in seen)


@pytest.mark.parametrize("op", ["read", "write", "exists", "list", "check"])
def test_outside_the_allowed_area_is_forbidden(case: Case, op: str) -> None:
    url = case.forbidden
    calls: dict[str, Callable[[], Any]] = {
        "read": lambda: case.store.read(url, max_bytes=1000),
        "write": lambda: case.store.write(url, b"overwritten", OPTS),
        "exists": lambda: case.store.exists(url),
        "list": lambda: list(case.store.list(url.rsplit("/", 1)[0] + "/")),
        "check": lambda: case.store.check(url, write=True),
    }
    with pytest.raises(ForbiddenPath):
        calls[op]()
    assert case.read_raw(url) == b"outside"


def test_escaping_with_dot_segments_is_forbidden(case: Case) -> None:
    url = case.url("../outside/secret.jpg")
    with pytest.raises(ForbiddenPath):
        case.store.read(url, max_bytes=1000)


def test_malformed_url_is_bad_request(case: Case) -> None:
    with pytest.raises(BadRequest):
        case.store.check(case.malformed)
