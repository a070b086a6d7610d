"""``imgworker submit``: one job, or every image of a directory / prefix, with progress and a summary."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .client import default_unique
from .contract import FITS, FORMATS
from .gearman import Client as AsyncClient
from .gearman import GearmanError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".tif", ".tiff", ".heic"}


def to_url(path: str) -> str:
    if "://" in path:
        return path
    return Path(path).resolve().as_uri()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit a job, or one job per image in a directory", description=__doc__)
    p.add_argument("src", help="source: path, file:// or s3:// URL; a directory or prefix ending in / for a batch")
    p.add_argument("dst", help="destination: path or URL; for a batch, a directory / prefix")
    p.add_argument("--server", action="append", help="job server HOST:PORT (repeatable) [IMGWORKER_SERVERS]")
    p.add_argument("--function", default=None, help="Gearman function (default: resize, or the --pipeline name)")
    p.add_argument("--pipeline", help="run a named pipeline")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--fit", choices=FITS)
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--quality", type=int)
    p.add_argument("--param", action="append", default=[], metavar="KEY=JSON", help="extra payload key")
    p.add_argument("--in-flight", type=int, default=32, help="jobs in flight at once for a batch")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each job")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


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


def list_sources(src: str) -> list[str]:
    if src.startswith("s3://"):
        from .stores.s3 import list_objects

        return [u for u in list_objects(src) if Path(u).suffix.lower() in IMAGE_SUFFIXES]
    from .stores.file import url_to_path

    # Not resolved per file: a symlinked image keeps its own name (and so its own destination).
    base = Path(url_to_path(src))
    return [p.as_uri() for p in sorted(base.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def batch_dst(src_url: str, src_base: str, dst_base: str, fmt: str | None) -> str:
    rel = src_url[len(src_base) :].lstrip("/")
    if fmt:
        rel = str(Path(rel).with_suffix("." + ("jpg" if fmt == "jpeg" else fmt)))
    return dst_base.rstrip("/") + "/" + rel


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


async def run_batch(args: argparse.Namespace, function: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    client = AsyncClient(servers_from(args))
    progress = Progress(len(jobs), args.quiet)
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(args.in_flight)

    async def one(payload: dict[str, Any]) -> None:
        async with gate:
            try:
                body = await client.submit(
                    function, json.dumps(payload).encode(), unique=default_unique(payload), timeout=args.timeout
                )
                result = json.loads(body)
            except (GearmanError, ValueError) as exc:
                result = {"ok": False, "error": {"code": "UNAVAILABLE", "message": str(exc), "retryable": True}}
        code = "ok" if result.get("ok") else result.get("error", {}).get("code", "INTERNAL")
        outcomes[code] += 1
        if code != "ok":
            failures.append({"src": payload["src"], **result.get("error", {})})
        progress.step()

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(p) for p in jobs))
    finally:
        await client.close()
    wall = time.perf_counter() - started
    return {
        "jobs": len(jobs),
        "done": outcomes.pop("ok", 0),
        "failed": dict(outcomes),
        "seconds": round(wall, 3),
        "images_per_s": round(len(jobs) / wall, 2) if wall else None,
        "failures": failures[:20],
    }


def main(args: argparse.Namespace) -> int:
    function = args.function or args.pipeline or "resize"
    src = to_url(args.src)
    is_batch = args.src.endswith("/") or (("://" not in args.src) and Path(args.src).is_dir())
    if not is_batch:
        from .client import Client
        from .errors import ImgworkerError

        payload = build_payload(args, src, to_url(args.dst))
        with Client(servers_from(args), timeout=args.timeout) as client:
            try:
                result = client.run(function, payload)
            except ImgworkerError as exc:
                print(json.dumps({"ok": False, "error": exc.to_dict()}, indent=2))
                return 1
        print(json.dumps(result.raw, indent=2))
        return 0
    sources = list_sources(src)
    if not sources:
        print(f"no images under {args.src}", file=sys.stderr)
        return 1
    dst_base = to_url(args.dst)
    jobs = [build_payload(args, s, batch_dst(s, src, dst_base, args.format)) for s in sources]
    summary = asyncio.run(run_batch(args, function, jobs))
    print(json.dumps(summary, indent=2))
    return 0 if not summary["failed"] else 1
