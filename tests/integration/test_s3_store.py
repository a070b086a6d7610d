"""S3Store beyond the shared contract: headers, multipart failure, bytes not downloaded, error translation
(against real S3 HTTP servers, one of them enforcing authentication), the allow-list and configuration."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from support.fixtures_s3 import S3_ENV, TEST_PART_SIZE, TEST_SECRET, CountingProxy, MotoServer

from imgworker.core.config import ConfigError, WorkerConfig
from imgworker.core.errors import ForbiddenPath, ImgworkerError, LimitExceeded, SourceNotFound, StoreFailed
from imgworker.stores import WriteOptions
from imgworker.stores.s3 import S3Store, list_objects
from imgworker.stores.s3_client import make_client
from imgworker.stores.s3_url import AllowList, parse_s3_url

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)


def store_at(endpoint: str, buckets: list[str], **kw: Any) -> S3Store:
    return S3Store(make_client(endpoint=endpoint, max_attempts=2, timeout=5), buckets, **kw)


def assert_no_secrets(exc: ImgworkerError, *extra: str) -> None:
    text = json.dumps(exc.to_dict()) + repr(exc) + str(exc)
    for secret in (TEST_SECRET, "Signature=", "Credential=", "AWS4-HMAC", S3_ENV["AWS_ACCESS_KEY_ID"], *extra):
        assert secret not in text
    assert exc.__cause__ is None and exc.__suppress_context__  # no botocore exception chained for a logger


def test_write_sets_content_type_cache_control_and_metadata(
    moto_s3: MotoServer, s3_client: Any, s3_bucket: str
) -> None:
    store = store_at(moto_s3.endpoint, [s3_bucket])
    options = WriteOptions("image/webp", cache_control="public, max-age=31536000", metadata={"source": "kleiber"})
    store.write(f"s3://{s3_bucket}/out/k.webp", b"RIFF....WEBP", options)
    head = s3_client.head_object(Bucket=s3_bucket, Key="out/k.webp")
    assert head["ContentType"] == "image/webp"
    assert head["CacheControl"] == "public, max-age=31536000"
    assert head["Metadata"] == {"source": "kleiber"}


def test_multipart_write_sets_content_type(moto_s3: MotoServer, s3_client: Any, s3_bucket: str) -> None:
    store = store_at(moto_s3.endpoint, [s3_bucket], multipart_threshold=TEST_PART_SIZE, part_size=TEST_PART_SIZE)
    data = bytes(range(256)) * (3 * TEST_PART_SIZE // 256 + 1)
    store.write(f"s3://{s3_bucket}/big.png", data, WriteOptions("image/png"))
    head = s3_client.head_object(Bucket=s3_bucket, Key="big.png")
    assert head["ContentType"] == "image/png"
    assert "-4" in head["ETag"]  # a multipart ETag names its part count
    assert s3_client.get_object(Bucket=s3_bucket, Key="big.png")["Body"].read() == data


def test_failed_multipart_upload_leaves_the_old_object_whole(
    s3_proxy: CountingProxy, s3_client: Any, s3_bucket: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="out.jpg", Body=b"old version")
    store = store_at(s3_proxy.endpoint, [s3_bucket], multipart_threshold=TEST_PART_SIZE, part_size=TEST_PART_SIZE)
    s3_proxy.cut_after_upload = int(2.5 * TEST_PART_SIZE)  # the line drops in the middle of the third part
    with pytest.raises(StoreFailed) as info:
        store.write(f"s3://{s3_bucket}/out.jpg", b"n" * (4 * TEST_PART_SIZE), WriteOptions("image/jpeg"))
    assert info.value.retryable
    assert_no_secrets(info.value)
    assert s3_client.get_object(Bucket=s3_bucket, Key="out.jpg")["Body"].read() == b"old version"


def test_oversized_object_is_refused_without_downloading_it(
    s3_proxy: CountingProxy, s3_client: Any, s3_bucket: str
) -> None:
    size = 48 * MIB
    s3_client.put_object(Bucket=s3_bucket, Key="huge.jpg", Body=b"\xff" * size)
    store = store_at(s3_proxy.endpoint, [s3_bucket])
    with pytest.raises(LimitExceeded):
        store.read(f"s3://{s3_bucket}/huge.jpg", max_bytes=MIB)
    refused = s3_proxy.down_bytes
    assert refused < size // 8, f"{refused} bytes came down for a refused {size}-byte object"
    # The counter is real: reading the object for real moves all of it.
    assert len(store.read(f"s3://{s3_bucket}/huge.jpg", max_bytes=size)) == size
    # The proxy counts a chunk after forwarding it: the client can finish reading just before the last count.
    deadline = time.monotonic() + 5
    while s3_proxy.down_bytes - refused < size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s3_proxy.down_bytes - refused >= size


def test_missing_key_and_missing_bucket_are_source_not_found(moto_s3: MotoServer, s3_bucket: str) -> None:
    store = store_at(moto_s3.endpoint, [s3_bucket, "never-created-bucket"])
    with pytest.raises(SourceNotFound):
        store.read(f"s3://{s3_bucket}/nope.jpg", max_bytes=100)
    with pytest.raises(SourceNotFound) as info:
        store.read("s3://never-created-bucket/a.jpg", max_bytes=100)
    assert "bucket" in info.value.message
    with pytest.raises(SourceNotFound):
        list(store.list("s3://never-created-bucket/in/"))


def test_unreachable_store_is_retryable_store_failed(s3_proxy: CountingProxy, s3_bucket: str) -> None:
    store = store_at(s3_proxy.endpoint, [s3_bucket])
    s3_proxy.cut()
    for call in (
        lambda: store.read(f"s3://{s3_bucket}/a.jpg", max_bytes=100),
        lambda: store.write(f"s3://{s3_bucket}/a.jpg", b"x", WriteOptions()),
        lambda: store.exists(f"s3://{s3_bucket}/a.jpg"),
    ):
        with pytest.raises(StoreFailed) as info:
            call()
        assert info.value.retryable and "unreachable" in info.value.message
        assert_no_secrets(info.value)


def test_access_denied_is_forbidden_and_never_shows_credentials(
    moto_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that checks signatures and IAM policies: wrong secret, unknown key, no permission."""
    server = moto_factory(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    iam = _client(server, "iam")
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    server.client().create_bucket(Bucket="locked")
    cases = {
        "SignatureDoesNotMatch": (key["AccessKeyId"], TEST_SECRET),
        "InvalidAccessKeyId": ("AKIAUNKNOWNKEY000001", TEST_SECRET),
        "AccessDenied": (key["AccessKeyId"], key["SecretAccessKey"]),
    }
    for code, (key_id, secret) in cases.items():
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        store = store_at(server.endpoint, ["locked"])
        with pytest.raises(ForbiddenPath) as info:
            store.read("s3://locked/photo.jpg", max_bytes=100)
        assert code in info.value.message
        assert_no_secrets(info.value, secret, key["SecretAccessKey"], key["AccessKeyId"])


def _client(server: MotoServer, service: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        service,
        endpoint_url=server.endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_SECRET,
        region_name="us-east-1",
    )


def test_allow_list_prefixes_are_directories() -> None:
    allow = AllowList(["photos/in", "cdn"])
    allow.check(parse_s3_url("s3://photos/in/a.jpg"))
    allow.check(parse_s3_url("s3://cdn/any/thing.jpg"))
    for url in ("s3://photos/inside/a.jpg", "s3://photos/a.jpg", "s3://other/in/a.jpg"):
        with pytest.raises(ForbiddenPath) as info:
            allow.check(parse_s3_url(url))
        assert "photos/in/" not in info.value.message  # the allow-list is not shown to submitters (issue 19)
    for bad in ("", "no/../dots", "bad bucket"):
        with pytest.raises(ValueError):
            AllowList([bad])


def test_keys_are_literal_like_the_aws_cli() -> None:
    loc = parse_s3_url("s3://bk1/dir/a b%20c?x=1#frag.jpg")
    assert (loc.bucket, loc.key) == ("bk1", "dir/a b%20c?x=1#frag.jpg")


def test_from_config_rejects_a_bad_allow_list_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        S3Store.from_config(WorkerConfig(roots=[str(tmp_path)], s3_buckets=["bad bucket"]))


def test_from_config_sizes_the_pool_and_retries(tmp_path: Path) -> None:
    config = WorkerConfig(
        s3_buckets=["bk1"], s3_endpoint="http://127.0.0.1:9", concurrency=6, s3_max_attempts=3,
        s3_retry_mode="adaptive",
    )
    client_config = S3Store.from_config(config).client.meta.config
    assert client_config.max_pool_connections == 10
    assert client_config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert client_config.s3["addressing_style"] == "path"


def test_list_objects_for_submit_uses_aws_endpoint_url(
    moto_s3: MotoServer, s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("in/a.jpg", "in/b/c.png", "other/d.jpg"):
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    assert list(list_objects(f"s3://{s3_bucket}/in/")) == [f"s3://{s3_bucket}/in/a.jpg", f"s3://{s3_bucket}/in/b/c.png"]
