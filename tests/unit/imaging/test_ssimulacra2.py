"""The fast SSIMULACRA2 (imgworker/imaging/quality/ssimulacra2.py) against the reference package on PyPI
(``ssimulacra2``, the dev extra): within ±1 on every sample photo at several formats and qualities, odd sizes
included; visibly damaged images score below the ``auto`` floor (75) by both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
from ssimulacra2 import compute_ssimulacra2
from support.corpus import KINDS, photo

from imgworker.imaging.quality import ssimulacra2 as s2

FLOOR = 75.0  # the default tier's floor (docs/contract.md)


def pixels(image: pyvips.Image) -> np.ndarray:
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, image.bands))


def sample(kind: str, width: int) -> pyvips.Image:
    """A sample photo at ``width`` px, 8-bit sRGB without alpha (as a JPEG output is before encoding)."""
    image = pyvips.Image.thumbnail(str(photo(kind)), width).colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    return image.cast("uchar").copy_memory()


def encoded(image: pyvips.Image, fmt: str, q: int) -> pyvips.Image:
    save = {"jpeg": image.jpegsave_buffer, "webp": image.webpsave_buffer}.get(fmt)
    data = save(Q=q) if save else image.heifsave_buffer(Q=q, compression="av1", effort=0)
    return pyvips.Image.new_from_buffer(data, "").copy_memory()


def reference_score(tmp: Path, original: pyvips.Image, distorted: pyvips.Image) -> float:
    """The PyPI package's score (it reads files: lossless PNGs of both)."""
    original.write_to_file(str(tmp / "a.png"))
    distorted.write_to_file(str(tmp / "b.png"))
    return float(compute_ssimulacra2(str(tmp / "a.png"), str(tmp / "b.png")))


CASES = [("jpeg", 30), ("jpeg", 70), ("jpeg", 92), ("webp", 60), ("avif", 45)]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_scores_within_one_of_the_reference_package(kind: str, tmp_path: Path) -> None:
    original = sample(kind, 320)
    ref = s2.Reference(pixels(original))
    for fmt, q in CASES:
        distorted = encoded(original, fmt, q)
        want = reference_score(tmp_path, original, distorted)
        got = s2.score(ref, pixels(distorted))
        assert abs(got - want) <= 1.0, f"{kind} {fmt} q{q}: {got:.2f}, reference {want:.2f}"


@pytest.mark.parametrize("size", [(257, 131), (64, 9), (33, 40)])
def test_odd_and_small_sizes_match_the_reference(size: tuple[int, int], tmp_path: Path) -> None:
    """Odd sides exercise the box average's partial blocks; a side under 8 px at some scale ends the pyramid."""
    original = sample("dragonfly", 400).thumbnail_image(size[0], height=size[1], size="force").copy_memory()
    distorted = encoded(original, "jpeg", 50)
    want = reference_score(tmp_path, original, distorted)
    assert abs(s2.ssimulacra2(pixels(original), pixels(distorted)) - want) <= 1.0


def test_identical_images_score_100() -> None:
    original = pixels(sample("baseline", 256))
    assert s2.ssimulacra2(original, original) == pytest.approx(100.0, abs=1e-6)


def damaged(image: pyvips.Image, how: str) -> pyvips.Image:
    if how == "blurred":
        return image.gaussblur(2.0).cast("uchar")
    if how == "blocky":  # 8x8 blocks, as a broken JPEG or a nearest-neighbour upscale shows them
        small = image.resize(1 / 8, kernel="nearest")
        return small.resize(8, kernel="nearest").embed(0, 0, image.width, image.height, extend="copy")
    if how == "wrong_colours":  # red and blue swapped
        return image[2].bandjoin([image[1], image[0]])
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["blurred", "blocky", "wrong_colours"])
def test_visibly_damaged_images_score_below_the_floor(how: str, tmp_path: Path) -> None:
    original = sample("dragonfly", 320)
    bad = damaged(original, how).copy_memory()
    ours = s2.ssimulacra2(pixels(original), pixels(bad))
    assert ours < FLOOR, f"{how}: {ours:.1f}"
    assert reference_score(tmp_path, original, bad) < FLOOR  # the package agrees it is damaged
    # ... while a good encode of the same photo is above it: the floor separates the two.
    assert s2.ssimulacra2(pixels(original), pixels(encoded(original, "jpeg", 90))) > FLOOR


def test_alpha_is_scored_over_a_dark_and_a_light_background() -> None:
    """An RGBA output whose alpha is damaged scores low though its colours are intact."""
    original = pixels(pyvips.Image.thumbnail(str(photo("rgba")), 256).copy_memory())
    assert original.shape[2] == 4
    holed = original.copy()
    holed[:, :, 3] = 255 - holed[:, :, 3]
    assert s2.ssimulacra2(original, original) == pytest.approx(100.0, abs=1e-6)
    assert s2.ssimulacra2(original, holed) < 50


def test_sizes_must_match() -> None:
    a = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        s2.ssimulacra2(a, np.zeros((32, 31, 3), np.uint8))
