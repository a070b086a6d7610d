"""One ``imgworker failed retry`` at a time per prefix: two at once listed the same records and resubmitted each
twice (issue 26 item 11: 78 extra runs and 61 duplicate records).

file:// takes an exclusive ``flock`` on ``<prefix>/.retry.lock`` (released by the kernel if the process dies);
s3:// creates ``<prefix>/.retry.lock`` with a conditional write (``If-None-Match: *``: only one writer can create
it) and deletes it at the end; one older than STALE_S is taken to be left by a run that died, and replaced.
The lock's name does not end in ``.json``, so it is never listed as a record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from imgworker.core.errors import Unavailable
from imgworker.features.failed_jobs import FailedJobs
from imgworker.stores.file import url_to_path
from imgworker.stores.s3_url import parse_s3_url

LOCK_NAME = ".retry.lock"
STALE_S = 3600.0


@contextlib.contextmanager
def retry_lock(records: FailedJobs) -> Iterator[None]:
    """Held while a retry runs; ``Unavailable`` at once if another holds it."""
    store: Any = getattr(records.store, "inner", records.store)
    url = records.prefix + "/" + LOCK_NAME
    store.check(url, write=True)
    if store.scheme == "file":
        fd = os.open(url_to_path(url), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Unavailable(f"another `imgworker failed retry` is running on {records.prefix}") from None
            yield
        finally:
            os.close(fd)  # releases the flock
        return
    loc = parse_s3_url(url)
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode()
    for _ in range(2):
        try:
            store.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=body, IfNoneMatch="*")
            break
        except Exception as exc:
            if "PreconditionFailed" not in str(exc) and "412" not in str(exc):
                raise store._translate(exc, "write", url) from None
            head = store.client.head_object(Bucket=loc.bucket, Key=loc.key)
            age = (datetime.now(UTC) - head["LastModified"]).total_seconds()
            if age < STALE_S:
                raise Unavailable(f"another `imgworker failed retry` is running on {records.prefix} "
                                  f"(its lock is {age:.0f} s old)") from None
            store.client.delete_object(Bucket=loc.bucket, Key=loc.key)  # left by a run that died
    else:
        raise Unavailable(f"could not take the retry lock of {records.prefix}")
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            store.client.delete_object(Bucket=loc.bucket, Key=loc.key)
