"""HEIC (HEVC) and AVIF sources, made at test time, through a real gearmand and worker.

pillow-heif writes the HEIC files (its x265 encoder); the worker decodes them with pillow-heif's libde265
(the pyvips wheel has no HEVC decoder). Each is compared with the same picture resized from its JPEG.
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pyvips
from support.corpus import PHOTOS, photo
from support.tools import require_module
from support.workerproc import REPO, WorkerProc

from imgworker.analysis import phash
from imgworker.core.errors import DecodeFailed, LimitExceeded
from imgworker.core.limits import Limits
from imgworker.imaging import heif
from imgworker.testing.gearmand import Gearmand

pillow_heif = require_module("pillow_heif", "pip install 'imgworker[heif]'")
from PIL import Image  # noqa: E402  (pillow-heif depends on Pillow)

pillow_heif.register_heif_opener()


@functools.cache
def heic_of(path: Path) -> bytes:
    """The picture at half size as HEIC; an EXIF orientation becomes the container's rotation (irot), as
    cameras write it. x265's fastest preset: the default takes seconds per picture on a loaded machine."""
    with Image.open(path) as im:
        buf = io.BytesIO()
        im.reduce(2).save(buf, format="HEIF", quality=92, exif=im.info.get("exif", b""),
                          enc_params={"preset": "ultrafast"})
    return buf.getvalue()


@pytest.fixture(scope="module")
def heic_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProc, Path]]:
    root = tmp_path_factory.mktemp("heic")
    (root / "out").mkdir()
    (root / "in").mkdir()
    (root / "in" / "dragonfly.heic").write_bytes(heic_of(photo("dragonfly")))
    (root / "in" / "rotated.heic").write_bytes(heic_of(photo("exif6")))
    with Gearmand() as g, WorkerProc([g.address], [PHOTOS, root]) as worker:
        yield worker, root


def job(worker: WorkerProc, function: str, payload: dict[str, object]) -> dict:  # type: ignore[type-arg]
    host, _, port = worker.servers[0].rpartition(":")
    proc = subprocess.run(["gearman", "-h", host, "-p", port, "-f", function, json.dumps(payload)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def pixels(path: Path) -> np.ndarray:
    image = pyvips.Image.new_from_file(str(path))
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, image.bands))


def test_the_wheel_cannot_decode_hevc_so_the_heif_module_does() -> None:
    data = heic_of(photo("dragonfly"))
    assert heif.handles(data) and not heif.handles(photo("baseline").read_bytes())
    with pytest.raises(pyvips.Error):  # what main did: DECODE_FAILED "Support for ... HEVC" (issue 16)
        pyvips.Image.new_from_buffer(data, "").avg()
    assert heif.load(data, Limits()).width == 800


@pytest.mark.parametrize("name, kind", [("dragonfly.heic", "dragonfly"), ("rotated.heic", "exif6")])
def test_heic_resizes_like_the_same_picture_from_jpeg(heic_worker: tuple[WorkerProc, Path], name: str,
                                                       kind: str) -> None:
    worker, root = heic_worker
    out_heic, out_jpeg = root / "out" / f"{kind}-heic.jpg", root / "out" / f"{kind}-jpeg.jpg"
    a = job(worker, "resize", {"src": (root / "in" / name).as_uri(), "dst": out_heic.as_uri(), "width": 300})
    b = job(worker, "resize", {"src": photo(kind).as_uri(), "dst": out_jpeg.as_uri(), "width": 300})
    assert a["ok"] is True, a
    assert (a["width"], a["height"]) == (b["width"], b["height"]) == (300, 225)  # rotated one shown upright
    diff = np.abs(pixels(out_heic).astype(int) - pixels(out_jpeg).astype(int))
    assert diff.mean() < 4, diff.mean()  # two lossy codecs of one picture, not a rotated or garbled one


def test_heic_info_and_facts_from_php(heic_worker: tuple[WorkerProc, Path]) -> None:
    worker, root = heic_worker
    proc = subprocess.run(["php", str(REPO / "examples" / "info.php"), worker.servers[0],
                           (root / "in" / "rotated.heic").as_uri(), "meta", "phash"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = json.loads(proc.stdout.strip().splitlines()[-1])["analysis"]
    meta = facts["meta"]
    assert (meta["format"], meta["width"], meta["height"]) == ("heic", 600, 450)  # half of 1200x900, upright
    assert meta["bytes"] == (root / "in" / "rotated.heic").stat().st_size
    jpeg = job(worker, "info", {"src": photo("exif6").as_uri(), "analyze": ["phash"]})["analysis"]["phash"]
    assert phash.distance(facts["phash"], jpeg) <= 6


def test_heic_icc_profile_is_applied_and_reported(heic_worker: tuple[WorkerProc, Path]) -> None:
    worker, root = heic_worker
    # A saturated red stored as Display P3 numbers with the P3 profile: shown right, it is sRGB (230, 20, 20).
    red = pyvips.Image.black(96, 64).new_from_image([230, 20, 20]).cast("uchar").copy(interpretation="srgb")
    p3 = red.icc_transform("p3")
    raw = np.ndarray(buffer=p3.write_to_memory(), dtype=np.uint8, shape=(64, 96, 3))
    assert abs(int(raw[0, 0, 0]) - 230) > 10  # the P3 numbers differ: ignoring the profile would show
    buf = io.BytesIO()
    pillow_heif.from_bytes("RGB", (96, 64), raw.tobytes()).save(
        buf, quality=95, icc_profile=bytes(p3.get("icc-profile-data")))
    (root / "in" / "p3.heic").write_bytes(buf.getvalue())
    out = root / "out" / "p3.png"
    result = job(worker, "resize", {"src": (root / "in" / "p3.heic").as_uri(), "dst": out.as_uri(), "width": 48,
                                    "analyze": ["meta", "dominant"]})
    assert result["ok"] is True, result
    assert np.abs(pixels(out)[10, 10, :3].astype(int) - [230, 20, 20]).max() <= 6
    assert result["analysis"]["meta"]["icc"] == "sP3C"  # libvips' Display P3 profile's description
    dominant = result["analysis"]["dominant"]["colour"]
    assert abs(int(dominant[1:3], 16) - 230) <= 6


def test_heic_pixel_limit_is_checked_from_the_header_before_decoding(heic_worker: tuple[WorkerProc, Path]) -> None:
    worker, root = heic_worker
    data = heic_of(photo("dragonfly"))
    # The same file whose header (the ispe box) claims 20000x20000: decoding it would need 1.2 GB or fail;
    # refused as too big, it never got that far.
    at = data.index(b"ispe")
    claimed = data[: at + 8] + (20000).to_bytes(4, "big") * 2 + data[at + 16 :]
    with pytest.raises(LimitExceeded):
        heif.probe(claimed, Limits())
    (root / "in" / "claimed.heic").write_bytes(claimed)
    (root / "in" / "cut.heic").write_bytes(data[: len(data) // 2])
    for name, code in (("claimed.heic", "LIMIT_EXCEEDED"), ("cut.heic", "DECODE_FAILED")):
        dst = root / "out" / f"{name}.jpg"
        failed = job(worker, "resize", {"src": (root / "in" / name).as_uri(), "dst": dst.as_uri(), "width": 100})
        assert failed["ok"] is False and failed["error"]["code"] == code, failed
        assert not dst.exists()
        info = job(worker, "info", {"src": (root / "in" / name).as_uri(), "analyze": ["phash"]})
        assert info["error"]["code"] == code
    with pytest.raises(DecodeFailed):
        heif.load(data[: len(data) // 2], Limits())
    assert job(worker, "info", {"src": photo("baseline").as_uri()})["ok"] is True  # still serving


def test_avif_input(heic_worker: tuple[WorkerProc, Path]) -> None:
    worker, root = heic_worker
    avif = root / "in" / "dragonfly.avif"
    avif.write_bytes(pyvips.Image.new_from_file(str(photo("dragonfly"))).heifsave_buffer(
        compression="av1", Q=80, effort=0))
    assert not heif.handles(avif.read_bytes())  # libvips decodes AVIF itself
    out_avif, out_jpeg = root / "out" / "avif.jpg", root / "out" / "from-jpeg.jpg"
    a = job(worker, "resize", {"src": avif.as_uri(), "dst": out_avif.as_uri(), "width": 320, "analyze": ["meta"]})
    job(worker, "resize", {"src": photo("dragonfly").as_uri(), "dst": out_jpeg.as_uri(), "width": 320})
    assert a["ok"] is True and a["analysis"]["meta"]["format"] == "avif"
    assert np.abs(pixels(out_avif).astype(int) - pixels(out_jpeg).astype(int)).mean() < 4


@pytest.mark.parametrize("resize", [True, False])
def test_heic_through_a_pipeline(tmp_path: Path, resize: bool) -> None:
    from imgworker.backends.cpu import CpuBackend
    from imgworker.jobs.service import Service
    from imgworker.pipeline.loader import parse
    from imgworker.pipeline.run import Runner
    from imgworker.stores import Stores
    from imgworker.stores.file import FileStore

    (tmp_path / "rotated.heic").write_bytes(heic_of(photo("exif6")))
    out = ("  - resize: {width: 300}\n    encode: {format: png}\n" if resize  # decoded at 300 px
           else "  - encode: {format: png}\n")  # no resize: decoded at full size
    runner = Runner(parse("p.yaml", "name: p\nanalyze: [meta]\nsteps:\n  - auto_orient\noutputs:\n" + out))
    svc = Service(Stores({"file": FileStore([tmp_path])}), CpuBackend(), Limits(), {"p": runner})
    payload = {"src": (tmp_path / "rotated.heic").as_uri(), "dst": (tmp_path / "out.png").as_uri()}
    result = svc.handle(json.dumps(payload).encode(), pipeline="p")
    assert (result["width"], result["height"]) == ((300, 225) if resize else (600, 450))
    assert result["analysis"]["meta"]["format"] == "heic"
    jpeg = pyvips.Image.thumbnail(str(photo("exif6")), result["width"], height=result["height"], size="force")
    shown = np.ndarray(buffer=jpeg.write_to_memory(), dtype=np.uint8, shape=(jpeg.height, jpeg.width, jpeg.bands))
    assert np.abs(pixels(tmp_path / "out.png").astype(int) - shown.astype(int)).mean() < 5


def test_without_the_heif_extra_heic_is_unsupported_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from imgworker.core.errors import UnsupportedImage
    from imgworker.imaging.probe import probe

    data = heic_of(photo("dragonfly"))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # what `import pillow_heif` meets without the extra
    with pytest.raises(UnsupportedImage, match=r"imgworker\[heif\]"):
        probe(data, Limits())
