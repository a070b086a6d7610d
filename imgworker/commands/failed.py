"""``imgworker failed list|retry URL``: read the failed-job records a worker wrote under ``--failed-jobs``.

``list`` prints one line per record (``--json``: the records as JSON lines); ``retry`` resubmits each as a
background job with its unique id and removes the record once the job server has accepted it. Both take
``--code CODE`` to pick only records of that error code. Exit 0 when all went well, 1 if a resubmission failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from imgworker.core.errors import ERROR_CODES, ImgworkerError
from imgworker.core.text import escape_controls
from imgworker.features.failed_jobs import FailedJobs
from imgworker.features.retry_lock import retry_lock
from imgworker.gearman import Client, GearmanError
from imgworker.stores import FileStore, Store, Stores
from imgworker.stores.file import url_to_path
from imgworker.stores.s3 import S3Store
from imgworker.stores.s3_client import make_client
from imgworker.stores.s3_url import parse_s3_url

SUBMIT_TIMEOUT_S = 10.0


def add_parser(sub: Any, summary: str) -> None:
    p = sub.add_parser("failed", help=summary, description=__doc__)
    actions = p.add_subparsers(dest="action", required=True)
    for name, what in (("list", "print the records"), ("retry", "resubmit them as background jobs")):
        a = actions.add_parser(name, help=what)
        a.add_argument("url", help="the worker's --failed-jobs prefix (file:///... or s3://bucket/prefix)")
        a.add_argument("--code", choices=(*ERROR_CODES,), help="only records of this error code")
        a.add_argument("--s3-endpoint", default=os.environ.get("IMGWORKER_S3_ENDPOINT"),
                       help="S3-compatible endpoint URL [IMGWORKER_S3_ENDPOINT]")
        if name == "list":
            a.add_argument("--json", action="store_true", help="one JSON record per line")
            a.set_defaults(func=list_main)
        else:
            a.add_argument("--server", action="append", required=True, help="job server HOST:PORT; repeatable")
            a.set_defaults(func=retry_main)


def open_records(args: argparse.Namespace) -> FailedJobs:
    """The store for the prefix alone: a file:// prefix is its own root, an s3:// one its own allow-list."""
    url: str = args.url
    scheme = urlsplit(url).scheme
    store: Store
    if scheme == "file":
        store = FileStore([url_to_path(url)])
    elif scheme == "s3":
        loc = parse_s3_url(url, allow_empty_key=True)
        store = S3Store(make_client(endpoint=args.s3_endpoint), [f"{loc.bucket}/{loc.key}".rstrip("/")])
    else:
        raise SystemExit(f"imgworker failed: {url!r} must be a file:/// or s3:// prefix")
    return FailedJobs(Stores({scheme: store}), url)


def selected(records: FailedJobs, code: str | None) -> list[tuple[str, dict[str, Any]]]:
    return [(u, r) for u, r in records.list() if code is None or r.get("error", {}).get("code") == code]


def summary(record: dict[str, Any]) -> str:
    """One line per record, whatever the job put in it: every field has its controls, bidi characters and
    tabs escaped (a ``\n`` in ``src`` cannot forge a line, an ESC or OSC cannot reach the terminal)."""
    err = record.get("error", {})
    err = err if isinstance(err, dict) else {}
    payload = record.get("payload")
    src = payload.get("src", "") if isinstance(payload, dict) else ""
    fields = [record.get("time", ""), err.get("code", ""), record.get("function", ""), record.get("unique", ""),
              f"attempts={record.get('attempts', '')}", src, err.get("message", "")]
    line = "\t".join(escape_controls(str(f), 300) for f in fields)
    return line + ("\tpayload cut at write time: not resubmittable" if record.get("payload_truncated") else "")


def list_main(args: argparse.Namespace) -> int:
    try:
        rows = selected(open_records(args), args.code)
    except ImgworkerError as exc:
        print(f"imgworker failed list: {exc.code}: {exc.to_dict()['message']}", file=sys.stderr)
        return 1
    for _url, record in rows:
        print(json.dumps(record, separators=(",", ":"), sort_keys=True) if args.json else summary(record))
    return 0


async def _resubmit(servers: list[str], records: FailedJobs, rows: list[tuple[str, dict[str, Any]]]) -> int:
    failed = 0
    async with Client(servers) as client:
        for url, record in rows:
            if record.get("payload_truncated"):
                failed += 1
                print(f"not resubmitted (record kept): {url}: its payload was cut at write time", file=sys.stderr)
                continue
            payload = record.get("payload")
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            try:
                handle = await asyncio.wait_for(
                    client.submit_background(record["function"], data, unique=record.get("unique") or None),
                    SUBMIT_TIMEOUT_S,
                )
            except (GearmanError, OSError, TimeoutError) as exc:
                failed += 1
                print(f"not resubmitted (record kept): {url}: {type(exc).__name__}: {escape_controls(str(exc), 300)}",
                      file=sys.stderr)
                continue
            records.remove(url)  # only once gearmand has the job: a crash here resubmits, never loses
            print(f"resubmitted {escape_controls(record['function'], 300)} "
                  f"unique={escape_controls(str(record.get('unique', '')), 300)} as {handle}")
    return failed


def retry_main(args: argparse.Namespace) -> int:
    try:
        records = open_records(args)
        with retry_lock(records):  # a second retry at once would resubmit the same records again
            rows = selected(records, args.code)
            failed = asyncio.run(_resubmit(args.server, records, rows))
    except ImgworkerError as exc:
        print(f"imgworker failed retry: {exc.code}: {exc.to_dict()['message']}", file=sys.stderr)
        return 1
    print(f"{len(rows) - failed} of {len(rows)} record(s) resubmitted", file=sys.stderr)
    return 1 if failed else 0
