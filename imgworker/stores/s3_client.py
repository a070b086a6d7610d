"""Build the one boto3 S3 client a worker process shares across jobs (boto3 clients are thread-safe).

Credentials come from botocore's default chain (environment, shared profile, container/instance role, IRSA
web identity); nothing here reads or stores them. The endpoint comes from ``--s3-endpoint`` or, when that is
unset, from botocore's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# Loggers that, at DEBUG, print request headers (Authorization: access key id and signature) or URLs.
_CHATTY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def quiet_sdk_logs() -> None:
    """Keep SDK loggers at WARNING whatever the root level is: their DEBUG lines carry signatures."""
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def custom_endpoint(endpoint: str | None) -> str | None:
    return endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    addressing: str = "auto",
    max_attempts: int = 5,
    retry_mode: str = "standard",
    timeout: float = 20.0,
    pool_size: int = 10,
) -> Any:
    import boto3
    from botocore.config import Config

    quiet_sdk_logs()
    session = boto3.session.Session()
    endpoint = custom_endpoint(endpoint)
    if addressing == "auto":
        # MinIO, Ceph and moto behind a plain host name only answer path-style requests.
        addressing = "path" if endpoint else "auto"
    options: dict[str, Any] = {
        "region_name": region or session.region_name or "us-east-1",
        "signature_version": "s3v4",
        "max_pool_connections": pool_size,
        "retries": {"mode": retry_mode, "total_max_attempts": max_attempts},
        "connect_timeout": timeout,
        "read_timeout": timeout,
        "tcp_keepalive": True,
        "s3": {"addressing_style": addressing},
        "user_agent_extra": "imgworker",
        # Default CRC checksums (botocore >= 1.36) cost CPU per byte and are refused by some S3-compatible
        # servers; S3 still verifies Content-Length and TLS protects the bytes in transit.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    try:
        config = Config(**options)
    except TypeError:  # botocore < 1.36 has no checksum options
        del options["request_checksum_calculation"], options["response_checksum_validation"]
        config = Config(**options)
    return session.client("s3", endpoint_url=endpoint, config=config)
