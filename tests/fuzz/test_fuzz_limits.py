"""The limits that bound one job's work and memory: payload size, source bytes and pixels, output size, frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pyvips

from imgworker.backends.cpu import CpuBackend
from imgworker.core.errors import BadRequest, LimitExceeded
from imgworker.core.geometry import plan
from imgworker.core.limits import Limits
from imgworker.jobs.service import Service
from imgworker.stores import FileStore, Stores

LIMITS = Limits()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    pyvips.Image.black(1, 1).pngsave(str(tmp_path / "1x1.png"))
    pyvips.Image.black(1, 10_000).pngsave(str(tmp_path / "1x10000.png"))
    return tmp_path


def handle(root: Path, limits: Limits = LIMITS, **job: object) -> dict[str, object]:
    service = Service(Stores({"file": FileStore([root])}), CpuBackend(), limits)
    payload = {"dst": (root / "out.png").as_uri(), **job}
    return service.handle(json.dumps(payload).encode())


def test_a_1x1_source_asked_for_100000x100000_is_refused_by_the_contract(root: Path) -> None:
    with pytest.raises(BadRequest, match="16384"):
        handle(root, src=(root / "1x1.png").as_uri(), width=100_000, height=100_000, fit="fill")
    assert not (root / "out.png").exists()


def test_an_output_within_the_side_limit_but_over_the_pixel_limit_is_refused_before_decoding(root: Path) -> None:
    side = LIMITS.max_output_side
    with pytest.raises(LimitExceeded, match="pixels"):
        handle(root, src=(root / "1x1.png").as_uri(), width=side, height=side, fit="fill")
    with pytest.raises(LimitExceeded):
        plan(1, 1, side, side, "fill", LIMITS)
    assert not (root / "out.png").exists()


def test_an_aspect_ratio_that_would_explode_one_side_is_refused(root: Path) -> None:
    # width 16384 of a 1x10000 source keeps the aspect ratio: 163,840,000 px tall.
    with pytest.raises(LimitExceeded):
        handle(root, src=(root / "1x10000.png").as_uri(), width=LIMITS.max_output_side)
    for fit in ("cover", "outside"):
        with pytest.raises(LimitExceeded):
            plan(1, 10_000, 16_000, 16_000, fit, LIMITS)


def test_a_source_over_the_byte_limit_is_refused_before_it_is_read(root: Path) -> None:
    big = root / "big.png"
    pyvips.Image.gaussnoise(200, 200).cast("uchar").pngsave(str(big))
    with pytest.raises(LimitExceeded, match="bytes"):
        handle(root, Limits(max_source_bytes=1000), src=big.as_uri(), width=10)


def test_a_payload_over_the_size_limit_is_a_bad_request(root: Path) -> None:
    with pytest.raises(BadRequest, match="limit"):
        handle(root, src=(root / "1x1.png").as_uri(), width=1, id="x" * LIMITS.max_payload_bytes)


def test_source_pixels_are_checked_on_the_header(root: Path) -> None:
    with pytest.raises(LimitExceeded, match="pixels"):
        handle(root, Limits(max_source_pixels=9_999), src=(root / "1x10000.png").as_uri(), width=1)


def test_a_resize_of_an_animation_decodes_one_frame_only(root: Path) -> None:
    """``max_frames`` bounds pipelines that keep animation (pipeline/decode.py); a plain resize reads the
    first frame only, so a 600-frame GIF costs one frame's work and gives a still image."""
    frames = 600
    strip = pyvips.Image.gaussnoise(16, 16 * frames).cast("uchar")
    strip = strip.bandjoin([strip, strip]).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 16)
    strip.gifsave(str(root / "anim.gif"))
    assert pyvips.Image.new_from_file(str(root / "anim.gif")).get("n-pages") == frames
    result = handle(root, src=(root / "anim.gif").as_uri(), width=8)
    out = pyvips.Image.new_from_file(str(root / "out.png"))
    assert result["ok"] and (out.width, out.height) == (8, 8)
    assert "n-pages" not in out.get_fields() or out.get("n-pages") == 1
