"""``imgworker submit``: one job, or every image of a directory / prefix, with progress and a summary.

Exit codes: 0 every job ok; 1 some job failed (the JSON says which); 2 nothing was submitted because the
command is wrong (bad arguments, no images, a source that cannot be listed, two sources that would write one
destination, an unknown IMGWORKER_* variable); 3 no job server reachable, nothing submitted; 130 interrupted
(Ctrl-C), after printing the summary so far. A job that is still waiting after a few seconds while no worker is
registered for its function gets a hint on stderr ("no worker registered for 'X'").
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from imgworker.client import Client, default_unique
from imgworker.core.config import ConfigError, from_env
from imgworker.core.contract import FITS, FORMATS
from imgworker.core.errors import ImgworkerError
from imgworker.core.formats import SOURCE_SUFFIXES as IMAGE_SUFFIXES
from imgworker.core.formats import suffix as format_suffix
from imgworker.gearman import Client as AsyncClient
from imgworker.gearman import GearmanError, NoServerAvailable, unserved_hint, unserved_hint_sync
from imgworker.gearman.protocol import parse_address
from imgworker.stores.file import url_to_path
from imgworker.stores.s3 import list_objects

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_SERVER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
HINT_AFTER_S = 5.0  # a job still waiting this long: ask the job servers whether anyone serves its function
# IMGWORKER_* variables submit reads; the worker's own are accepted too (one shell often sets both).
SUBMIT_ENV = ("IMGWORKER_SERVERS", "IMGWORKER_S3_ENDPOINT")


def to_url(path: str) -> str:
    if "://" in path:
        return path
    return Path(path).resolve().as_uri()


def add_parser(sub: Any, summary: str) -> None:
    p = sub.add_parser("submit", help=summary, description=__doc__)
    p.add_argument("src", help="source: path, file:// or s3:// URL; a directory or prefix ending in / for a batch")
    p.add_argument("dst", help="destination: path or URL; for a batch, a directory / prefix")
    p.add_argument("--server", action="append", help="job server HOST:PORT (repeatable) [IMGWORKER_SERVERS]")
    p.add_argument("--function", default=None, help="Gearman function (default: resize, or the --pipeline name)")
    p.add_argument("--pipeline", help="run a named pipeline")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--fit", choices=FITS)
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--quality", type=quality_arg, help="1-100, or auto, auto:eco, auto:best, auto:N")
    p.add_argument("--param", action="append", default=[], metavar="KEY=JSON", help="extra payload key")
    p.add_argument("--in-flight", type=int, default=32, help="jobs in flight at once for a batch")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each job")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint for listing an s3:// prefix (MinIO, Ceph...); AWS "
                   "needs none [IMGWORKER_S3_ENDPOINT]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--keep-extension", action="store_true",
                   help="batch: keep the source extension in output names (a.png -> a.png.webp), so sources "
                        "that differ only by extension get distinct outputs")
    p.set_defaults(func=main)


def quality_arg(text: str) -> int | str:
    """``--quality``: a number, or an ``auto`` setting passed as given (the worker checks both)."""
    return int(text) if text.isdigit() else text


def build_payload(args: argparse.Namespace, src: str, dst: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"src": src, "dst": dst}
    for key in ("width", "height", "fit", "format", "quality"):
        value = getattr(args, key)
        if value is not None:
            payload[key] = value
    for item in args.param:
        key, _, raw = item.partition("=")
        try:
            payload[key] = json.loads(raw)
        except ValueError:
            payload[key] = raw
    return payload


def servers_from(args: argparse.Namespace) -> list[str]:
    if args.server:
        return list(args.server)
    env = os.environ.get("IMGWORKER_SERVERS")
    return [s.strip() for s in env.split(",") if s.strip()] if env else ["127.0.0.1:4730"]


def list_sources(src: str, s3_endpoint: str | None = None) -> list[str]:
    if src.startswith("s3://"):
        return [u for u in list_objects(src, s3_endpoint) if Path(u).suffix.lower() in IMAGE_SUFFIXES]

    # Not resolved per file: a symlinked image keeps its own name (and so its own destination).
    base = Path(url_to_path(src))
    return [p.as_uri() for p in sorted(base.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def batch_dst(src_url: str, src_base: str, dst_base: str, fmt: str | None, keep_extension: bool = False) -> str:
    rel = src_url[len(src_base) :].lstrip("/")
    if fmt:
        suffix = format_suffix(fmt)
        rel = rel + suffix if keep_extension else str(Path(rel).with_suffix(suffix))
    return dst_base.rstrip("/") + "/" + rel


def collisions(jobs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Destinations that more than one source would write (each would overwrite the other, both "done")."""
    by_dst: dict[str, list[str]] = {}
    for job in jobs:
        by_dst.setdefault(job["dst"], []).append(job["src"])
    return {dst: srcs for dst, srcs in by_dst.items() if len(srcs) > 1}


def any_server_reachable(servers: list[str], timeout: float = 5.0) -> bool:
    """A TCP connect to each job server in turn: a batch with none up fails at once, not job by job."""
    for server in servers:
        try:
            host, port = parse_address(server)
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


class Progress:
    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.done, self.quiet = total, 0, quiet or not sys.stderr.isatty()
        self.started = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if self.quiet:
            return
        width = 30
        filled = int(width * self.done / max(1, self.total))
        rate = self.done / max(1e-9, time.perf_counter() - self.started)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {rate:.1f} img/s")
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")


class Batch:
    """Outcomes so far, kept outside the event loop so that an interrupted run can still report them."""

    def __init__(self, jobs: list[dict[str, Any]], quiet: bool) -> None:
        self.jobs = jobs
        self.progress = Progress(len(jobs), quiet)
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.failures: list[dict[str, Any]] = []
        self.no_server = 0  # failures because no job server accepted a connection
        self.started = time.perf_counter()
        self.interrupted = False

    def record(self, src: str, result: dict[str, Any]) -> None:
        code = "ok" if result.get("ok") else result.get("error", {}).get("code", "INTERNAL")
        self.outcomes[code] += 1
        if code != "ok":
            self.failures.append({"src": src, **result.get("error", {})})
        self.progress.step()

    def summary(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        failed = {k: v for k, v in self.outcomes.items() if k != "ok"}
        done = self.outcomes.get("ok", 0)
        out: dict[str, Any] = {
            "jobs": len(self.jobs),
            "done": done,
            "failed": failed,
            "seconds": round(wall, 3),
            # Successes only: a failed job (often a fast one) is not an image made.
            "images_per_s": round(done / wall, 2) if wall else None,
            "failures": self.failures[:20],
        }
        if self.interrupted:
            out["interrupted"] = True
            out["not_finished"] = len(self.jobs) - sum(self.outcomes.values())
        return out

    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        failed = sum(v for k, v in self.outcomes.items() if k != "ok")
        if failed and failed == self.no_server and not self.outcomes.get("ok"):
            return EXIT_NO_SERVER
        return EXIT_FAILED if failed else EXIT_OK


def warn_unserved(hint: str | None, timeout: float) -> None:
    if hint:
        print(f"imgworker submit: {hint}; the job waits until one registers (up to --timeout {timeout:g} s, "
              "Ctrl-C to stop)", file=sys.stderr)


async def run_batch(args: argparse.Namespace, function: str, batch: Batch) -> None:
    client = AsyncClient(servers_from(args))
    gate = asyncio.Semaphore(args.in_flight)

    async def hint_if_unserved() -> None:
        await asyncio.sleep(HINT_AFTER_S)
        warn_unserved(await unserved_hint(servers_from(args), function), args.timeout)

    async def one(payload: dict[str, Any]) -> None:
        async with gate:
            try:
                body = await client.submit(
                    function, json.dumps(payload).encode(), unique=default_unique(payload), timeout=args.timeout
                )
                result = json.loads(body)
            except (GearmanError, ValueError) as exc:
                batch.no_server += isinstance(exc, NoServerAvailable)
                result = {"ok": False, "error": {"code": "UNAVAILABLE", "message": str(exc), "retryable": True}}
        batch.record(payload["src"], result)

    watcher = asyncio.create_task(hint_if_unserved())
    try:
        await asyncio.gather(*(one(p) for p in batch.jobs))
    finally:
        watcher.cancel()
        await client.close()


def run_one_job(args: argparse.Namespace, function: str, payload: dict[str, Any]) -> int:
    servers = servers_from(args)
    watcher = threading.Timer(HINT_AFTER_S, lambda: warn_unserved(unserved_hint_sync(servers, function), args.timeout))
    watcher.daemon = True
    with Client(servers, timeout=args.timeout) as client:
        watcher.start()
        try:
            result = client.run(function, payload)
        except ImgworkerError as exc:
            print(json.dumps({"ok": False, "error": exc.to_dict()}, indent=2))
            return EXIT_NO_SERVER if isinstance(exc.__cause__, NoServerAvailable) else EXIT_FAILED
        except KeyboardInterrupt:
            print(json.dumps({"ok": False, "interrupted": True, "src": payload["src"]}, indent=2))
            return EXIT_INTERRUPTED
        finally:
            watcher.cancel()
    print(json.dumps(result.raw, indent=2))
    return EXIT_OK if result.ok else EXIT_FAILED


def check_env(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """An IMGWORKER_* variable that neither submit nor the worker knows (a typo), as a message with a hint."""
    known = {k: v for k, v in environ.items() if k.startswith("IMGWORKER_") and k not in SUBMIT_ENV}
    try:
        from_env(known)
    except ConfigError as exc:
        return str(exc)
    return None


def main(args: argparse.Namespace) -> int:
    problem = check_env(os.environ)
    if problem:
        print(f"imgworker submit: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.s3_endpoint is None:
        args.s3_endpoint = os.environ.get("IMGWORKER_S3_ENDPOINT")
    function = args.function or args.pipeline or "resize"
    src = to_url(args.src)
    is_batch = args.src.endswith("/") or (("://" not in args.src) and Path(args.src).is_dir())
    if not is_batch:
        return run_one_job(args, function, build_payload(args, src, to_url(args.dst)))
    try:
        sources = list_sources(src, args.s3_endpoint)
    except ImgworkerError as exc:
        print(f"imgworker submit: cannot list {args.src}: {exc.code}: {exc.message}", file=sys.stderr)
        if src.startswith("s3://"):
            print("imgworker submit: listing an s3:// prefix needs credentials here (AWS_ACCESS_KEY_ID / "
                  "AWS_SECRET_ACCESS_KEY or a profile) and, for MinIO or another S3-compatible store, "
                  "--s3-endpoint URL", file=sys.stderr)
        return EXIT_USAGE
    if not sources:
        print(f"imgworker submit: no images under {args.src}", file=sys.stderr)
        return EXIT_USAGE
    dst_base = to_url(args.dst)
    jobs = [build_payload(args, s, batch_dst(s, src, dst_base, args.format, args.keep_extension)) for s in sources]
    clash = collisions(jobs)
    if clash:
        for dst, srcs in sorted(clash.items())[:20]:
            print(f"imgworker submit: {' and '.join(srcs)} would all write {dst}", file=sys.stderr)
        print(f"imgworker submit: {len(clash)} destination(s) claimed by more than one source; nothing submitted. "
              "Use --keep-extension (a.png -> a.png.webp), or rename the sources.", file=sys.stderr)
        return EXIT_USAGE
    servers = servers_from(args)
    if not any_server_reachable(servers):
        print(f"imgworker submit: no job server reachable at {', '.join(servers)}; nothing submitted",
              file=sys.stderr)
        return EXIT_NO_SERVER
    batch = Batch(jobs, args.quiet)
    try:
        asyncio.run(run_batch(args, function, batch))
    except KeyboardInterrupt:
        # asyncio.run cancelled the jobs in flight; gearmand may still run those already handed to a worker.
        batch.interrupted = True
        if not batch.progress.quiet:
            sys.stderr.write("\n")
    print(json.dumps(batch.summary(), indent=2))
    return batch.exit_code()
