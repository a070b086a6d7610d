"""``s3://bucket/key`` store (AWS S3 and S3-compatible servers: MinIO, Ceph, R2, GCS's S3 interface).

Reads check the object's size from the GetObject response headers before reading a byte of the body, so an
oversized object costs one request, not a download; the body is read in one call into one buffer. Writes are
one PutObject, or a multipart upload for large outputs that is aborted on failure: either way readers see the
old object or the whole new one, never a part. botocore retries throttling, timeouts and 5xx (standard or
adaptive mode); what still fails is translated in s3_errors, without credentials in any message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from imgworker.core.config import ConfigError, WorkerConfig
from imgworker.core.errors import LimitExceeded, StoreFailed
from imgworker.stores import s3_errors
from imgworker.stores.base import WriteOptions
from imgworker.stores.s3_budget import DeadlineClients
from imgworker.stores.s3_client import make_client
from imgworker.stores.s3_url import AllowList, S3Url, parse_s3_url

__all__ = ["S3Store", "list_objects"]

MIB = 1024 * 1024


class S3Store:
    scheme = "s3"

    def __init__(
        self,
        client: Any,
        allow: AllowList | Sequence[str],
        *,
        multipart_threshold: int = 64 * MIB,
        part_size: int = 16 * MIB,
        clients: DeadlineClients | None = None,
    ) -> None:
        self.client = client
        # Per request: a client whose timeouts and retries fit the job's time left (s3_budget.py).
        self._clients = clients or DeadlineClients(client, None, 1, 0.0)
        self.allow = allow if isinstance(allow, AllowList) else AllowList(allow)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._translate = s3_errors.translate

    @classmethod
    def from_config(cls, config: WorkerConfig) -> S3Store:
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ConfigError("s3:// needs boto3: pip install 'imgworker[s3]'") from None

        try:
            allow = AllowList(config.s3_buckets)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        def make(attempts: int, timeout: float) -> Any:
            return make_client(
                endpoint=config.s3_endpoint,
                region=config.s3_region,
                addressing=config.s3_addressing,
                max_attempts=attempts,
                retry_mode=config.s3_retry_mode,
                timeout=timeout,
                # Every job thread may hold a connection, plus the batch coordinator's listing and manifest.
                pool_size=config.concurrency + 4,
            )

        client = make(config.s3_max_attempts, config.s3_timeout)
        return cls(client, allow, clients=DeadlineClients(client, make, config.s3_max_attempts, config.s3_timeout))

    def _loc(self, url: str) -> S3Url:
        loc = parse_s3_url(url)
        self.allow.check(loc)
        return loc

    def check(self, url: str, *, write: bool = False) -> None:
        self._loc(url)

    def read(self, url: str, *, max_bytes: int) -> bytes:
        loc = self._loc(url)
        try:
            resp = self._clients.current().get_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise self._translate(exc, "read", str(loc)) from None
        body = resp["Body"]
        try:
            size = int(resp.get("ContentLength", -1))
            if size > max_bytes:
                # close() drops the connection: the body is never downloaded.
                raise LimitExceeded(f"source is {size} bytes; the limit is {max_bytes}")
            # With a known length, read() fills one buffer of exactly that size (no chunk list, no join).
            data: bytes = body.read() if size >= 0 else body.read(max_bytes + 1)
        except LimitExceeded:
            raise
        except Exception as exc:
            raise self._translate(exc, "read", str(loc)) from None
        finally:
            body.close()
        if len(data) > max_bytes:
            raise LimitExceeded(f"source is over the limit of {max_bytes} bytes")
        return data

    def write(self, url: str, data: bytes, options: WriteOptions) -> None:
        loc = self._loc(url)
        extra: dict[str, Any] = {"ContentType": options.content_type}
        if options.cache_control:
            extra["CacheControl"] = options.cache_control
        if options.metadata:
            extra["Metadata"] = dict(options.metadata)
        try:
            if len(data) < self.multipart_threshold:
                self._clients.current().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)
            else:
                self._multipart(loc, data, extra)
        except Exception as exc:
            err = self._translate(exc, "write", str(loc))
            raise err from None

    def _multipart(self, loc: S3Url, data: bytes, extra: dict[str, Any]) -> None:
        upload = self.client.create_multipart_upload(Bucket=loc.bucket, Key=loc.key, **extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, len(data), self.part_size), start=1):
                chunk = data[offset : offset + self.part_size]  # one part-sized copy at a time
                resp = self.client.upload_part(
                    Bucket=loc.bucket, Key=loc.key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(
                Bucket=loc.bucket, Key=loc.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Parts of an unfinished upload are invisible to readers; abort so they are not billed forever.
            # If the store is unreachable the abort fails too; a bucket lifecycle rule cleans up after that.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=loc.bucket, Key=loc.key, UploadId=upload_id)
            raise

    def exists(self, url: str) -> bool:
        loc = self._loc(url)
        try:
            self._clients.current().head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            err = self._translate(exc, "check", str(loc))
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return False
            raise err from None
        return True

    def list(self, prefix: str) -> Iterator[str]:
        loc = parse_s3_url(prefix, allow_empty_key=True)
        # A prefix names a "directory", as with file://: s3://b/in lists s3://b/in/...
        key_prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
        base = S3Url(loc.bucket, key_prefix)
        self.allow.check(base)
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=key_prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    parts = key.split("/")
                    if key.endswith("/") or parts[-1].startswith(".") or any(p in (".", "..") for p in parts):
                        continue  # folder markers, hidden names, keys we would refuse to read anyway
                    yield f"s3://{loc.bucket}/{key}"
        except StoreFailed:
            raise
        except Exception as exc:
            raise self._translate(exc, "list", str(base)) from None


def list_objects(prefix_url: str, endpoint: str | None = None) -> Iterator[str]:
    """Object URLs under an ``s3://bucket/prefix/`` (client side, e.g. ``imgworker submit``)."""
    loc = parse_s3_url(prefix_url, allow_empty_key=True)
    store = S3Store(make_client(endpoint=endpoint), [loc.bucket])
    yield from store.list(prefix_url)
