"""Every step on corpus photos, CPU backend; results checked with Pillow (a second decoder), not libvips."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips
from PIL import Image, ImageChops, ImageCms, ImageStat
from support.corpus import photo
from support.tools import require_module

from imgworker.core.errors import BadRequest

JPEG_OUT = "outputs:\n  - encode: {format: jpeg, quality: 90}\n"
PNG_OUT = "outputs:\n  - encode: {format: png}\n"


def pipe(steps: str, out: str = PNG_OUT, extra: str = "") -> str:
    return f"name: t\n{extra}steps:\n" + "".join(f"  - {s}\n" for s in steps.split(";")) + out


def pil(tmp_path: Path, name: str = "out.png") -> Image.Image:
    img = Image.open(tmp_path / name)
    img.load()
    return img


def diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255."""
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def edges(img: Image.Image) -> float:
    """Mean difference between horizontal neighbours: higher is sharper."""
    grey = img.convert("L")
    shifted = grey.transform(grey.size, Image.Transform.AFFINE, (1, 0, 1, 0, 1, 0))
    return ImageStat.Stat(ImageChops.difference(grey, shifted).crop((0, 0, grey.width - 1, grey.height))).mean[0]


PNG400 = photo("png_named_jpg").name  # a real PNG, 400 px wide: lossless in, lossless out


def test_auto_orient_turns_the_pixels_upright(run_pipeline, tmp_path, pl_photos):
    r = run_pipeline(pipe("auto_orient;resize: {width: 400}", JPEG_OUT), photo("exif6").name,
                     "out.jpg")
    assert (r["width"], r["height"]) == (400, 300)
    ref = Image.open(photo("dragonfly")).resize((400, 300), Image.Resampling.LANCZOS)
    assert diff(pil(tmp_path, "out.jpg"), ref) < 6


def test_without_auto_orient_the_stored_pixels_are_kept(run_pipeline):
    r = run_pipeline(pipe("resize: {width: 300}", JPEG_OUT), photo("exif6").name, "out.jpg")
    assert (r["width"], r["height"]) == (300, 400)


@pytest.mark.parametrize(
    ("fit", "size"),
    [("inside", (400, 225)), ("cover", (400, 400)), ("contain", (400, 400)), ("fill", (400, 400)),
     ("outside", (711, 400))],
)
def test_resize_fit_modes(run_pipeline, tmp_path, fit, size):
    r = run_pipeline(pipe(f"resize: {{width: 400, height: 400, fit: {fit}}}", JPEG_OUT),
                     photo("baseline").name, "out.jpg")
    assert (r["width"], r["height"]) == size
    assert pil(tmp_path, "out.jpg").size == size


def test_resize_contain_pads_with_the_background(run_pipeline, tmp_path):
    run_pipeline(pipe('resize: {width: 400, height: 400, fit: contain, background: "#ff0000"}'),
                 photo("baseline").name, "out.png")
    img = pil(tmp_path).convert("RGB")
    assert img.getpixel((200, 5)) == (255, 0, 0)
    assert img.getpixel((200, 200)) != (255, 0, 0)


def test_resize_dpr_kernel_and_without_enlargement(run_pipeline, tmp_path, pl_photos):
    assert run_pipeline(pipe("resize: {width: 200, dpr: 2}"), PNG400)["width"] == 400
    assert run_pipeline(pipe("resize: {width: 2000, without_enlargement: true}"), PNG400)["width"] == 400
    assert run_pipeline(pipe("resize: {width: 2000}"), PNG400)["width"] == 2000
    near = run_pipeline(pipe("resize: {width: 333, kernel: nearest}"), PNG400, "a.png")
    lanczos = run_pipeline(pipe("resize: {width: 333, kernel: lanczos3}"), PNG400, "b.png")
    assert near["width"] == lanczos["width"] == 333
    # Nearest neighbour only picks source pixels: every colour of its output is one of the source's. Lanczos
    # (the control) blends neighbours into colours the source does not have.
    source = {c for _, c in Image.open(pl_photos / PNG400).convert("RGB").getcolors(1 << 24)}
    assert {c for _, c in pil(tmp_path, "a.png").convert("RGB").getcolors(1 << 24)} <= source
    blended = {c for _, c in pil(tmp_path, "b.png").convert("RGB").getcolors(1 << 24)} - source
    assert len(blended) > 1000


def test_resize_cover_focal_point_from_the_job(run_pipeline, tmp_path):
    step = "resize: {width: 300, height: 300, fit: cover, position: focal}"
    run_pipeline(pipe(step), photo("baseline").name, "focal.png", focal=[0.0, 0.0])
    run_pipeline(pipe("resize: {width: 300, height: 300, fit: cover, position: west}"),
                 photo("baseline").name, "west.png")
    run_pipeline(pipe("resize: {width: 300, height: 300, fit: cover, position: east}"),
                 photo("baseline").name, "east.png")
    focal, west, east = pil(tmp_path, "focal.png"), pil(tmp_path, "west.png"), pil(tmp_path, "east.png")
    assert diff(focal, west) < 1 < diff(focal, east)


def test_resize_cover_attention_and_faces_fallback(run_pipeline, tmp_path):
    base = "resize: {width: 256, height: 256, fit: cover, position: %s}"
    run_pipeline(pipe(base % "attention"), photo("progressive").name, "att.png")
    run_pipeline(pipe(base % "faces"), photo("progressive").name, "faces.png")
    run_pipeline(pipe(base % "centre"), photo("progressive").name, "centre.png")
    att = pil(tmp_path, "att.png")
    assert att.size == (256, 256)
    # No face in the photo: faces falls back to the attention crop.
    assert diff(pil(tmp_path, "faces.png"), att) < 1


FACE = (120, 200, 240)  # left, top, side of the face planted in ``_face_scene``


def _face_scene(path: Path) -> Path:
    """A 1280x640 scene: a drawn face on the left, grey like the rest, and a saturated red and yellow patch on
    the right that libvips' attention crop prefers. The face is what Haar cascades look for: a light oval, dark
    brows and eyes above lighter cheeks, a lighter nose bridge between the eyes, a dark mouth (blurred, as a
    photo is); on the 640 px copy the detector sees it is 120 px."""
    import numpy as np

    cv2 = require_module("cv2", "pip install 'imgworker[faces]'")
    rng = np.random.default_rng(7)
    grey = (128 + rng.integers(-6, 7, (640, 1280))).astype(np.uint8)  # texture: every window is unique
    x, y, s = FACE
    face = np.full((s, s), 90, np.uint8)
    cv2.ellipse(face, (s // 2, s // 2), (int(s * 0.36), int(s * 0.46)), 0, 0, 360, 200, -1)
    for cx in (int(s * 0.33), int(s * 0.67)):
        cv2.ellipse(face, (cx, int(s * 0.33)), (int(s * 0.11), int(s * 0.03)), 0, 0, 360, 50, -1)  # brow
        cv2.ellipse(face, (cx, int(s * 0.42)), (int(s * 0.08), int(s * 0.045)), 0, 0, 360, 30, -1)  # eye
    cv2.ellipse(face, (s // 2, int(s * 0.58)), (int(s * 0.05), int(s * 0.08)), 0, 0, 360, 160, -1)  # nose
    cv2.ellipse(face, (s // 2, int(s * 0.74)), (int(s * 0.14), int(s * 0.04)), 0, 0, 360, 60, -1)  # mouth
    grey[y : y + s, x : x + s] = cv2.GaussianBlur(face, (0, 0), s / 60)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[150:450, 950:1200] = (230, 20, 20)
    rgb[250:350, 1000:1150] = (250, 230, 0)
    Image.fromarray(rgb).save(path)
    return path


def _window(src: Image.Image, out: Image.Image, near: tuple[int, int], reach: int = 8) -> tuple[int, int] | None:
    """Where ``out`` (an exact crop of ``src``) sits, searched within ``reach`` px of ``near``; None if not there."""
    import numpy as np

    a, b = np.asarray(src.convert("RGB")), np.asarray(out.convert("RGB"))
    h, w = b.shape[:2]
    for top in range(max(0, near[1] - reach), min(a.shape[0] - h, near[1] + reach) + 1):
        for left in range(max(0, near[0] - reach), min(a.shape[1] - w, near[0] + reach) + 1):
            if np.array_equal(a[top : top + h, left : left + w], b):
                return left, top
    return None


def test_faces_crops_around_a_planted_face(run_pipeline, tmp_path):
    src = _face_scene(tmp_path / "scene.png")
    x, y, s = FACE
    # The window is centred on the face, kept inside the image: the face's centre (240, 320) -> (40, 120).
    want = (max(0, x + s // 2 - 200), min(max(0, y + s // 2 - 200), 640 - 400))
    assert want == (40, 120)
    run_pipeline(pipe("crop: {width: 400, height: 400, gravity: faces}"), src, "faces.png")
    scene, faces = Image.open(src), pil(tmp_path, "faces.png")
    assert faces.size == (400, 400)
    found = _window(scene, faces, want)
    assert found is not None and abs(found[0] - want[0]) <= 4 and abs(found[1] - want[1]) <= 4, found
    # The control: attention (the fallback when no face is found) goes to the red patch on the right.
    run_pipeline(pipe("crop: {width: 400, height: 400, gravity: attention}"), src, "att.png")
    red = (230, 20, 20)
    assert red in {c for _, c in pil(tmp_path, "att.png").convert("RGB").getcolors(1 << 20)}
    assert red not in {c for _, c in faces.convert("RGB").getcolors(1 << 20)}


def test_crop_and_extract(run_pipeline, tmp_path, pl_photos):
    r = run_pipeline(pipe("crop: {width: 300, height: 200, gravity: southeast}"), PNG400)
    src = Image.open(pl_photos / PNG400).convert("RGB")
    assert (r["width"], r["height"]) == (300, 200)
    assert diff(pil(tmp_path), src.crop((src.width - 300, src.height - 200, src.width, src.height))) == 0
    run_pipeline(pipe("extract: {left: 10, top: 20, width: 100, height: 50}"), PNG400, "e.png")
    assert diff(pil(tmp_path, "e.png"), src.crop((10, 20, 110, 70))) == 0


def test_extract_outside_the_image_is_a_bad_request(run_pipeline):
    with pytest.raises(BadRequest, match="outside the 400x"):
        run_pipeline(pipe("extract: {left: 5000, top: 0, width: 10, height: 10}"), PNG400)


def test_extend_pads_each_side(run_pipeline, tmp_path):
    r = run_pipeline(pipe('extend: {top: 10, bottom: 20, left: 5, right: 0, background: "#00ff00"}'), PNG400)
    assert r["width"] == 405
    img = pil(tmp_path).convert("RGB")
    assert img.getpixel((2, 150)) == (0, 255, 0) and img.getpixel((200, img.height - 1)) == (0, 255, 0)


def test_trim_removes_a_uniform_border(run_pipeline, tmp_path, pl_photos):
    inner = pyvips.Image.new_from_file(str(pl_photos / PNG400))
    framed = inner.embed(40, 30, inner.width + 80, inner.height + 60, extend="white")
    framed.pngsave(str(tmp_path / "framed.png"))
    r = run_pipeline(pipe("trim: 20"), tmp_path / "framed.png")
    assert abs(r["width"] - inner.width) <= 2 and abs(r["height"] - inner.height) <= 2


def test_rotate_90_and_arbitrary(run_pipeline, tmp_path, pl_photos):
    src = Image.open(pl_photos / PNG400).convert("RGB")
    r = run_pipeline(pipe("rotate: 90"), PNG400)
    assert (r["width"], r["height"]) == (src.height, src.width)
    assert diff(pil(tmp_path), src.transpose(Image.Transpose.ROTATE_270)) == 0  # 90 clockwise
    r = run_pipeline(pipe('rotate: {angle: 30, background: "#0000ff"}'), PNG400, "r.png")
    assert r["width"] > src.width and pil(tmp_path, "r.png").convert("RGB").getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize(("direction", "pillow"), [("horizontal", Image.Transpose.FLIP_LEFT_RIGHT),
                                                    ("vertical", Image.Transpose.FLIP_TOP_BOTTOM)])
def test_flip(run_pipeline, tmp_path, pl_photos, direction, pillow):
    run_pipeline(pipe(f"flip: {direction}"), PNG400)
    assert diff(pil(tmp_path), Image.open(pl_photos / PNG400).convert("RGB").transpose(pillow)) == 0


def test_blur_and_sharpen_change_edges_the_right_way(run_pipeline, tmp_path):
    run_pipeline(pipe("resize: {width: 600}"), PNG400, "plain.png")
    run_pipeline(pipe("resize: {width: 600};blur: 3"), PNG400, "blur.png")
    run_pipeline(pipe("resize: {width: 600};sharpen: {sigma: 1.5, m2: 5}"), PNG400, "sharp.png")
    plain = edges(pil(tmp_path, "plain.png"))
    assert edges(pil(tmp_path, "blur.png")) < plain * 0.7
    assert edges(pil(tmp_path, "sharp.png")) > plain * 1.05


def test_modulate_and_grayscale(run_pipeline, tmp_path):
    run_pipeline(pipe("resize: {width: 300}"), PNG400, "plain.png")
    run_pipeline(pipe("resize: {width: 300};modulate: {brightness: 0.5}"), PNG400, "dark.png")
    run_pipeline(pipe("resize: {width: 300};modulate: {saturation: 0}"), PNG400, "desat.png")
    run_pipeline(pipe("resize: {width: 300};grayscale"), PNG400, "grey.png")
    assert ImageStat.Stat(pil(tmp_path, "dark.png").convert("L")).mean[0] < \
        0.7 * ImageStat.Stat(pil(tmp_path, "plain.png").convert("L")).mean[0]
    r, _, b = pil(tmp_path, "desat.png").convert("RGB").split()
    assert ImageStat.Stat(ImageChops.difference(r, b)).mean[0] < 2
    assert pil(tmp_path, "grey.png").mode == "L"


def test_flatten_replaces_transparency_with_the_background(run_pipeline, tmp_path, pl_photos):
    src = Image.open(photo("rgba"))
    assert src.mode == "RGBA" and src.getpixel((0, 0))[3] == 0
    run_pipeline(pipe('flatten: "#ff00ff"'), photo("rgba").name)
    out = pil(tmp_path)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 0, 255)


def test_alpha_survives_resize_into_png(run_pipeline, tmp_path):
    r = run_pipeline(pipe("resize: {width: 400}"), photo("rgba").name)
    out = pil(tmp_path)
    assert r["width"] == 400 and out.mode == "RGBA" and out.getpixel((0, 0))[3] == 0
    assert out.getpixel((200, out.height // 2))[3] > 200


def test_watermark_from_a_store(run_pipeline, tmp_path):
    mark = pyvips.Image.black(100, 100, bands=3).linear([1, 1, 1], [255, 0, 0]).cast("uchar").bandjoin(255)
    mark.pngsave(str(tmp_path / "mark.png"))
    url = (tmp_path / "mark.png").as_uri()
    run_pipeline(pipe("resize: {width: 400}"), PNG400, "plain.png")
    run_pipeline(pipe(f"resize: {{width: 400}};watermark: {{src: {url}, opacity: 1, scale: 0.25, margin: 0}}"),
                 PNG400, "wm.png")
    plain, wm = pil(tmp_path, "plain.png").convert("RGB"), pil(tmp_path, "wm.png").convert("RGB")
    assert wm.getpixel((wm.width - 5, wm.height - 5)) == (255, 0, 0)
    assert wm.getpixel((5, 5)) == plain.getpixel((5, 5))


def test_watermark_outside_the_roots_is_forbidden(run_pipeline):
    from imgworker.core.errors import ForbiddenPath

    with pytest.raises(ForbiddenPath):
        run_pipeline(pipe("watermark: {src: 'file:///etc/passwd'}"), PNG400)


def test_colour_cmyk_to_srgb_matches_littlecms(run_pipeline, tmp_path, pl_photos):
    run_pipeline(pipe("resize: {width: 300};colour: srgb"), photo("cmyk").name)
    out = pil(tmp_path)
    src = Image.open(photo("cmyk"))
    assert src.mode == "CMYK"
    src.draft("CMYK", (600, 400))
    profile = ImageCms.ImageCmsProfile(__import__("io").BytesIO(src.info["icc_profile"]))
    ref = ImageCms.profileToProfile(src, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert out.mode == "RGB"
    assert diff(out, ref.resize(out.size, Image.Resampling.LANCZOS)) < 8


def test_colour_keep_keeps_the_pixels_and_metadata_keep_icc_the_profile(run_pipeline, tmp_path):
    """docs/pipelines.md: ``colour: keep`` leaves the colour space (here CMYK) and ``metadata: {keep: [icc]}``
    carries the source's profile, byte for byte, into the output."""
    src = Image.open(photo("cmyk"))
    assert src.mode == "CMYK" and len(src.info["icc_profile"]) > 100_000
    run_pipeline(pipe("colour: keep;metadata: {keep: [icc]}", JPEG_OUT), photo("cmyk").name, "kept.jpg")
    kept = pil(tmp_path, "kept.jpg")
    assert kept.mode == "CMYK" and kept.size == src.size
    assert kept.info.get("icc_profile") == src.info["icc_profile"]
    # Controls: srgb converts (another mode, libvips' own small sRGB profile), and keeping the colour space
    # keeps no profile unless asked.
    run_pipeline(pipe("colour: srgb;metadata: {keep: [icc]}", JPEG_OUT), photo("cmyk").name, "srgb.jpg")
    srgb = pil(tmp_path, "srgb.jpg")
    assert srgb.mode == "RGB" and 0 < len(srgb.info["icc_profile"]) < 10_000
    run_pipeline(pipe("colour: keep", JPEG_OUT), photo("cmyk").name, "bare.jpg")
    bare = pil(tmp_path, "bare.jpg")
    assert bare.mode == "CMYK" and "icc_profile" not in bare.info


def test_16_bit_becomes_8(run_pipeline, tmp_path):
    # Pillow opens a 16-bit RGB PNG as "RGB" too: the IHDR's bit depth (byte 24) tells them apart.
    assert (photo("rgb16").read_bytes()[24], photo("rgb16").read_bytes()[25]) == (16, 2)
    run_pipeline(pipe("resize: {width: 200}"), photo("rgb16").name, "b.png")
    data = (tmp_path / "b.png").read_bytes()
    assert (data[24], data[25]) == (8, 2)  # 8 bits per sample, truecolour


def _tagged_source(tmp_path: Path, pl_photos: Path) -> Path:
    img = pyvips.Image.new_from_file(str(photo("dragonfly"))).resize(0.2).copy()
    img.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Copyright", "Jane Doe 2024")
    img.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Make", "SecretCam")
    path = tmp_path / "tagged.jpg"
    img.jpegsave(str(path), keep="exif")
    return path


def test_metadata_is_stripped_by_default_and_copyright_kept_when_asked(run_pipeline, tmp_path, pl_photos):
    src = _tagged_source(tmp_path, pl_photos)
    assert Image.open(src).getexif().get(0x8298) == "Jane Doe 2024"
    run_pipeline(pipe("resize: {width: 100}", JPEG_OUT), src, "plain.jpg")
    assert not Image.open(tmp_path / "plain.jpg").getexif()
    run_pipeline(pipe("resize: {width: 100};metadata: {keep: [copyright]}", JPEG_OUT), src, "c.jpg")
    exif = Image.open(tmp_path / "c.jpg").getexif()
    assert exif.get(0x8298, "").strip() == "Jane Doe 2024"  # Copyright
    assert 0x010F not in exif  # Make: gone
