"""The quality search (imgworker/imaging/quality/search.py) with libvips' real encoders: it lands on the lowest
quality that reaches the target (the one below it falls short), reports what it did, gives the top quality
when nothing reaches the target, and stops at the deadline."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips
from support.corpus import photo

from imgworker.core.errors import JobTimeout
from imgworker.imaging.encode import PLAIN, save
from imgworker.imaging.quality import search


def image(kind: str, width: int = 320) -> pyvips.Image:
    im = pyvips.Image.thumbnail(str(photo(kind)), width).colourspace("srgb")
    if im.hasalpha():
        im = im.flatten(background=[255, 255, 255])
    return im.cast("uchar").copy_memory()


def encoder(im: pyvips.Image, fmt: str) -> tuple[dict[int, int], object]:
    """An encode function that also counts how often each quality was encoded."""
    calls: dict[int, int] = {}

    def encode(q: int) -> bytes:
        calls[q] = calls.get(q, 0) + 1
        return save(im, {**PLAIN, "format": fmt}, q, 0)

    return calls, encode


# Lossy WebP (4:2:0 chroma, always) tops out near 77-80 on colourful photos: its cases stay at 75 and below.
SEARCHES = [(fmt, kind, target) for fmt in ("jpeg", "webp", "avif")
            for kind, target in (("dragonfly", 75.0), ("cmyk", 65.0), ("baseline", 85.0 if fmt != "webp" else 72.0))]


@pytest.mark.parametrize("fmt,kind,target", SEARCHES)
def test_the_lowest_quality_that_reaches_the_target(fmt: str, kind: str, target: float) -> None:
    im = image(kind)
    pixels = search.pixels_of(im)
    calls, encode = encoder(im, fmt)
    found = search.search(pixels, fmt, target, encode)  # type: ignore[arg-type]
    assert found.reached and found.score >= target
    # The score reported is the written bytes' score, measured again from scratch.
    assert search.measure(pixels, found.data, fmt) == pytest.approx(found.score, abs=1e-6)
    # One quality lower falls short (or the search is at its floor) -- unless the pass is within CLOSE of the
    # target, where the search stops without looking: then it is at most two steps above the exact answer.
    if found.quality > search.BOTTOM:
        close = found.score - target < search.CLOSE[fmt]
        steps = 3 if close else 1
        lower = max(search.BOTTOM, found.quality - steps)
        assert search.measure(pixels, save(im, {**PLAIN, "format": fmt}, lower, 0), fmt) < target
    assert found.probes == len(calls) <= search.MAX_PROBES + 1
    assert all(n == 1 for n in calls.values())  # no quality encoded twice
    assert found.fields("auto", target) == {"quality": found.quality, "score": round(found.score, 2),
                                           "probes": found.probes, "auto": "auto", "target": target}


def test_unreachable_target_gives_the_top_quality_and_says_so() -> None:
    """An encoder that ruins every image (8x8 blocks whatever the quality) never reaches the floor."""
    im = image("dragonfly")
    blocky = im.resize(1 / 8, kernel="nearest").resize(8, kernel="nearest").embed(0, 0, im.width, im.height,
                                                                                    extend="copy")
    found = search.search(search.pixels_of(im), "jpeg", 75.0, lambda q: blocky.jpegsave_buffer(Q=q))
    assert not found.reached and found.quality == search.TOP and found.score < 75
    assert found.fields("auto", 75.0)["limited_by"] == "top_quality"


def test_probes_stop_at_the_deadline() -> None:
    im = image("dragonfly")
    calls, encode = encoder(im, "jpeg")
    checks = []

    def check() -> None:
        checks.append(1)
        if len(checks) > 1:
            raise JobTimeout("job passed its time limit of 1 s before encode")

    with pytest.raises(JobTimeout):
        search.search(search.pixels_of(im), "jpeg", 75.0, encode, check)  # type: ignore[arg-type]
    assert len(calls) == 1  # the second probe never ran


def test_alpha_outputs_are_scored_with_their_alpha() -> None:
    im = pyvips.Image.thumbnail(str(photo("rgba")), 256).copy_memory()
    assert im.bands == 4
    found = search.search(search.pixels_of(im), "webp", 65.0, lambda q: im.webpsave_buffer(Q=q))
    assert found.reached and search.decode(found.data, "webp", 4).shape == (im.height, im.width, 4)


@pytest.mark.parametrize("probes,want", [
    ({70: 74.0, 71: 75.5}, None),  # adjacent: fail below, pass above: done
    ({10: 80.0}, None),  # the bottom passes: done
    ({100: 60.0}, None),  # the top fails: done, nothing reaches it
    ({60: 70.0, 80: 80.0}, 70),  # secant inside the bracket: 60 + (75 - 70) * 20 / 10 = 70
    ({60: 74.9, 80: 90.0}, 61),  # kept strictly inside
    ({78: 70.0}, 86),  # every probe fails: step up past the target by the slope (0.7 per step), rounded up
    ({78: 80.0}, 70),  # every probe passes: step down
])
def test_next_probe(probes: dict[int, float], want: int | None) -> None:
    assert search._next(probes, 75.0, 0.7) == want


@pytest.mark.parametrize("probes,want", [
    ({71: 75.3}, None),  # a pass within 0.6 of the target: its neighbour would fail; stop
    ({60: 70.0, 71: 75.59}, None),  # the same with a gap below
    ({71: 75.7}, 69),  # not within 0.6: step down by the slope, 71 - 0.7 / 0.6 = 69.8, rounded down
    ({60: 74.0, 80: 75.7}, 72),  # not within: the secant, 60 + 1 * 20 / 1.7 = 71.8, rounded up
])
def test_a_pass_close_to_the_target_ends_the_search(probes: dict[int, float], want: int | None) -> None:
    assert search._next(probes, 75.0, 0.6, 0.6) == want


def test_start_quality_interpolates_the_table() -> None:
    lo, mid, hi = (search.start_quality("jpeg", t) for t in (65.0, 75.0, 85.0))
    assert (lo, mid, hi) == tuple(q for _, q in search.START["jpeg"])
    assert lo < search.start_quality("jpeg", 70.0) < mid
    assert search.start_quality("jpeg", 95.0) <= search.TOP and search.start_quality("jpeg", 30.0) >= search.BOTTOM


def test_grey_jpeg_outputs_are_decoded_as_grey() -> None:
    im = image("dragonfly").colourspace("b-w").copy_memory()
    found = search.search(search.pixels_of(im), "jpeg", 75.0, lambda q: im.jpegsave_buffer(Q=q))
    assert found.reached
    assert np.asarray(search.decode(found.data, "jpeg", 1)).shape == (im.height, im.width, 1)


def test_identical_files_are_scored_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """WebP maps runs of qualities to one quantiser: a probe whose bytes equal an earlier one's reuses its score."""
    im = image("dragonfly")
    scored: list[int] = []
    real = search.Scorer.__call__

    def counting(self: search.Scorer, data: bytes) -> float:
        scored.append(len(data))
        return real(self, data)

    monkeypatch.setattr(search.Scorer, "__call__", counting)
    monkeypatch.setitem(search.CLOSE, "jpeg", 0.0)  # search to the exact answer: past the repeated files
    # An encoder that ignores odd qualities' last step: q and q - 1 give the same file for every odd q.
    found = search.search(search.pixels_of(im), "jpeg", 75.0, lambda q: im.jpegsave_buffer(Q=q - q % 2))
    assert found.reached and len(scored) < found.probes  # some probe reused a score
    assert found.quality % 2 == 0  # an odd quality's file is its even neighbour's: the lower one is chosen


def test_an_image_too_small_to_score_gets_the_default_quality() -> None:
    """Under 8 px on a side SSIMULACRA2 has nothing to compare (every encode scores 100): no search."""
    im = image("dragonfly").resize(6 / 320).copy_memory()
    assert min(im.width, im.height) < 8
    calls, encode = encoder(im, "jpeg")
    found = search.search(search.pixels_of(im), "jpeg", 75.0, encode)  # type: ignore[arg-type]
    assert (found.quality, found.probes, list(calls)) == (85, 1, [85])
    assert found.fields("auto", 75.0)["limited_by"] == "too_small"


def test_without_simplejpeg_libvips_decodes_the_probes_to_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """simplejpeg is not on every image (the GPU device image): the probes' libvips decode gives the same pixels."""
    im = image("dragonfly")
    with_it = search.search(search.pixels_of(im), "jpeg", 75.0, lambda q: im.jpegsave_buffer(Q=q))
    monkeypatch.setattr(search, "simplejpeg", None)
    without = search.search(search.pixels_of(im), "jpeg", 75.0, lambda q: im.jpegsave_buffer(Q=q))
    assert (without.quality, without.score, without.probes) == (with_it.quality, with_it.score, with_it.probes)
