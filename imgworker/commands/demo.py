"""``imgworker demo``: the whole service on one machine, no cloud account.

Starts a local gearmand and a worker (with the repository's pipelines), resizes the sample photos in
``examples/images`` through them as a web backend would (jobs carry paths, never bytes), runs one photo through
the ``web`` pipeline (its srcset set), submits one bad job to show an error, then prints a table and writes
``index.html``: every photo before and after, with sizes, bytes and per-stage milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyvips

from imgworker.client import Client
from imgworker.commands.demo_page import Row, write_page
from imgworker.commands.submit import IMAGE_SUFFIXES
from imgworker.core.errors import ImgworkerError
from imgworker.testing.gearmand import Gearmand

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IMAGES = REPO / "examples" / "images"
PIPELINES = REPO / "pipelines"


def add_parser(sub: Any, summary: str) -> None:
    p = sub.add_parser("demo", help=summary, description=__doc__)
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of source images (default: the samples)")
    p.add_argument("--out", default="demo-out", help="folder for results and the contact sheet")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--processes", type=int, default=0, help="worker processes (0: one per core)")
    p.set_defaults(func=main)


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited early:\n{log.read_text()[-2000:]}")
        if "worker ready" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"worker did not become ready in {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def source_facts(path: Path) -> dict[str, Any]:
    """Displayed size (EXIF orientation applied) and format of a source, from its header only."""
    try:
        image = pyvips.Image.new_from_file(str(path), access="sequential")
    except pyvips.Error:
        return {"bytes": path.stat().st_size if path.exists() else 0}
    swap = image.get("orientation") in (5, 6, 7, 8) if "orientation" in image.get_fields() else False
    w, h = (image.height, image.width) if swap else (image.width, image.height)
    loader = str(image.get("vips-loader")).removesuffix("load").removesuffix("_source").removesuffix("_buffer")
    return {"width": w, "height": h, "format": loader, "bytes": path.stat().st_size}


def main(args: argparse.Namespace) -> int:
    images = Path(args.images).resolve()
    out = Path(args.out).resolve()
    if not images.is_dir():
        print(f"--images {images} is not a folder of images", file=sys.stderr)
        return 2
    sources = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not sources:
        print(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {images}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with Gearmand() as gearmand:
        print(f"gearmand listening on {gearmand.address}")
        log = out / "worker.log"
        cmd = [sys.executable, "-m", "imgworker", "worker", "--server", gearmand.address, "--root", str(images),
               "--root", str(out), "--processes", str(args.processes), "--pipelines", str(PIPELINES)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGWORKER_")}
        with log.open("wb") as log_fh:
            worker = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(worker, log)
            with Client([gearmand.address]) as client:
                rows = run_jobs(client, sources, out, args.width)
                web = run_web(client, pick_web_photo(sources), out)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    print_table([*rows, web])
    sheet = write_page(rows, web, out)
    ok = sum(1 for r in rows if r.result.get("ok"))
    print(f"\n{ok} of {len(rows)} resize jobs succeeded (the last one fails on purpose); "
          f"web pipeline: {len(web.result.get('outputs', []))} outputs.")
    print(f"Contact sheet: {sheet.as_uri()}\nWorker log:    {log}")
    return 0 if ok == len(rows) - 1 and web.result.get("ok") else 1


def pick_web_photo(sources: list[Path]) -> Path:
    """The JPEG with the most pixels (the srcset case a web backend has most), else the first source."""

    def pixels(path: Path) -> int:
        info = source_facts(path)
        jpeg = info.get("format") == "jpeg" and path.suffix.lower() in (".jpg", ".jpeg")
        return int(info.get("width", 0)) * int(info.get("height", 0)) if jpeg else 0

    return max(sources, key=pixels)


def timed_job(client: Any, function: str, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    try:
        result = client.run(function, payload).raw
    except ImgworkerError as exc:
        result = {"ok": False, "error": exc.to_dict()}
    return result, (time.perf_counter() - started) * 1000


def run_jobs(client: Any, sources: list[Path], out: Path, width: int) -> list[Row]:
    originals = out / "originals"  # copies, so the page is whole when the folder is moved or shared
    originals.mkdir(exist_ok=True)
    jobs: list[tuple[Path, Path, Path | None]] = [
        (src, out / (src.stem + ".jpg"), originals / src.name) for src in sources
    ]
    # One job that must fail: a source outside the worker's roots.
    jobs.append((Path("/etc/passwd"), out / "forbidden.jpg", None))
    rows = []
    for src, dst, copy in jobs:
        result, ms = timed_job(client, "resize", {"src": src.as_uri(), "dst": dst.as_uri(), "width": width})
        if copy is not None:
            shutil.copyfile(src, copy)
        facts = source_facts(src) if copy is not None else {}
        rows.append(Row(src=src, dst=dst, source=facts, result=result, client_ms=ms, original=copy))
    return rows


def run_web(client: Any, src: Path, out: Path) -> Row:
    web = out / "web"
    web.mkdir(exist_ok=True)
    result, ms = timed_job(client, "web", {"src": src.as_uri(), "dst": web.as_uri() + "/"})
    return Row(src=src, dst=web, source=source_facts(src), result=result, client_ms=ms, original=None)


def print_table(rows: list[Row]) -> None:
    print(f"\n{'source':38} {'ms':>7}  result")
    for row in rows:
        print(f"{row.src.name[:38]:38} {row.client_ms:7.0f}  {row.summary()}")
