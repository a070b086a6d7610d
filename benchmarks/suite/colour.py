"""Is the output right? Mean CIE76 colour difference of each engine's 512 px thumbnail against a careful
reference, for the files where engines disagree: a CMYK JPEG with an embedded profile and an RGBA PNG.

Reference: full-resolution decode, the embedded ICC profile imported, exported to sRGB, alpha flattened on
white (what every engine is asked for), then resized to the engine's output size. dE76 < ~2 is invisible;
> ~10 is a different colour.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import CORPUS, PEERS_DIR, THUMB, Row, Workload, pick
from benchmarks.suite import engine_sharp as bench_sharp
from benchmarks.suite import engine_thumbor as bench_thumbor

FILES = (pick("bridge_*_cmyk.jpg"), pick("sunset_*_rgba.png"))


def reference(path: Path, width: int, height: int):  # type: ignore[no-untyped-def]
    import pyvips

    image = pyvips.Image.new_from_file(str(path)).autorot()
    if image.interpretation == "cmyk" or "icc-profile-data" in image.get_fields():
        image = image.icc_transform("srgb", embedded=True, intent="relative")
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    image = image.colourspace("srgb")
    return image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")


def delta_e(path: Path, output: bytes) -> float:
    import pyvips

    out = pyvips.Image.new_from_buffer(output, "")
    ref = reference(path, out.width, out.height)
    return round(float(out.colourspace("lab").dE76(ref.colourspace("lab")).avg()), 2)


def _outputs_imgworker(files: list[Path]) -> dict[str, bytes]:
    from imgworker.backends.cpu import CpuBackend
    from imgworker.core.contract import ResizeSpec
    from imgworker.core.limits import Limits

    spec = ResizeSpec(width=THUMB.width, height=THUMB.height)
    return {f.name: CpuBackend().resize(f.read_bytes(), spec, Limits()).data for f in files}


def _outputs_sharp(files: list[Path]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as out:
        spec = Workload("colour", THUMB, tuple(map(str, files))).spec()
        subprocess.run(["node", str(PEERS_DIR / "sharp_loop.js"), json.dumps(spec), out, "--once"],
                       env={"PATH": "/usr/bin:/bin", "NODE_PATH": str(bench_sharp.NODE_DIR / "node_modules")},
                       check=True, capture_output=True, timeout=120)
        return {f.name: Path(out, f.name + ".jpg").read_bytes() for f in files}


def _outputs_thumbor(files: list[Path]) -> dict[str, bytes]:
    server = bench_thumbor.Server(1)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        wl = Workload("colour", THUMB, tuple(map(str, files)))
        got = {}
        for f in files:
            status, body = bench_thumbor._get(conn, bench_thumbor.url_for(wl, str(f)))
            if status == 200:
                got[f.name] = body
        return got
    finally:
        server.stop()


def run(peers: bool = True) -> list[Row]:
    files = [CORPUS / name for name in FILES]
    makers: list[tuple[str, Callable[[list[Path]], dict[str, bytes]], str | None]] = [
        ("imgworker", _outputs_imgworker, None)]
    if peers:
        makers += [("sharp", _outputs_sharp, bench_sharp.unavailable()),
                   ("thumbor (Pillow)", _outputs_thumbor, bench_thumbor.unavailable())]
    rows = []
    for engine, make, why in makers:
        if why:
            rows.append(Row("colour dE76", engine, skipped=why))
            continue
        outputs = make(files)
        scores = {name: delta_e(CORPUS / name, data) for name, data in outputs.items()}
        note = ", ".join(f"{name.split('.')[0]}: {v}" for name, v in scores.items())
        rows.append(Row("colour dE76", engine, note=note or "no output", extra={"dE76": scores}))
    return rows
