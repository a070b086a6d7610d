"""``imgworker demo``: the whole service on one machine, no cloud account.

Starts a local gearmand and a worker, resizes a folder of sample images through them as a web backend would
(jobs carry paths, never bytes), submits one bad job to show an error, then prints a table and writes an HTML
contact sheet of before/after.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .submit import IMAGE_SUFFIXES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "corpus" / "photos"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run gearmand + a worker locally and resize sample images", description=__doc__)
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of source images")
    p.add_argument("--out", default="demo-out", help="folder for results and the contact sheet")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--processes", type=int, default=0, help="worker processes (0: one per core)")
    p.set_defaults(func=main)


def make_samples(folder: Path) -> None:
    """Synthetic samples for machines without the shared corpus."""
    import pyvips

    folder.mkdir(parents=True, exist_ok=True)
    base = pyvips.Image.xyz(1600, 1200)
    grad = (base[0] * 255 / 1600).cast("uchar")
    rgb = grad.bandjoin([(base[1] * 255 / 1200).cast("uchar"), (255 - grad).cast("uchar")])
    rgb.write_to_file(str(folder / "gradient_1600x1200.jpg"), Q=90)
    rgb.rot90().write_to_file(str(folder / "gradient_portrait.png"))


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited early:\n{log.read_text()[-2000:]}")
        if "worker ready" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"worker did not become ready in {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def contact_sheet(rows: list[dict[str, Any]], out: Path) -> Path:
    cells = []
    for row in rows:
        res = row["result"]
        after = (
            f'<img src="{html.escape(Path(row["dst"]).name)}" loading="lazy">'
            if res.get("ok")
            else f"<pre>{html.escape(json.dumps(res.get('error'), indent=1))}</pre>"
        )
        cells.append(
            "<tr>"
            f'<td><img src="{html.escape(Path(row["src"]).as_uri())}" loading="lazy"><br>'
            f"{html.escape(Path(row['src']).name)} ({row['src_bytes'] // 1024} KiB)</td>"
            f"<td>{after}<br>{html.escape(row['summary'])}</td></tr>"
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>imgworker demo</title>"
        "<style>body{font-family:sans-serif}img{max-width:420px;max-height:320px}td{vertical-align:top;padding:6px}"
        "</style><h1>imgworker demo: before / after</h1><table><tr><th>source</th><th>result</th></tr>"
        + "".join(cells)
        + "</table>"
    )
    path = out / "index.html"
    path.write_text(page)
    return path


def main(args: argparse.Namespace) -> int:
    from .client import Client
    from .errors import ImgworkerError
    from .gearmand import Gearmand

    images = Path(args.images).resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not images.is_dir():
        print(f"{images} not found: using generated sample images", file=sys.stderr)
        images = out / "samples"
        make_samples(images)
    sources = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    with Gearmand() as gearmand:
        print(f"gearmand listening on {gearmand.address}")
        log = out / "worker.log"
        cmd = [
            sys.executable,
            "-m",
            "imgworker",
            "worker",
            "--server",
            gearmand.address,
            "--root",
            str(images),
            "--root",
            str(out),
            "--processes",
            str(args.processes),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGWORKER_")}
        with log.open("wb") as log_fh:
            worker = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(worker, log)
            rows = run_jobs(Client([gearmand.address]), sources, out, args.width, ImgworkerError)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    print_table(rows)
    sheet = contact_sheet(rows, out)
    ok = sum(1 for r in rows if r["result"].get("ok"))
    print(f"\n{ok} of {len(rows)} jobs succeeded (the last one fails on purpose).")
    print(f"Contact sheet: {sheet.as_uri()}\nWorker log:    {log}")
    return 0 if ok == len(rows) - 1 else 1


def run_jobs(
    client: Any, sources: list[Path], out: Path, width: int, error_type: type[Exception]
) -> list[dict[str, Any]]:
    rows = []
    jobs = [(src, out / (src.stem + ".jpg")) for src in sources]
    # One job that must fail: a source outside the worker's roots.
    jobs.append((Path("/etc/passwd"), out / "forbidden.jpg"))
    with client:
        for src, dst in jobs:
            started = time.perf_counter()
            try:
                result = client.resize(src=src.as_uri(), dst=dst.as_uri(), width=width).raw
                summary = f"{result['width']}x{result['height']} {result['format']} {result['bytes'] // 1024} KiB"
            except error_type as exc:
                result = {"ok": False, "error": exc.to_dict()}  # type: ignore[attr-defined]
                summary = f"{result['error']['code']}: {result['error']['message']}"
            rows.append(
                {
                    "src": str(src),
                    "dst": str(dst),
                    "result": result,
                    "summary": summary,
                    "src_bytes": src.stat().st_size if src.exists() else 0,
                    "ms": (time.perf_counter() - started) * 1000,
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'source':42} {'ms':>7}  result")
    for row in rows:
        print(f"{Path(row['src']).name[:42]:42} {row['ms']:7.0f}  {row['summary']}")
