"""The demo's contact sheet: one self-contained HTML page (relative links only) in the demo's output folder."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("read", "decode", "encode", "write", "total")

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em} .lede{color:#555;margin-top:0}
table{border-collapse:collapse;width:100%} th{text-align:left;border-bottom:2px solid #ccc;padding:6px}
td{vertical-align:top;padding:8px 6px;border-bottom:1px solid #eee}
td img{max-width:300px;max-height:220px;display:block;background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%)
 50%/16px 16px}
.facts{color:#555;font-size:.9em} .ms{font-variant-numeric:tabular-nums;font-size:.85em;border:0}
.ms td{padding:0 8px 0 0;border:0} .error{background:#fff3f3} .error code{color:#b00;font-weight:bold}
.srcset{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-end}
.srcset figure{margin:0} .srcset img{display:block;max-width:100%;height:auto}
pre{background:#f6f6f6;padding:10px;overflow-x:auto}
"""


@dataclass
class Row:
    src: Path
    dst: Path
    source: dict[str, Any]  # width, height, format, bytes of the source (header only)
    result: dict[str, Any]  # the job's JSON result
    client_ms: float  # round trip seen by the client
    original: Path | None  # the copy of the source shown on the page

    def summary(self) -> str:
        res = self.result
        if not res.get("ok"):
            err = res.get("error", {})
            return f"{err.get('code')}: {err.get('message')}"
        if "outputs" in res:
            return f"{res.get('pipeline')} pipeline: {len(res['outputs'])} outputs"
        return f"{res['width']}x{res['height']} {res['format']} {kib(res['bytes'])}"


def kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} B"


def rel(path: Path, out: Path) -> str:
    return html.escape(Path(os.path.relpath(path, out)).as_posix(), quote=True)


def facts(info: dict[str, Any]) -> str:
    if "width" not in info:
        return kib(int(info.get("bytes", 0)))
    return f"{info['width']}x{info['height']} {info.get('format', '')}, {kib(int(info['bytes']))}"


def stage_table(ms: dict[str, float], client_ms: float) -> str:
    cells = "".join(f"<tr><td>{k}</td><td>{ms[k]:.1f} ms</td></tr>" for k in STAGES if k in ms)
    return f'<table class="ms">{cells}<tr><td>round trip</td><td>{client_ms:.0f} ms</td></tr></table>'


def resize_row(row: Row, out: Path) -> str:
    name = html.escape(row.src.name)
    before = f'<img src="{rel(row.original, out)}" alt="{name}">' if row.original else ""
    res = row.result
    if not res.get("ok"):
        err = res.get("error", {})
        return (f'<tr class="error"><td>{before}<b>{html.escape(str(row.src))}</b></td>'
                f"<td colspan=2><code>{html.escape(str(err.get('code')))}</code> "
                f"{html.escape(str(err.get('message')))}<br><span class=facts>retryable: "
                f"{html.escape(str(err.get('retryable')).lower())} — deliberate: the source is outside the "
                "worker's roots, so the job is refused before any work</span></td></tr>")
    after = f'<img src="{rel(row.dst, out)}" alt="{name} resized">'
    out_facts = f"{res['width']}x{res['height']} {res['format']}, {kib(res['bytes'])}"
    return (f"<tr><td>{before}<b>{name}</b><div class=facts>{facts(row.source)}</div></td>"
            f"<td>{after}<div class=facts>{out_facts}</div></td>"
            f"<td>{stage_table(res.get('ms', {}), row.client_ms)}</td></tr>")


def web_section(web: Row, out: Path) -> str:
    res = web.result
    title = f"<h2>One photo through the <code>web</code> pipeline: {html.escape(web.src.name)}</h2>"
    if not res.get("ok"):
        err = res.get("error", {})
        return f"{title}<p class=error><code>{html.escape(str(err.get('code')))}</code> " \
               f"{html.escape(str(err.get('message')))}</p>"
    figures: list[str] = []
    srcset: dict[str, list[str]] = {}
    for o in res["outputs"]:
        path = out / "web" / Path(o["dst"]).name
        figures.append(f'<figure><img src="{rel(path, out)}" width="{o["width"] // 2}" alt="{o["width"]} px">'
                       f"<figcaption class=facts>{o['width']}x{o['height']} {o['format']}, {kib(o['bytes'])}"
                       "</figcaption></figure>")
        srcset.setdefault(o["format"], []).append(f"{Path(o['dst']).name} {o['width']}w")
    snippet = "<picture>\n" + "".join(
        f'  <source type="image/{fmt}" srcset="{", ".join(v)}">\n' for fmt, v in srcset.items() if fmt != "jpeg"
    ) + f'  <img srcset="{", ".join(srcset.get("jpeg", []))}" sizes="100vw" alt="">\n</picture>'
    return (f"{title}<p class=lede>One decode, {len(res['outputs'])} outputs "
            f"({facts(web.source)} in); shown at half size.</p>"
            f"<div class=srcset>{''.join(figures)}</div>{stage_table(res.get('ms', {}), web.client_ms)}"
            f"<p>The markup a page would use:</p><pre>{html.escape(snippet)}</pre>")


def write_page(rows: list[Row], web: Row, out: Path) -> Path:
    ok = sum(1 for r in rows if r.result.get("ok"))
    body = "".join(resize_row(r, out) for r in rows)
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>imgworker demo</title>"
        f"<style>{STYLE}</style><h1>imgworker demo</h1>"
        f"<p class=lede>{len(rows)} resize jobs through a local gearmand and worker ({ok} succeeded, one fails "
        "on purpose); each job carried two paths, never image bytes. Times are the worker's, per stage.</p>"
        "<table><tr><th>source</th><th>result</th><th>time</th></tr>"
        f"{body}</table>{web_section(web, out)}</html>"
    )
    path = out / "index.html"
    path.write_text(page)
    return path
