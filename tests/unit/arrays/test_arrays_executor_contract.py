"""One contract for both executors: every pipeline step's ``vips`` and ``array`` (on NumPy) implementations
on the shipped photos (orientation, CMYK, 16-bit, alpha) and an animation made here, within bounds.

Bounds (measured on these photos with libvips 8.18; see docs/pipelines.md "Executors"):
- geometry (crop, extract, extend, flip, rotate by 90s, auto_orient, trim, smart crops): identical pixels.
- filters (blur, sharpen, modulate, grayscale, flatten, watermark, resize): PSNR >= 40 dB and max difference
  <= 16. What differs is rounding: libvips' integer convolution masks and LUTs, its cast (truncation) where
  we round, float colour maths; measured 47-99 dB, max 1-8 on opaque images (alpha: compared premultiplied,
  since colour under alpha 0 is invisible and left undefined by both).
- arbitrary-angle rotate: PSNR >= 30 dB and max difference <= 100: both sample bilinearly, but libvips places
  the rotated bounding box a fraction of a pixel differently, so the edges differ (measured at 12.5, 33 and 45
  degrees: 31-46 dB, max 27-94). Controls (``test_the_rotate_bound_catches_a_pixel_shift_and_half_a_degree``):
  a 1 px shift or half a degree more measure 22-29 dB, max 156-252.
- decisions from image content (smart crop windows, the face box, the trim box): one implementation for both
  executors (imgworker/pipeline/steps/gravity.py, trim.py), so the same window within 2 px at the source's
  scale, also when the two executors' pixels differ by a level or two, as a CPU and a GPU worker's do
  (``test_smart_crops_choose_the_same_window_on_both_workers``: every sample photo, measured 0 px).
Negative controls (``test_the_bounds_catch_real_mistakes``): a missing watermark, a crop 3 px off, a sharpen
with the wrong strength, a blur with the wrong sigma all fall far below these bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pyvips
from support.corpus import photo

from imgworker.arrays import executor
from imgworker.arrays import image as arrays
from imgworker.core.deadline import Deadline
from imgworker.core.limits import Limits
from imgworker.imaging.colour import to_srgb
from imgworker.pipeline import frames
from imgworker.pipeline.context import StepContext
from imgworker.pipeline.steps import STEPS

SIDE = 200  # small copies: the contract is about maths, not sizes; keeps the suite fast
KINDS = ("baseline", "cmyk", "rgb16", "rgba")
EXACT, FILTER, ROTATE = (99.0, 0), (40.0, 16), (30.0, 100)


@pytest.fixture(scope="module")
def images() -> dict[str, pyvips.Image]:
    out = {k: to_srgb(pyvips.Image.thumbnail(str(photo(k)), SIDE), "any").copy_memory() for k in KINDS}
    out["mark"] = pyvips.Image.new_from_file(str(photo("rgba")))
    return out


@pytest.fixture(scope="module")
def mark_png() -> bytes:
    return bytes(pyvips.Image.thumbnail(str(photo("rgba")), 120).pngsave_buffer())


def ctx(mark: bytes, **kw: Any) -> StepContext:
    c = StepContext(Limits(), Deadline.after(60), **kw)
    c.cache["mem://mark.png"] = mark
    return c


def premultiplied(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    if a.shape[2] in (2, 4):
        a[..., :-1] *= a[..., -1:] / 255.0
    return a


def psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    assert a.shape == b.shape, (a.shape, b.shape)
    pa, pb = premultiplied(a), premultiplied(b)
    mse = float(((pa - pb) ** 2).mean())
    return (99.0 if mse == 0 else 10 * np.log10(255**2 / mse)), int(np.abs(pa - pb).max().round())


def both(name: str, opts: dict[str, Any], image: pyvips.Image, mark: bytes, **kw: Any) -> tuple[Any, Any]:
    step = STEPS[name]
    o = {**step.defaults(), **opts}
    v = step.vips(image, o, ctx(mark, **kw))
    a = step.array(np, arrays.from_vips(image), o, ctx(mark, **kw))
    return arrays.from_vips(v if v.format == "uchar" else v.cast("uchar")), arrays.to_uint8(np, a)


# (step, options, bound): every step of docs/pipelines.md, the shipped pipelines' options among them.
CASES = [
    ("resize", {"width": 120}, FILTER),
    ("resize", {"width": 90, "height": 90, "fit": "cover"}, FILTER),
    ("resize", {"width": 90, "height": 60, "fit": "contain", "background": (10, 200, 30)}, FILTER),
    ("resize", {"width": 77, "height": 50, "fit": "fill", "kernel": "linear"}, FILTER),
    ("resize", {"width": 120, "kernel": "mitchell"}, FILTER),
    ("resize", {"width": 300}, FILTER),  # enlarging (bicubic, as libvips)
    ("crop", {"width": 120, "height": 80, "gravity": "southeast"}, EXACT),
    ("crop", {"width": 120, "height": 80, "gravity": "entropy"}, EXACT),
    ("extract", {"left": 13, "top": 7, "width": 90, "height": 70}, EXACT),
    ("extend", {"top": 9, "left": 4, "bottom": 2, "right": 11, "background": (0, 90, 255)}, EXACT),
    ("extend", {"top": 9, "left": 4, "mode": "mirror"}, EXACT),
    ("extend", {"bottom": 9, "right": 4, "mode": "repeat"}, EXACT),
    ("extend", {"top": 5, "right": 6, "mode": "copy"}, EXACT),
    ("flip", {"direction": "both"}, EXACT),
    ("rotate", {"angle": 270}, EXACT),
    ("rotate", {"angle": 12.5}, ROTATE),
    ("blur", {"sigma": 2.5}, FILTER),
    ("sharpen", {"sigma": 0.8, "m1": 0.5, "m2": 3}, FILTER),  # product_zoom's
    ("sharpen", {"sigma": 1.5, "m1": 1, "m2": 2, "x1": 3}, FILTER),
    ("modulate", {"brightness": 1.2, "saturation": 0.6, "hue": 40}, FILTER),
    ("grayscale", {}, FILTER),
    ("flatten", {"background": (255, 255, 255)}, FILTER),
    ("watermark", {"src": "mem://mark.png", "gravity": "southeast", "opacity": 0.35, "scale": 0.2}, FILTER),
    ("watermark", {"src": "mem://mark.png", "gravity": "north", "opacity": 1.0, "scale": 0.5, "margin": 0}, FILTER),
    ("trim", {"threshold": 10}, EXACT),
    ("colour", {}, EXACT),
    ("metadata", {"keep": ["copyright"]}, EXACT),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "opts", "bound"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_both_executors_agree(images: dict[str, pyvips.Image], mark_png: bytes, kind: str, name: str,
                              opts: dict[str, Any], bound: tuple[float, int]) -> None:
    v, a = both(name, opts, images[kind], mark_png)
    db, worst = psnr(v, a)
    assert db >= bound[0] and worst <= bound[1], f"{name} {opts} on {kind}: {db:.2f} dB, max {worst}"


def test_trim_finds_the_same_box_as_libvips(images: dict[str, pyvips.Image], mark_png: bytes) -> None:
    framed = images["baseline"].embed(17, 9, SIDE + 40, images["baseline"].height + 25, extend="background",
                                      background=[250, 250, 250])
    v, a = both("trim", {"threshold": 10}, framed, mark_png)
    assert v.shape == a.shape and v.shape[:2] != (framed.height, framed.width)
    assert psnr(v, a)[0] == 99.0


def test_auto_orient_turns_the_stored_pixels_like_libvips(mark_png: bytes) -> None:
    stored = pyvips.Image.new_from_file(str(photo("exif6"))).copy_memory()
    assert stored.get("orientation") == 6
    v = STEPS["auto_orient"].vips(stored, {"enabled": True}, None)
    a = STEPS["auto_orient"].array(np, arrays.from_vips(stored), {"enabled": True}, ctx(mark_png, orientation=6))
    assert (v.width, v.height) == (stored.height, stored.width)
    assert psnr(arrays.from_vips(v), a)[0] == 99.0


WINDOW_PX = 2  # the same window, at the source's scale


@pytest.fixture(scope="module")
def worker_inputs() -> list[tuple[Any, pyvips.Image, np.ndarray]]:
    """Every sample photo at 600 px as two workers have it: libvips' thumbnail (the CPU worker's shrink-on-load
    and resize) and a decode at twice the size resized by the array resampler (a GPU worker: another decode
    scale, another resampler): pixels a level or two apart."""
    from support.corpus import photos

    out = []
    for path in photos():
        cpu = to_srgb(pyvips.Image.thumbnail(str(path), 600, height=600)).copy_memory()
        big = arrays.from_vips(to_srgb(pyvips.Image.thumbnail(str(path), 1200, height=1200)))
        gpu = STEPS["resize"].array(np, big, {**STEPS["resize"].defaults(), "width": cpu.width,
                                              "height": cpu.height, "fit": "fill"}, ctx(b""))
        out.append((path, cpu, arrays.to_uint8(np, gpu)))
    return out


@pytest.mark.parametrize("position", ["attention", "entropy", "faces"])
def test_smart_crops_choose_the_same_window_on_both_workers(
        worker_inputs: list[tuple[Any, pyvips.Image, np.ndarray]], position: str) -> None:
    if position == "faces":
        pytest.importorskip("cv2", reason="the [faces] extra (opencv-python-headless) is not installed")
    step = STEPS["resize"]
    checked = 0
    for path, cpu, gpu in worker_inputs:
        source = path.read_bytes()
        assert cpu.width == int(gpu.shape[1]) and cpu.height == int(gpu.shape[0])
        assert psnr(arrays.from_vips(cpu), gpu)[0] < 60  # really two workers' pixels, not one image twice
        full = pyvips.Image.new_from_file(str(path)).autorot()
        shared: dict[str, Any] = {}  # the job's source preview, made once per photo (a pure function of its bytes)
        sizes = ((256, 256), (400, 160), (150, 300))[: 1 if position == "faces" else 3]  # Haar: ~0.4 s a run
        for w, h in sizes:
            o = {**step.defaults(), "width": w, "height": h, "fit": "cover", "position": position}
            views = []
            for run in ("vips", "array"):
                c = ctx(b"", source=source, orient=True, view=(0.0, 0.0, 1.0, 1.0))
                c.cache = shared
                out = step.vips(cpu, o, c) if run == "vips" else step.array(np, gpu, o, c)
                assert (int(out.width) if run == "vips" else int(out.shape[1])) == w
                assert c.view is not None
                views.append([round(v * s) for v, s in zip(c.view, (full.width, full.height) * 2, strict=True)])
            worst = max(abs(a - b) for a, b in zip(*views, strict=True))
            assert worst <= WINDOW_PX, (path.name, position, (w, h), views)
            checked += 1
    assert checked == len(sizes) * len(worker_inputs) >= 9


def test_without_a_source_the_decision_is_libvips_on_each_executors_pixels(images: dict[str, pyvips.Image],
                                                                         mark_png: bytes) -> None:
    """After a step that makes the image something other than a part of the source (no view), both executors
    still decide with libvips, on a preview of their own pixels: the same window for the same pixels."""
    for kind in KINDS:
        for position in ("attention", "entropy"):
            v, a = both("crop", {"width": 100, "height": 70, "gravity": position}, images[kind], mark_png)
            assert psnr(v, a)[0] == 99.0, (kind, position)


@pytest.mark.parametrize("kind", ["baseline", "cmyk"])
def test_the_rotate_bound_catches_a_pixel_shift_and_half_a_degree(images: dict[str, pyvips.Image], mark_png: bytes,
                                                                  kind: str) -> None:
    v, a = both("rotate", {"angle": 12.5}, images[kind], mark_png)
    assert psnr(v, a)[0] >= ROTATE[0] and psnr(v, a)[1] <= ROTATE[1]
    db, worst = psnr(v, np.roll(a, 1, axis=1))
    assert db < ROTATE[0] or worst > ROTATE[1], ("1 px shift", db, worst)
    more, _ = both("rotate", {"angle": 13.0}, images[kind], mark_png)
    h, w = min(v.shape[0], more.shape[0]), min(v.shape[1], more.shape[1])
    db, worst = psnr(a[:h, :w], more[:h, :w])
    assert db < ROTATE[0] or worst > ROTATE[1], ("13 degrees", db, worst)


def test_the_bounds_catch_real_mistakes(images: dict[str, pyvips.Image], mark_png: bytes) -> None:
    """Negative controls: each plausible bug, compared the same way, fails its bound by a wide margin."""
    img = images["baseline"]
    host = arrays.from_vips(img)
    c = ctx(mark_png)
    wm = {**STEPS["watermark"].defaults(), "src": "mem://mark.png", "opacity": 0.35, "scale": 0.2}
    v = arrays.from_vips(STEPS["watermark"].vips(img, wm, c))
    assert psnr(v, host)[0] < FILTER[0] - 5 or psnr(v, host)[1] > FILTER[1]  # watermark missing
    crop = {"left": 13, "top": 7, "width": 90, "height": 70}
    v = arrays.from_vips(STEPS["extract"].vips(img, crop, c))
    shifted = STEPS["extract"].array(np, host, {**crop, "left": 16}, c)
    assert psnr(v, shifted)[0] < 35  # a crop 3 px off is nowhere near EXACT
    sh = {"sigma": 0.8, "m1": 0.5, "m2": 3.0, "x1": 2.0}
    v = arrays.from_vips(STEPS["sharpen"].vips(img, sh, c))
    for wrong in ({**sh, "m2": 1.5}, {**sh, "sigma": 2.0}, {**sh, "m1": 0.0, "m2": 0.0}):
        a = arrays.to_uint8(np, STEPS["sharpen"].array(np, host, wrong, c))
        db, worst = psnr(v, a)
        assert db < FILTER[0] or worst > FILTER[1], (wrong, db, worst)
    v = arrays.from_vips(STEPS["blur"].vips(img, {"sigma": 2.5}, c))
    a = arrays.to_uint8(np, STEPS["blur"].array(np, host, {"sigma": 3.5}, c))
    assert psnr(v, a)[0] < FILTER[0]


# No-op guards: options that change nothing return the input object itself on both executors.
NOOPS = {
    "auto_orient": {"enabled": False}, "resize": {}, "crop": {}, "extract": {"width": 16_384, "height": 16_384},
    "extend": {}, "trim": {"threshold": 0}, "rotate": {"angle": 360}, "flip": {"direction": "none"},
    "blur": {"sigma": 0.1}, "sharpen": {"m1": 0, "m2": 0}, "modulate": {}, "grayscale": {"enabled": False},
    "flatten": {}, "colour": {"profile": "keep"}, "metadata": {"keep": ["all"]},
    "watermark": {"src": "mem://mark.png", "opacity": 0},
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_step_has_a_noop_guard_on_both_executors(images: dict[str, pyvips.Image], mark_png: bytes,
                                                      name: str) -> None:
    assert set(NOOPS) == set(STEPS)
    step = STEPS[name]
    o = {**step.defaults(), **NOOPS[name]}
    image = images["baseline"]  # opaque, 8-bit sRGB, orientation 1
    host = arrays.from_vips(image)
    assert step.vips(image, o, ctx(mark_png)) is image
    assert step.array(np, host, o, ctx(mark_png)) is host


def _animation() -> pyvips.Image:
    base = to_srgb(pyvips.Image.thumbnail(str(photo("dragonfly")), 96), "any").copy_memory()
    strip = pyvips.Image.arrayjoin([base, base.fliphor(), base.flipver()], across=1)
    strip = strip.copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", base.height)
    gif = strip.gifsave_buffer()
    return pyvips.Image.new_from_buffer(gif, "", n=-1).copy_memory()


@pytest.mark.parametrize(("name", "opts"), [
    ("flip", {"direction": "horizontal"}), ("crop", {"width": 50, "height": 40, "gravity": "northwest"}),
    ("resize", {"width": 48}), ("extend", {"top": 3, "left": 2}), ("grayscale", {}),
])
def test_animations_run_frame_by_frame_on_the_array(mark_png: bytes, name: str, opts: dict[str, Any]) -> None:
    anim = _animation()
    ph = frames.page_height(anim)
    assert anim.height == 3 * ph
    step = STEPS[name]
    o = {**step.defaults(), **opts}
    c = ctx(mark_png)
    v = frames.map_frames(anim, lambda f: step.vips(f, o, c)) if not step.per_pixel else step.vips(anim, o, c)
    got = executor.apply(np, step, o, executor.Frames(arrays.from_vips(anim), ph), c)
    assert got.page_height == frames.page_height(v)
    db, worst = psnr(arrays.from_vips(v if v.format == "uchar" else v.cast("uchar")), arrays.to_uint8(np, got.img))
    assert db >= FILTER[0] and worst <= FILTER[1], (name, db, worst)
