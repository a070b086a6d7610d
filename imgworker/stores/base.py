"""The store interface: where sources are read from and results written to.

A store is synchronous (jobs run it in worker threads, off the Gearman I/O loop). Implementations translate
their library's errors into imgworker.core.errors at this boundary, and never put credentials in messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from imgworker.core.formats import CONTENT_TYPES

__all__ = ["CONTENT_TYPES", "Store", "WriteOptions"]


@dataclass(frozen=True, slots=True)
class WriteOptions:
    content_type: str = "application/octet-stream"
    cache_control: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """What every store (file://, s3://) implements; tests/integration/test_store_contract.py holds its shared tests."""

    scheme: str

    def check(self, url: str, *, write: bool = False) -> None:
        """Raise ForbiddenPath (or BadRequest for a malformed URL) if this worker may not touch ``url``."""

    def read(self, url: str, *, max_bytes: int) -> bytes:
        """The whole object. SourceNotFound if absent, LimitExceeded before reading if over ``max_bytes``."""
        ...

    def write(self, url: str, data: bytes, options: WriteOptions) -> None:
        """Write atomically: a reader sees the old object, or the whole new one, never a part."""

    def exists(self, url: str) -> bool:
        """Whether the object exists (used by batches to skip finished work)."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """URLs of the objects under a prefix (a directory for file://), in a stable order."""
        ...
