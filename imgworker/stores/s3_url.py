"""``s3://bucket/key`` URLs and the bucket allow-list (``--s3-bucket NAME`` or ``NAME/prefix``).

Keys are taken literally, as the AWS CLI does: no percent-decoding, and ``?`` / ``#`` are part of the key.
Keys with ``.`` or ``..`` segments are refused: some S3-compatible servers and proxies normalise paths, which
would let ``s3://b/allowed/../secret`` escape a prefix the allow-list checked as a string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from imgworker.core.errors import BadRequest, ForbiddenPath

# Lenient on purpose (S3-compatible servers allow underscores and capitals); still rejects slashes, spaces.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Url:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_url(url: str, *, allow_empty_key: bool = False) -> S3Url:
    if not url.startswith("s3://"):
        raise BadRequest(f"not an s3:// URL: {url[:200]!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if "@" in bucket or ":" in bucket:
        # "s3://KEY:SECRET@bucket/k": never echo what was given, it is a credential.
        raise BadRequest("s3:// URL carries credentials (user:password@): they belong in the worker's "
                         "configuration, never in a job; use s3://bucket/key")
    if not _BUCKET.match(bucket):
        raise BadRequest(f"invalid bucket name {bucket[:100]!r} in {url[:200]!r}; use s3://bucket/key")
    if not key and not allow_empty_key:
        raise BadRequest(f"s3:// URL has no object key: {url[:200]!r}; use s3://bucket/key")
    if "\x00" in key or len(key.encode()) > 1024:
        raise BadRequest(f"invalid object key in {url[:200]!r} (NUL byte or longer than 1024 bytes)")
    if any(part in (".", "..") for part in key.split("/")):
        raise ForbiddenPath(f"s3:// keys may not contain '.' or '..' segments: {url[:200]!r}")
    return S3Url(bucket, key)


@dataclass(frozen=True, slots=True)
class Grant:
    bucket: str
    prefix: str  # "" (whole bucket) or ending in "/"

    def covers(self, loc: S3Url) -> bool:
        return loc.bucket == self.bucket and loc.key.startswith(self.prefix)

    def __str__(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket


class AllowList:
    """The buckets and key prefixes a worker may read and write; everything else is FORBIDDEN_PATH."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.grants = [self._parse(e) for e in entries]

    @staticmethod
    def _parse(entry: str) -> Grant:
        bucket, _, prefix = entry.strip().removeprefix("s3://").partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"--s3-bucket {entry!r}: give a bucket name, or bucket/prefix")
        prefix = prefix.strip("/")
        if any(part in (".", "..", "") for part in prefix.split("/")) and prefix:
            raise ValueError(f"--s3-bucket {entry!r}: the prefix may not hold empty, '.' or '..' segments")
        return Grant(bucket, prefix + "/" if prefix else "")

    def check(self, loc: S3Url) -> None:
        if any(g.covers(loc) for g in self.grants):
            return
        if not self.grants:
            raise ForbiddenPath("no s3:// buckets are allowed on this worker (--s3-bucket NAME)")
        # The allow-list is not listed: it is the worker's configuration, not the submitter's business.
        raise ForbiddenPath(f"{loc} is outside the buckets and prefixes this worker may use")
