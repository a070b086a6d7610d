"""Object stores by URL scheme: ``file://`` always, ``s3://`` with the ``[s3]`` extra."""

from __future__ import annotations

from urllib.parse import urlsplit

from imgworker.core.contract import check_url
from imgworker.core.errors import BadRequest, ForbiddenPath
from imgworker.stores.base import CONTENT_TYPES, Store, WriteOptions
from imgworker.stores.file import FileStore

__all__ = ["CONTENT_TYPES", "FileStore", "Store", "Stores", "WriteOptions"]

KNOWN_SCHEMES = ("file", "s3")


class Stores:
    """The stores one worker may use, chosen by each URL's scheme."""

    def __init__(self, stores: dict[str, Store]) -> None:
        self._stores = stores

    @property
    def schemes(self) -> list[str]:
        return sorted(self._stores)

    def for_url(self, url: str) -> Store:
        # Every URL a job names (src, dst, a watermark's src...) passes here: no control characters, no
        # credentials, whichever part of the job it came from.
        check_url("url", url)
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            raise BadRequest(f"malformed URL {url[:200]!r}") from None
        store = self._stores.get(scheme)
        if store is not None:
            return store
        if scheme in ("http", "https", "ftp"):
            raise ForbiddenPath(f"{scheme}:// sources are not allowed: jobs carry object-store paths (file://, s3://)")
        if scheme in KNOWN_SCHEMES:
            raise ForbiddenPath(f"{scheme}:// is not enabled on this worker")
        raise BadRequest(f"unsupported URL scheme in {url[:200]!r}; use one of {', '.join(self.schemes)}")
