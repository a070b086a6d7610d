"""One error hierarchy for everything a job can fail with.

Every error a job can end in is an ``ImgworkerError`` with a stable, machine-readable ``code`` (part of the
public job contract, docs/contract.md), a human ``message`` and ``retryable``: whether the same job, sent again
unchanged, may succeed. Library errors (libvips, boto3, OS) are translated into these at the boundary where they
happen; only the worker loop turns them into Gearman packets.

    ImgworkerError
    ├── BadRequest            BAD_REQUEST         payload is not valid JSON / unknown key / out-of-range value
    ├── ForbiddenPath         FORBIDDEN_PATH      outside the configured roots or bucket allow-list
    ├── SourceNotFound        SOURCE_NOT_FOUND    the source object does not exist
    ├── UnsupportedImage      UNSUPPORTED_IMAGE   not an image format we decode
    ├── DecodeFailed          DECODE_FAILED       a known format, but corrupt or truncated
    ├── LimitExceeded         LIMIT_EXCEEDED      bytes, pixels, frames or output size over a limit
    ├── StoreFailed           STORE_FAILED        reading or writing the store failed (often retryable)
    ├── JobTimeout            TIMEOUT             the job ran past its time limit
    ├── Unavailable           UNAVAILABLE         no job server reachable / worker draining (retryable)
    └── InternalError         INTERNAL            a bug: anything not translated above
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from imgworker.core.urls import split_credentials

__all__ = [
    "BadRequest",
    "DecodeFailed",
    "ForbiddenPath",
    "ImgworkerError",
    "InternalError",
    "JobTimeout",
    "LimitExceeded",
    "SourceNotFound",
    "StoreFailed",
    "Unavailable",
    "UnsupportedImage",
    "error_from_dict",
    "redact",
    "redact_url",
]

# Credentials written into a URL ("s3://KEY:SECRET@bucket/k") never leave the worker, in results or logs.
# A user:password part has a colon before any slash ("file:///a@2x.png" and "s3://b/k@2x.png" are left alone);
# the password itself may hold slashes, as AWS secret keys do.
# The password may hold "@" too: up to the last "@" of the word ("s3://K:p@ss@b/k" -> "s3://***@b/k").
_USERINFO = re.compile(r"(?<=://)[^/@\s'\"]*:[^\s'\"]*@")


def redact(text: str) -> str:
    """``text`` with the user:password part of every URL in it replaced by ``***``."""
    return _USERINFO.sub("***@", text)


def redact_url(url: str) -> str:
    """One URL (a job's ``src``/``dst``) with any credentials cut, even a password with a space, quote or
    slash in it, which free-text redaction cannot delimit: everything up to the last "@" goes."""
    found = split_credentials(url)
    if found is not None:
        return f"{found[0]}://***@{found[1]}"
    return redact(url)


MAX_MESSAGE = 1000  # characters of an error message kept (results, records, log lines)


class ImgworkerError(Exception):
    """Base of every error a job can end in."""

    code: ClassVar[str] = "INTERNAL"
    default_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, retryable: bool | None = None, **details: Any) -> None:
        if len(message) > MAX_MESSAGE:
            # Messages quote what a job sent ("got [...]"): capped, so no result, record or log line grows with
            # the payload. Redacted before the cut, so a cut URL cannot keep a credential redact() would miss.
            message = f"{redact(message)[:MAX_MESSAGE]}... ({len(message)} characters in all)"
        super().__init__(message)
        self.message = message
        self.retryable = self.default_retryable if retryable is None else retryable
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": redact(self.message), "retryable": self.retryable}
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self) -> str:
        return json.dumps({"ok": False, "error": self.to_dict()}, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message!r}, retryable={self.retryable})"


class BadRequest(ImgworkerError):
    code = "BAD_REQUEST"


class ForbiddenPath(ImgworkerError):
    code = "FORBIDDEN_PATH"


class SourceNotFound(ImgworkerError):
    code = "SOURCE_NOT_FOUND"


class UnsupportedImage(ImgworkerError):
    code = "UNSUPPORTED_IMAGE"


class DecodeFailed(ImgworkerError):
    code = "DECODE_FAILED"


class LimitExceeded(ImgworkerError):
    code = "LIMIT_EXCEEDED"


class StoreFailed(ImgworkerError):
    code = "STORE_FAILED"
    default_retryable = True


class JobTimeout(ImgworkerError):
    code = "TIMEOUT"
    default_retryable = True


class Unavailable(ImgworkerError):
    code = "UNAVAILABLE"
    default_retryable = True


class InternalError(ImgworkerError):
    code = "INTERNAL"


_BY_CODE: dict[str, type[ImgworkerError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        ForbiddenPath,
        SourceNotFound,
        UnsupportedImage,
        DecodeFailed,
        LimitExceeded,
        StoreFailed,
        JobTimeout,
        Unavailable,
        InternalError,
    )
}

ERROR_CODES: tuple[str, ...] = tuple(_BY_CODE)


def error_from_dict(err: dict[str, Any]) -> ImgworkerError:
    """Rebuild a typed error from the ``error`` object of a failed job's result (client side)."""
    cls = _BY_CODE.get(str(err.get("code")), InternalError)
    exc = cls(str(err.get("message", "")), retryable=bool(err.get("retryable", False)), **err.get("details", {}))
    return exc
