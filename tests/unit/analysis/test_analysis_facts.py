"""Each image fact against what the picture really is (imgworker.analysis, one module each)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import pyvips
from support.corpus import photo

from imgworker.analysis import blurhash, dominant, phash, thumbhash
from imgworker.analysis.meta import describe, icc_description
from imgworker.analysis.small import prepare
from imgworker.analysis.source import facts_of_source
from imgworker.core.contract import FACTS, parse_analyze
from imgworker.core.errors import BadRequest, LimitExceeded
from imgworker.core.limits import Limits

# One file per picture (the corpus has the same dragonfly, bridge and sunset in several encodings).
DIFFERENT = ("baseline", "progressive", "dragonfly", "cmyk", "webp")


def small_of(kind: str):  # type: ignore[no-untyped-def]
    return prepare(pyvips.Image.thumbnail(str(photo(kind)), 100).copy_memory())


def srgb_mean(rgb: np.ndarray) -> np.ndarray:
    """The mean colour in linear light, back in sRGB 0..255 (what blurhash's DC term is)."""
    v = rgb.reshape(-1, 3).astype(np.float64) / 255
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).mean(axis=0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055) * 255


@pytest.mark.parametrize("kind", [*DIFFERENT, "rgba"])
def test_thumbhash_dc_is_the_image_mean(kind: str) -> None:
    small = small_of(kind)
    encoded = thumbhash.encode(small.rgba)
    r, g, b, _a = thumbhash.average_rgba(encoded)
    alpha = small.rgba[..., 3:4].astype(np.float64) / 255
    mean = (small.rgba[..., :3] * alpha).sum(axis=(0, 1)) / alpha.sum() / 255
    # 6-bit L, P and Q: within a couple of steps of the true mean.
    assert np.abs(np.array([r, g, b]) - mean).max() < 0.04, (kind, (r, g, b), mean)
    assert 5 <= len(encoded) <= 25


def test_thumbhash_of_a_flat_colour_and_alpha() -> None:
    flat = np.zeros((40, 60, 4), np.uint8)
    flat[...] = (200, 100, 50, 255)
    r, g, b, a = thumbhash.average_rgba(thumbhash.encode(flat))
    assert abs(r - 200 / 255) < 0.03 and abs(g - 100 / 255) < 0.03 and abs(b - 50 / 255) < 0.03 and a == 1
    flat[:20, :, 3] = 0  # half transparent: the alpha flag is set and the alpha DC says about half
    encoded = thumbhash.encode(flat)
    assert encoded[2] & 0x80 and abs(thumbhash.average_rgba(encoded)[3] - 0.5) < 0.07


@pytest.mark.parametrize("kind", DIFFERENT)
def test_blurhash_dc_is_the_image_mean(kind: str) -> None:
    small = small_of(kind)
    encoded = blurhash.encode(small.rgb)
    assert len(encoded) == 28 and encoded[0] == "L"  # 4x3 components: size flag 3 + 2*9, 11 AC terms
    assert np.abs(np.array(blurhash.average_rgb(encoded)) - srgb_mean(small.rgb)).max() <= 2


def test_dominant_colour_and_shares_of_a_two_colour_image() -> None:
    # 400x240: the left three quarters red, the right quarter blue, made at test time.
    red = pyvips.Image.black(300, 240).new_from_image([200, 30, 30])
    blue = pyvips.Image.black(100, 240).new_from_image([20, 40, 220])
    image = red.join(blue, "horizontal").cast("uchar").copy(interpretation="srgb").copy_memory()
    found = dominant.palette(prepare(image).rgba)
    assert found["colour"] == "#c81e1e"
    colours = {p["colour"]: p["share"] for p in found["palette"]}
    assert set(colours) == {"#c81e1e", "#1428dc"}, found
    assert abs(colours["#c81e1e"] - 0.75) <= 0.02 and abs(colours["#1428dc"] - 0.25) <= 0.02


def test_dominant_palette_of_a_photo_is_at_most_five_shares_summing_to_one() -> None:
    found = dominant.palette(small_of("baseline").rgba)
    assert 2 <= len(found["palette"]) <= 5
    assert 0.95 <= sum(p["share"] for p in found["palette"]) <= 1.003  # each rounded to 3 places
    assert found["colour"] == found["palette"][0]["colour"]
    assert [p["share"] for p in found["palette"]] == sorted((p["share"] for p in found["palette"]), reverse=True)


def test_phash_near_duplicates_are_close_and_different_photos_far(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hashes = {kind: phash.encode(small_of(kind).grey32) for kind in DIFFERENT}
    for kind in DIFFERENT:
        # The same photo re-encoded smaller and at low quality, decoded back: a few bits at most.
        again = pyvips.Image.thumbnail(str(photo(kind)), 320).jpegsave_buffer(Q=50)
        redo = phash.encode(prepare(pyvips.Image.new_from_buffer(again, "").copy_memory()).grey32)
        assert phash.distance(hashes[kind], redo) <= 6, kind
        assert re.fullmatch(r"[0-9a-f]{16}", hashes[kind]), hashes[kind]  # 64 bits, lower-case hex
    for a, b in itertools.combinations(DIFFERENT, 2):
        assert phash.distance(hashes[a], hashes[b]) >= 16, (a, b)
    # The same picture stored rotated with EXIF orientation 6 hashes like the upright file.
    rotated = facts_of_source(photo("exif6").read_bytes(), ("phash",), Limits())["phash"]
    assert phash.distance(rotated, hashes["dragonfly"]) <= 6


def test_phash_is_the_imagehash_maths() -> None:
    # A known pattern: a bright left half gives a DCT whose low terms sit in a fixed pattern; checked
    # against the definition directly (2-D DCT-II of the 32x32 image, 8x8 block, > median).
    grey = np.zeros((32, 32))
    grey[:, :16] = 255
    n = np.arange(32)
    basis = np.cos(np.pi * np.outer(n, 2 * n + 1) / 64)
    low = (basis @ grey @ basis.T)[:8, :8]
    expected = "".join("1" if v > np.median(low) else "0" for v in low.flatten())
    assert phash.encode(grey) == f"{int(expected, 2):016x}"


def test_meta_of_rotated_cmyk_alpha_and_16_bit_files() -> None:
    m = describe(photo("exif6").read_bytes())
    assert (m["width"], m["height"], m["orientation"]) == (1200, 900, 6)  # stored 900x1200, shown turned
    stored = pyvips.Image.new_from_file(str(photo("exif6")))
    assert (stored.width, stored.height) == (900, 1200)
    cmyk = describe(photo("cmyk").read_bytes())
    assert cmyk["space"] == "cmyk" and cmyk["icc"] and cmyk["format"] == "jpeg"
    assert cmyk["bytes"] == photo("cmyk").stat().st_size
    rgba = describe(photo("rgba").read_bytes())
    assert rgba["has_alpha"] is True and rgba["format"] == "png"
    assert describe(photo("rgb16").read_bytes())["bits"] == 16
    assert describe(photo("webp").read_bytes())["format"] == "webp"
    assert describe(photo("png_named_jpg").read_bytes())["format"] == "png"  # by content, not name


def test_meta_exif_camera_and_date_and_icc_description() -> None:
    image = pyvips.Image.black(64, 48).new_from_image([90, 120, 150]).cast("uchar").copy(interpretation="srgb")
    image = image.icc_transform("p3")  # embeds libvips' Display P3 profile
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Make", "Acme")
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Model", "Box 2")
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd2-DateTimeOriginal", "2024:05:01 12:34:56")
    m = describe(bytes(image.jpegsave_buffer()))
    assert m["make"] == "Acme" and m["model"] == "Box 2" and m["date"] == "2024-05-01T12:34:56"
    assert m["icc"] is not None and "p3" in m["icc"].lower()
    assert "make" not in describe(photo("baseline").read_bytes())  # absent, not empty
    assert icc_description(None) is None and icc_description(b"junk") is None


def test_analyze_lists_are_checked_with_hints() -> None:
    assert parse_analyze(["phash", "meta", "phash"]) == ("phash", "meta")
    assert parse_analyze(None) == ()
    with pytest.raises(BadRequest, match=r"unknown fact 'phsh' \(did you mean 'phash'\?\)"):
        parse_analyze(["phsh"])
    with pytest.raises(BadRequest, match="must be a list"):
        parse_analyze("meta")


def test_info_facts_check_the_pixel_limit_first() -> None:
    with pytest.raises(LimitExceeded):
        facts_of_source(photo("baseline").read_bytes(), FACTS, Limits(max_source_pixels=1000))
