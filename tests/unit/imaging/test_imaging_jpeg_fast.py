"""The libjpeg-turbo fast path (imgworker/imaging/jpeg_fast.py): refusals, strictness equal to libvips' at each fail_on
level, EXIF orientation, ICC, and the same pixels as libvips' jpegload path."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import pyvips
from support.corpus import bad, photo

from imgworker.backends.cpu import CpuBackend
from imgworker.core.contract import ResizeSpec
from imgworker.core.errors import DecodeFailed, LimitExceeded
from imgworker.core.geometry import plan
from imgworker.core.limits import Limits
from imgworker.imaging import jpeg_fast, load, probe

LEVELS = ("none", "truncated", "error", "warning")


def pixels(image: pyvips.Image) -> np.ndarray:
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                      shape=(image.height, image.width, image.bands))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def vips_verdict(data: bytes, shrink: int, level: str) -> bool:
    try:
        pyvips.Image.jpegload_buffer(data, shrink=shrink, fail_on=level).copy_memory()
        return True
    except pyvips.Error:
        return False


def hook_verdict(data: bytes, level: str) -> bool:
    """What the worker's JPEG load (the hook) says: decoded, or an error."""
    info = probe.probe(data, Limits())
    try:
        load.load_jpeg_resized(data, (info.width, info.height), (64, 48), fail_on=level).copy_memory()
        return True
    except pyvips.Error:
        return False


def scan_data(data: bytes) -> int:
    """Offset of the first byte after the SOS header."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return photo("dragonfly").read_bytes()


# --- refusals ---------------------------------------------------------------------------------------------

def test_cmyk_is_refused_and_still_decodes_through_libvips() -> None:
    data = photo("cmyk").read_bytes()
    assert jpeg_fast.refusal(jpeg_fast.scan_header(data)) == "CMYK/YCCK"
    assert jpeg_fast.decode_scaled(data, 4) is None
    out = CpuBackend().resize(data, ResizeSpec(width=128, height=128), Limits())
    assert out.width == 128


@pytest.mark.parametrize("kind", ["png_named_jpg", "webp", "rgba"])
def test_non_jpeg_is_refused(kind: str) -> None:
    data = photo(kind).read_bytes()
    assert jpeg_fast.scan_header(data) is None
    assert jpeg_fast.decode_scaled(data, 2) is None


def _with_sof(data: bytes, marker: int, precision: int | None = None) -> bytes:
    pos = data.index(b"\xff\xc0")
    out = bytearray(data)
    out[pos + 1] = marker
    if precision is not None:
        out[pos + 4] = precision
    return bytes(out)


@pytest.mark.parametrize(("marker", "precision", "why"), [
    (0xC9, None, "arithmetic-coded"), (0xC3, None, "lossless"), (0xC5, None, "hierarchical"),
    (0xC1, 12, "12-bit samples"),
])
def test_frame_types_the_fast_path_cannot_do_exactly_are_refused(jpeg: bytes, marker: int, precision: int | None,
                                                                  why: str) -> None:
    data = _with_sof(jpeg, marker, precision)
    assert jpeg_fast.refusal(jpeg_fast.scan_header(data)) == why
    assert jpeg_fast.decode_scaled(data, 2) is None


def test_progressive_and_grey_take_the_fast_path(jpeg: bytes) -> None:
    prog = photo("progressive").read_bytes()
    assert jpeg_fast.scan_header(prog).sof == 0xC2  # type: ignore[union-attr]
    assert jpeg_fast.decode_scaled(prog, 2) is not None
    grey = bytes(pyvips.Image.jpegload_buffer(jpeg).colourspace("b-w").jpegsave_buffer(Q=90))
    fast = jpeg_fast.decode_scaled(grey, 4)
    assert fast is not None and fast.bands == 1
    assert psnr(pixels(fast), pixels(pyvips.Image.jpegload_buffer(grey, shrink=4))) == math.inf


# --- same pixels ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["baseline", "progressive", "dragonfly", "exif6"])
@pytest.mark.parametrize("shrink", [1, 2, 4, 8])
def test_decode_is_libvips_jpegload_pixel_for_pixel(kind: str, shrink: int) -> None:
    data = photo(kind).read_bytes()
    fast = jpeg_fast.decode_scaled(data, shrink)
    assert fast is not None
    ref = pyvips.Image.jpegload_buffer(data, shrink=shrink)
    assert (fast.width, fast.height) == (ref.width, ref.height)
    assert psnr(pixels(fast), pixels(ref)) == math.inf


@pytest.mark.parametrize("kind", ["baseline", "progressive", "exif6", "cmyk"])
@pytest.mark.parametrize("box", [(512, 512), (200, 150)])
def test_resize_output_matches_the_libvips_path(kind: str, box: tuple[int, int], monkeypatch) -> None:
    data = photo(kind).read_bytes()
    spec = ResizeSpec(width=box[0], height=box[1], format="png")
    fast = pyvips.Image.new_from_buffer(CpuBackend().resize(data, spec, Limits()).data, "")
    monkeypatch.setattr(jpeg_fast, "decode_scaled", lambda *a, **k: None)  # today's path: jpegload only
    ref = pyvips.Image.new_from_buffer(CpuBackend().resize(data, spec, Limits()).data, "")
    assert (fast.width, fast.height) == (ref.width, ref.height)
    assert psnr(pixels(fast), pixels(ref)) >= 45


@pytest.mark.parametrize("colour", ["srgb", "b-w"])
@pytest.mark.parametrize("box", [(512, 384), (200, 150), (37, 500), (3, 2), (1200, 900), (2000, 1000)])
def test_plain_resize_after_the_fast_decode_is_thumbnail_image_pixel_for_pixel(jpeg: bytes, colour: str,
                                                                               box: tuple[int, int],
                                                                               monkeypatch) -> None:
    """No profile and nothing to turn: load_jpeg_resized resizes without thumbnail_image, same pixels (and
    upscales the same way)."""
    data = jpeg if colour == "srgb" else bytes(pyvips.Image.jpegload_buffer(jpeg).colourspace("b-w")
                                               .jpegsave_buffer(Q=90))
    info = probe.probe(data, Limits())
    with monkeypatch.context() as m:
        m.setattr(pyvips.Image, "thumbnail_image", lambda *a, **k: pytest.fail("took thumbnail_image"), raising=False)
        got = load.load_jpeg_resized(data, (info.width, info.height), box, fail_on="warning").copy_memory()
    shrink = load.shrink_on_load(info.width, info.height, *box)
    ref = jpeg_fast.decode_scaled(data, shrink).thumbnail_image(box[0], height=box[1], size="force")  # type: ignore[union-attr]
    assert (got.width, got.height) == box == (ref.width, ref.height)
    assert got.interpretation == ref.interpretation
    assert psnr(pixels(got), pixels(ref)) == math.inf


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("box", [(512, 512), (100, 60)])
def test_turned_plain_resize_is_thumbnail_image_pixel_for_pixel(jpeg: bytes, orientation: int,
                                                                box: tuple[int, int], monkeypatch) -> None:
    """An EXIF turn without a profile: resized as stored, then turned in memory; thumbnail_image's pixels."""
    src = pyvips.Image.jpegload_buffer(jpeg, shrink=2).copy()
    src.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    data = bytes(src.jpegsave_buffer(Q=90))
    info = probe.probe(data, Limits())
    geo = plan(info.width, info.height, box[0], box[1], "inside", Limits())
    size = (geo.resize_w, geo.resize_h)
    with monkeypatch.context() as m:
        m.setattr(pyvips.Image, "thumbnail_image", lambda *a, **k: pytest.fail("took thumbnail_image"), raising=False)
        got = load.load_jpeg_resized(data, (info.width, info.height), size, fail_on="warning",
                                    orientation=orientation).copy_memory()
    shrink = load.shrink_on_load(info.width, info.height, *size)
    ref = jpeg_fast.decode_scaled(data, shrink).thumbnail_image(size[0], height=size[1], size="force")  # type: ignore[union-attr]
    assert (got.width, got.height) == size == (ref.width, ref.height)
    assert "orientation" not in got.get_fields()  # turned, and the tag gone, as thumbnail_image leaves it
    assert psnr(pixels(got), pixels(ref)) == math.inf


# --- EXIF orientation and ICC -----------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_1_to_8_as_libvips(jpeg: bytes, orientation: int) -> None:
    src = pyvips.Image.jpegload_buffer(jpeg, shrink=4).copy()
    src.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    data = bytes(src.jpegsave_buffer(Q=90))
    frame = jpeg_fast.scan_header(data)
    assert frame is not None and frame.orientation == orientation
    fast = jpeg_fast.decode_scaled(data, 2)
    assert fast is not None
    ref = pyvips.Image.jpegload_buffer(data, shrink=2)
    assert psnr(pixels(fast.autorot()), pixels(ref.autorot())) == math.inf
    out = CpuBackend().resize(data, ResizeSpec(width=100, height=100, format="png"), Limits())
    want = (100, 75) if orientation < 5 else (75, 100)
    assert (out.width, out.height) == want


def test_icc_profile_is_carried_and_treated_like_libvips(jpeg: bytes, monkeypatch) -> None:
    # An RGB source tagged with a P3 profile: the fast path carries the same profile bytes as jpegload, so
    # libvips' thumbnail treats it exactly as on today's path (libvips 8.18 converts CMYK, which is refused
    # here, and leaves an RGB profile as it is).
    src = pyvips.Image.jpegload_buffer(jpeg, shrink=2).icc_transform("p3", input_profile="srgb")
    data = bytes(src.jpegsave_buffer(Q=90, keep="icc"))
    frame = jpeg_fast.scan_header(data)
    vips_icc = pyvips.Image.jpegload_buffer(data).get("icc-profile-data")
    assert frame is not None and frame.icc == vips_icc and len(vips_icc) > 100
    fast_image = jpeg_fast.decode_scaled(data, 2)
    assert fast_image is not None and fast_image.get("icc-profile-data") == vips_icc
    spec = ResizeSpec(width=256, height=256, format="png")
    fast = pixels(pyvips.Image.new_from_buffer(CpuBackend().resize(data, spec, Limits()).data, ""))
    monkeypatch.setattr(jpeg_fast, "decode_scaled", lambda *a, **k: None)
    ref = pixels(pyvips.Image.new_from_buffer(CpuBackend().resize(data, spec, Limits()).data, ""))
    assert psnr(fast, ref) >= 45


# --- strictness: the verdict is libvips' at every fail_on level -------------------------------------------

@pytest.mark.parametrize("name", ["truncated_dragonfly.jpg", "corrupt_scan_dragonfly.jpg"])
def test_corpus_bad_files_refused_by_fast_decoder_and_verdict_is_libvips(name: str) -> None:
    data = bad(name).read_bytes()
    assert jpeg_fast.decode_scaled(data, 8) is None  # strict libjpeg-turbo: any warning leaves it to libvips
    for level in LEVELS:
        assert hook_verdict(data, level) == vips_verdict(data, 8, level), level
    with pytest.raises(DecodeFailed):
        CpuBackend("warning").resize(data, ResizeSpec(width=64, height=64), Limits())


def _variants(data: bytes) -> dict[str, bytes]:
    start = scan_data(data)
    rng = random.Random(14)
    out = {f"cut at {f:.2f}": data[:start + int((len(data) - start) * f)] for f in (0.02, 0.3, 0.77, 0.999)}
    out["missing EOI"] = data[:-2]
    for i in range(3):
        body = bytearray(data)
        for _ in range(8):
            body[rng.randrange(start + 100, len(data) - 100)] = rng.randrange(256)
        out[f"random bytes {i}"] = bytes(body)
    return out


def test_restart_markers_decode_fast_and_a_wrong_one_gets_libvips_verdict(jpeg: bytes) -> None:
    data = bytes(pyvips.Image.jpegload_buffer(jpeg).jpegsave_buffer(Q=85, restart_interval=4))
    first_rst = data.index(b"\xff\xd0", scan_data(data))
    assert jpeg_fast.decode_scaled(data, 2) is not None  # restart markers as such are fine
    wrong = bytearray(data)
    wrong[first_rst + 1] = 0xD3  # RST3 where RST0 belongs: libjpeg resyncs with a warning
    assert jpeg_fast.decode_scaled(bytes(wrong), 2) is None
    verdicts = {level: hook_verdict(bytes(wrong), level) for level in LEVELS}
    assert verdicts == {level: vips_verdict(bytes(wrong), 8, level) for level in LEVELS}  # hook: 1/8
    assert verdicts["warning"] is False and verdicts["none"] is True


@pytest.mark.parametrize("kind", ["dragonfly", "progressive"])
def test_generated_broken_variants_get_libvips_verdict_at_every_level(kind: str) -> None:
    data = photo(kind).read_bytes()
    failed_strict = 0
    for what, variant in _variants(data).items():
        for level in LEVELS:
            assert hook_verdict(variant, level) == vips_verdict(variant, 8, level), (what, level)
        failed_strict += not vips_verdict(variant, 8, "warning")
    assert failed_strict >= 5  # the variants really are broken, so the comparison means something


# --- the header check from the markers (no second header open) --------------------------------------------

def _libvips_probe(data: bytes, monkeypatch) -> probe.SourceInfo:
    with monkeypatch.context() as m:
        m.setattr(jpeg_fast, "fast_header", lambda _source: None)
        return probe.probe(data, Limits())


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("kind", ["baseline", "progressive", "exif6"])
def test_probe_from_markers_equals_libvips_header(kind: str, orientation: int, monkeypatch) -> None:
    src = pyvips.Image.new_from_buffer(photo(kind).read_bytes(), "").copy()
    src.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    data = bytes(src.jpegsave_buffer(Q=80, interlace=kind == "progressive"))
    assert jpeg_fast.fast_header(data) is not None
    assert probe.probe(data, Limits()) == _libvips_probe(data, monkeypatch)


def test_probe_leaves_cmyk_and_non_jpeg_to_libvips(monkeypatch) -> None:
    for kind in ("cmyk", "png_named_jpg", "webp"):
        data = photo(kind).read_bytes()
        assert jpeg_fast.fast_header(data) is None
        assert probe.probe(data, Limits()) == _libvips_probe(data, monkeypatch)


def test_pixel_limit_is_checked_from_the_markers_before_any_pixel(jpeg: bytes, monkeypatch) -> None:
    sof = jpeg.index(b"\xff\xc0")
    huge = bytearray(jpeg)
    huge[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    monkeypatch.setattr(jpeg_fast.simplejpeg, "decode_jpeg", lambda *a, **k: pytest.fail("decoded pixels"))
    with pytest.raises(LimitExceeded):
        probe.probe(bytes(huge), Limits())
    with pytest.raises(LimitExceeded):
        CpuBackend().resize(bytes(huge), ResizeSpec(width=64, height=64), Limits())


def test_frames_over_the_memory_bound_stream_through_libvips(jpeg: bytes, monkeypatch) -> None:
    assert jpeg_fast.decode_scaled(jpeg, 1) is not None
    frame = jpeg_fast.scan_header(jpeg)
    assert frame is not None
    monkeypatch.setattr(jpeg_fast, "MAX_FRAME_BYTES", frame.width * frame.height * 3 - 1)
    assert jpeg_fast.decode_scaled(jpeg, 1) is None
    assert jpeg_fast.decode_scaled(jpeg, 2) is not None


def test_gpu_backends_cpu_decode_takes_the_fast_path_with_the_same_pixels(monkeypatch) -> None:
    from imgworker.backends.gpu import codec

    data = photo("exif6").read_bytes()
    calls: list[int] = []
    real = jpeg_fast.decode_scaled

    def counted(source: bytes, shrink: int, **kw) -> pyvips.Image | None:
        calls.append(shrink)
        return real(source, shrink, **kw)

    monkeypatch.setattr(jpeg_fast, "decode_scaled", counted)
    fast = codec.decode(data, "jpeg", 2, "warning")
    assert calls == [2]
    monkeypatch.setattr(jpeg_fast, "decode_scaled", lambda *a, **k: None)
    ref = codec.decode(data, "jpeg", 2, "warning")
    shown = probe.probe(data, Limits())
    assert fast.shape == ref.shape == (shown.height // 2, shown.width // 2, 3)  # oriented as displayed
    assert psnr(fast, ref) == math.inf
    with pytest.raises(DecodeFailed):
        codec.decode(bad("corrupt_scan_dragonfly.jpg").read_bytes(), "jpeg", 2, "warning")


# --- end to end: a real gearmand and real worker processes at two fail_on levels ----------------------------

@pytest.mark.parametrize(("level", "corrupt_ok"), [("warning", False), ("truncated", True)])
def test_real_worker_keeps_libvips_strictness_per_level(tmp_path, level: str, corrupt_ok: bool) -> None:
    from support.workerproc import WorkerProc

    from imgworker import Client
    from imgworker.testing.gearmand import Gearmand

    (tmp_path / "in").mkdir()
    prog = photo("progressive")
    cut = tmp_path / "in" / "cut.jpg"
    cut.write_bytes(prog.read_bytes()[: len(prog.read_bytes()) * 2 // 3])  # truncated mid-scan
    corrupt = bad("corrupt_scan_dragonfly.jpg")
    # A job server of its own: the session's core worker (other roots, default strictness) must not take these.
    with Gearmand() as g, WorkerProc([g.address], [tmp_path, corrupt.parent, prog.parent], "--fail-on", level,
                                     concurrency=1) as worker, Client(worker.servers, timeout=60) as client:
        ok = client.resize(src=prog.as_uri(), dst=(tmp_path / "ok.png").as_uri(), width=300, format="png")
        assert ok.width == 300  # the fast path's progressive decode, through the worker
        for src, good in ((cut, False), (corrupt, corrupt_ok)):
            dst = tmp_path / f"out_{src.stem}.jpg"
            if good:
                assert client.resize(src=src.as_uri(), dst=dst.as_uri(), width=64).width == 64
            else:
                with pytest.raises(DecodeFailed):
                    client.resize(src=src.as_uri(), dst=dst.as_uri(), width=64)
                assert not dst.exists()
