"""Translate botocore errors into imgworker errors at the store boundary.

Messages are built here from the S3 error *code*, the HTTP status and the ``s3://`` URL only. The server's
own message and the rest of the error response are never copied: a SignatureDoesNotMatch response carries the
string-to-sign, the signature and the access key id, and a presigned or endpoint URL may carry credentials.
"""

from __future__ import annotations

from imgworker.core.errors import ForbiddenPath, ImgworkerError, SourceNotFound, StoreFailed

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload"}
_FORBIDDEN = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AccountProblem",
    "InvalidObjectState",  # archived (Glacier): not readable by this worker
}
_RETRYABLE = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


def translate(exc: Exception, op: str, url: str) -> ImgworkerError:
    """``op`` is a short verb phrase for the message: 'read', 'write', 'list', 'check'."""
    if isinstance(exc, ImgworkerError):
        return exc
    from botocore import exceptions as bx  # optional dependency (the s3 extra): only S3 errors come here

    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))[:64]
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        where = f"S3 {op} of {url}: {code} (HTTP {status})"
        if code in _NOT_FOUND or status == 404:
            if op in ("read", "list"):
                what = "bucket" if code == "NoSuchBucket" else "object"
                return SourceNotFound(f"source {url} does not exist ({what} not found)")
            return StoreFailed(f"{where}: the bucket does not exist", retryable=False)
        if code in _FORBIDDEN or status == 403:
            return ForbiddenPath(f"{where}: access denied by the object store")
        if code in _RETRYABLE or status >= 500 or status == 429:
            return StoreFailed(f"{where}: still failing after retries", retryable=True)
        return StoreFailed(where, retryable=False)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.CredentialRetrievalError):
        return StoreFailed(
            f"S3 {op} of {url}: no usable AWS credentials (environment, profile or instance role)",
            retryable=False,
        )
    if isinstance(exc, bx.HTTPClientError | bx.ConnectionError | bx.IncompleteReadError):
        # Connection refused/reset, timeouts, truncated bodies: botocore has already retried these.
        reason = type(exc).__name__
        return StoreFailed(f"S3 {op} of {url}: object store unreachable ({reason})", retryable=True)
    if isinstance(exc, bx.BotoCoreError):
        return StoreFailed(f"S3 {op} of {url}: {type(exc).__name__}", retryable=False)
    if isinstance(exc, OSError):
        return StoreFailed(f"S3 {op} of {url}: {type(exc).__name__}", retryable=True)
    return StoreFailed(f"S3 {op} of {url}: unexpected {type(exc).__name__}", retryable=False)
