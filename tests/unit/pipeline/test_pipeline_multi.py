"""Multi-output from one decode, dst templates, max_bytes, animations and the per-job time limit."""

from __future__ import annotations

import pytest
import pyvips
from PIL import Image
from support.corpus import make_large_jpeg, photo

from imgworker.core.errors import BadRequest, JobTimeout, LimitExceeded
from imgworker.core.limits import Limits
from imgworker.pipeline import decode as decoder

WEB = (
    "name: w\nsteps: [auto_orient, colour]\noutputs:\n"
    "  - resize: {width: [256, 512, 1024], without_enlargement: true}\n"
    "    encode:\n      - {format: webp, quality: 75}\n      - {format: jpeg, quality: 80, mozjpeg: true}\n"
)


@pytest.fixture
def decode_calls(monkeypatch):
    """Count calls to the pipeline's one decode function (and the sizes it decoded at)."""
    calls = []
    real = decoder.decode

    def counted(source, size, **kw):
        calls.append(size)
        return real(source, size, **kw)

    monkeypatch.setattr(decoder, "decode", counted)
    return calls


def test_web_writes_six_files_from_one_decode_at_the_largest_size(run_pipeline, tmp_path, decode_calls):
    r = run_pipeline(WEB, photo("baseline").name, "out/{stem}-{width}.{ext}")
    assert decode_calls == [(1024, 576)]  # one decode, shrunk on load to the largest output
    names = sorted(o["dst"].rsplit("/", 1)[1] for o in r["outputs"])
    assert names == sorted(f"{photo('baseline').stem}-{w}.{e}" for w in (256, 512, 1024) for e in ("webp", "jpg"))
    for out in r["outputs"]:
        img = Image.open(out["dst"].removeprefix("file://"))
        assert img.format == {"webp": "WEBP", "jpeg": "JPEG"}[out["format"]]
        assert img.size == (out["width"], out["height"]) and out["width"] in (256, 512, 1024)
        assert abs(out["height"] - out["width"] * 1152 / 2048) <= 1
    assert (r["dst"] == r["outputs"][0]["dst"] and r["pipeline"] == "t") or r["pipeline"] == "w"


def test_jpeg_sources_decode_at_the_smallest_dct_scale_once(run_pipeline, monkeypatch, decode_calls):
    from imgworker.imaging import load

    loads = []
    real = load.load_jpeg_resized

    def counted(source, shown, size, **kw):
        loads.append((shown, size))
        return real(source, shown, size, **kw)

    monkeypatch.setattr(load, "load_jpeg_resized", counted)
    monkeypatch.setattr(decoder, "load_jpeg_resized", counted, raising=False)
    r = run_pipeline(WEB, photo("cmyk").name, "o/{stem}-{width}.{ext}")
    assert loads == [((1280, 720), (1024, 576))]  # one DCT-scaled JPEG decode for six outputs
    for out in r["outputs"]:
        img = Image.open(out["dst"].removeprefix("file://"))
        assert img.mode == "RGB"  # CMYK came out as sRGB
        assert img.size == (out["width"], out["height"])


def test_outputs_are_not_enlarged_past_the_source(run_pipeline, tmp_path, decode_calls):
    r = run_pipeline(WEB, photo("png_named_jpg").name, "o/")
    assert decode_calls == [None]  # the largest output is the full size: no shrink
    assert sorted({o["width"] for o in r["outputs"]}) == [256, 400]
    assert (tmp_path / "o" / f"{photo('png_named_jpg').stem}-1024.webp").exists()  # named by the requested width


def test_one_dst_for_several_outputs_is_a_clear_bad_request(run_pipeline):
    with pytest.raises(BadRequest, match=r"writes 6 outputs: dst must be a template such as"):
        run_pipeline(WEB, photo("png_named_jpg").name, "out.jpg")
    with pytest.raises(BadRequest, match=r"gives two outputs the same name"):
        run_pipeline(WEB, photo("png_named_jpg").name, "o/{stem}-{width}.img")
    with pytest.raises(BadRequest, match=r"dst uses \{widht\} \(did you mean 'width'\?\)"):
        run_pipeline(WEB, photo("png_named_jpg").name, "o/{widht}.{ext}")


def test_forbidden_output_is_refused_before_any_work(run_pipeline, decode_calls):
    from imgworker.core.errors import ForbiddenPath

    with pytest.raises(ForbiddenPath):
        run_pipeline(WEB, photo("png_named_jpg").name, "file:///etc/{stem}-{width}.{ext}")
    assert decode_calls == []


def test_max_bytes_lowers_quality_until_it_fits(run_pipeline, tmp_path):
    text = ("name: t\nsteps: [{resize: {width: 1024}}]\n"
            "outputs: [{encode: {format: jpeg, quality: 95, max_bytes: 60000}}]\n")
    r = run_pipeline(text, photo("baseline").name, "o.jpg")
    out = r["outputs"][0]
    assert out["bytes"] <= 60000 and (tmp_path / "o.jpg").stat().st_size == out["bytes"]
    assert 30 <= out["quality"] < 95
    tiny = text.replace("60000", "500")
    with pytest.raises(LimitExceeded, match="does not fit max_bytes 500 even at quality 30"):
        run_pipeline(tiny, photo("baseline").name, "p.jpg")
    assert not (tmp_path / "p.jpg").exists()


@pytest.mark.parametrize(("fmt", "check"), [
    ("{format: jpeg, progressive: true}", lambda im: im.info.get("progressive") == 1),
    ("{format: png, palette: true}", lambda im: im.mode == "P"),
    ("{format: webp, lossless: true}", lambda im: im.format == "WEBP"),
    ("{format: avif, quality: 40, effort: 0}", lambda im: im.format == "AVIF"),
    ("{format: gif}", lambda im: im.format == "GIF"),
])
def test_encoders(run_pipeline, tmp_path, fmt, check):
    run_pipeline(f"name: t\nsteps: [{{resize: {{width: 200}}}}]\noutputs: [{{encode: {fmt}}}]\n",
                 photo("png_named_jpg").name, "o.img")
    img = Image.open(tmp_path / "o.img")
    assert img.size[0] == 200 and check(img)


def _animated_gif(path, frames=5):
    base = pyvips.Image.black(120, 80, bands=3)
    strip = pyvips.Image.arrayjoin([base.linear([1, 1, 1], [40 * i, 255 - 40 * i, 0]).cast("uchar")
                                    for i in range(frames)], across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 80)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    strip.gifsave(str(path))


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animation_keeps_all_frames(run_pipeline, tmp_path, fmt):
    _animated_gif(tmp_path / "a.gif")
    text = f"name: t\nsteps: [{{resize: {{width: 60, height: 60, fit: cover}}}}]\noutputs: [{{encode: {fmt}}}]\n"
    r = run_pipeline(text, tmp_path / "a.gif", "o.img")
    img = Image.open(tmp_path / "o.img")
    assert (r["width"], r["height"]) == (60, 60) and img.size == (60, 60) and img.n_frames == 5
    img.seek(4)
    assert img.convert("RGB").getpixel((30, 30))[0] > 120  # the last frame is the reddest


def test_animation_first_frame_and_frame_limit(run_pipeline, tmp_path):
    _animated_gif(tmp_path / "a.gif")
    text = "name: t\nanimation: first\nsteps: [{resize: {width: 60}}]\noutputs: [{encode: gif}]\n"
    run_pipeline(text, tmp_path / "a.gif", "o.gif")
    assert getattr(Image.open(tmp_path / "o.gif"), "n_frames", 1) == 1
    with pytest.raises(LimitExceeded, match="source has 5 frames; the limit is 3"):
        run_pipeline(text.replace("animation: first\n", ""), tmp_path / "a.gif", "p.gif", limits=Limits(max_frames=3))


def test_pipeline_timeout_stops_between_steps(run_pipeline, tmp_path):
    text = "name: t\ntimeout: 0.001\nsteps: [auto_orient, {resize: {width: 100}}]\noutputs: [{encode: jpeg}]\n"
    with pytest.raises(JobTimeout, match=r"time limit of 0\.001 s"):
        run_pipeline(text, photo("baseline").name, "o.jpg")
    assert not (tmp_path / "o.jpg").exists()


def test_a_long_libvips_evaluation_is_killed_at_the_deadline(run_pipeline, tmp_path):
    # A huge blur on the full 20 MP image takes tens of seconds; the eval handler kills it at the deadline.
    text = "name: t\ntimeout: 1\nsteps: [{blur: 150}]\noutputs: [{encode: jpeg}]\n"
    big = make_large_jpeg(tmp_path / "big.jpg")
    with pytest.raises(JobTimeout, match="time limit of 1 s"):
        run_pipeline(text, big, "o.jpg")
