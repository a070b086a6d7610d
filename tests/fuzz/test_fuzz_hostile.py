"""Fuzz shapes from the second hostile-input round (issue 19): dst templates, control characters and credentials
in URLs, nesting, huge declared sizes per format, frame counts, upscales, and secondary (watermark) images.

The property everywhere: a BadRequest / LimitExceeded / documented error, never another exception, never an
allocation that scales with what the job declares rather than with the bytes it sent.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import pyvips
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.fuzzing import examples

from imgworker.backends.cpu import CpuBackend
from imgworker.core import budget
from imgworker.core.contract import check_url, parse_request
from imgworker.core.errors import ERROR_CODES, BadRequest, ImgworkerError, LimitExceeded, redact_url
from imgworker.core.limits import Limits
from imgworker.imaging.probe import probe
from imgworker.jobs.service import Service
from imgworker.pipeline.naming import VARIABLES, render
from imgworker.stores import FileStore, Stores

LIMITS = Limits()
FUZZ = settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALUES = {"stem": "a", "name": "a.png", "ext": "jpg", "format": "jpeg", "width": 10, "height": 20, "label": "",
          "index": 0}

fields = st.sampled_from(VARIABLES) | st.text(max_size=6)
specs = st.sampled_from(["", ":>500000000", ":{width}", "!r", "!s", ":%Y", "[0]", ".upper", ":,", ":0999999999d"])
templates = st.lists(st.text(max_size=5) | st.builds(lambda f, s: "{" + f + s + "}", fields, specs), max_size=6)


@FUZZ
@given(templates)
@example(["{stem:>500000000}"] * 4)
@example(["{width:{height}}"])
@example(["{", "}"])
def test_dst_templates_render_plain_fields_only(parts: list[str]) -> None:
    template = "file:///out/" + "".join(parts)
    try:
        out = render(template, VALUES)
    except BadRequest as exc:
        assert exc.message
        return
    # Whatever renders is bounded by the template and the values, never by a format spec.
    assert len(out) <= len(template) + 20 * template.count("{")


@FUZZ
@given(st.text(max_size=40), st.sampled_from(["src", "dst", "notify"]))
@example("file:///in/a\nINFO forged", "src")
@example("file:///in/a\u2028b.png", "dst")
@example("s3://KEY:SE CRET@bucket/k", "src")
def test_urls_with_controls_or_credentials_are_refused_without_echoing_them(tail: str, key: str) -> None:
    url = "file:///in/" + tail if key != "notify" else tail
    payload = {"src": "file:///in/a.png", "dst": "file:///out/b.png", "width": 8, key: url}
    try:
        request = parse_request(json.dumps(payload).encode("utf-8", "surrogatepass"), LIMITS)
    except BadRequest:
        return
    except UnicodeEncodeError:
        return
    value = getattr(request, key)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20),
       st.text(alphabet="ab/@:'\" +", max_size=10))
def test_credentials_never_survive_redaction_or_reach_a_message(secret: str, noise: str) -> None:
    secret = "Zq9" + secret  # a marker no message holds by chance
    url = f"s3://KEYID:{secret}{noise}@bucket/k.jpg"
    assert "KEYID" not in redact_url(url) and secret not in redact_url(url)
    with pytest.raises(BadRequest) as info:
        check_url("src", url)
    assert secret not in info.value.message and "KEYID" not in info.value.message


@pytest.mark.parametrize("depth", [17, 100, 900, 5000, 60_000])
def test_nesting_of_any_depth_is_a_bad_request(depth: int) -> None:
    for payload in (b"[" * depth, b'{"src":"file:///a","dst":"file:///b","id":' + b"[" * depth + b"]" * depth + b"}"):
        with pytest.raises(BadRequest):
            parse_request(payload, LIMITS)


# --- huge declared sizes per format --------------------------------------------------------------------------


def _png(width: int, height: int, *, bits: int = 8, colour: int = 2, interlace: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x2c" + struct.pack(
        "<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00\x3b"


def _jpeg_sof(width: int, height: int, progressive: bool) -> bytes:
    base = pyvips.Image.black(16, 16, bands=3).jpegsave_buffer(interlace=progressive)
    data = bytearray(base)
    marker = b"\xff\xc2" if progressive else b"\xff\xc0"
    at = data.find(marker)
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("kind", ["png", "png16i", "gif", "jpeg", "jpeg-progressive"])
@pytest.mark.parametrize(("width", "height"), [(65_000, 65_000), (14_000, 14_000), (30_000, 1)])
def test_huge_declared_sizes_are_refused_or_budgeted_on_the_header(kind: str, width: int, height: int) -> None:
    data = {
        "png": lambda: _png(width, height),
        "png16i": lambda: _png(width, height, bits=16, colour=6, interlace=1),
        "gif": lambda: _gif(min(width, 65_535), min(height, 65_535)),
        "jpeg": lambda: _jpeg_sof(min(width, 65_500), min(height, 65_500), False),
        "jpeg-progressive": lambda: _jpeg_sof(min(width, 65_500), min(height, 65_500), True),
    }[kind]()
    small = budget.Budget(budget.derive(0, 1, limit=1536 * budget.MIB), "the CPU pod")
    try:
        info = probe(data, LIMITS)
    except ImgworkerError as exc:
        assert exc.code in ERROR_CODES and exc.code != "INTERNAL"
        return
    cost = budget.estimate(width=info.width, height=info.height, bands=info.bands,
                           bytes_per_sample=info.bytes_per_sample, loader=info.loader, whole=info.interlaced,
                           out_width=256, out_height=256, fmt="jpeg")
    if info.interlaced or info.loader in budget.WHOLE_DECODE:
        # A whole decode costs what the header declares, not what the file holds.
        assert cost.decode >= info.width * info.height * info.bands * info.bytes_per_sample
    if cost.total > small.limit:
        with pytest.raises(LimitExceeded, match="memory budget"), small.admit(cost):
            pass


@pytest.mark.parametrize(("out", "fmt"), [((10_000, 10_000), "avif"), ((16_384, 6_000), "avif")])
def test_upscales_to_expensive_encoders_are_over_a_pod_budget(out: tuple[int, int], fmt: str) -> None:
    cost = budget.estimate(width=1, height=1, bands=3, bytes_per_sample=1, loader="png", whole=False,
                           out_width=out[0], out_height=out[1], fmt=fmt)
    pod = budget.Budget(budget.derive(0, 1, limit=1536 * budget.MIB), "pod")
    with pytest.raises(LimitExceeded, match="memory budget"), pod.admit(cost):
        pass


@pytest.mark.parametrize("frames", [2, 50, 499])
def test_frame_counts_multiply_the_cost(frames: int) -> None:
    one = budget.estimate(width=500, height=500, bands=4, bytes_per_sample=1, loader="gif", whole=True,
                          out_width=500, out_height=500, fmt="webp")
    many = budget.estimate(width=500, height=500, bands=4, bytes_per_sample=1, loader="gif", whole=True,
                           out_width=500, out_height=500, fmt="webp", frames=frames)
    # Every frame's decode and output; the job's fixed overhead once (its source bytes too: none given here).
    assert many.total - budget.JOB_OVERHEAD == (one.total - budget.JOB_OVERHEAD) * frames


# --- secondary images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mark", ["bomb", "svg", "text", "truncated"])
def test_a_hostile_watermark_is_a_documented_error(tmp_path: Path, mark: str) -> None:
    from support.corpus import bad

    from imgworker.pipeline.steps.watermark import _overlay

    data = {
        "bomb": lambda: bad("bomb_100000x100000_1bit.png").read_bytes(),
        "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9000" height="9000"/>',
        "text": lambda: b"not an image",
        "truncated": lambda: bad("truncated_dragonfly.jpg").read_bytes(),
    }[mark]()
    # Each is refused on its header with its own code; a truncated file's pixel errors surface later, in the
    # pipeline's evaluation, so its overlay is built.
    expected = {"bomb": "LIMIT_EXCEEDED", "svg": "UNSUPPORTED_IMAGE", "text": "UNSUPPORTED_IMAGE", "truncated": None}
    try:
        _overlay(data, 64, 0.5, LIMITS)
    except ImgworkerError as exc:
        assert exc.code == expected[mark], (mark, exc.code, exc.message)
        assert exc.message.startswith("the watermark image: ")
    else:
        assert expected[mark] is None, mark


def test_the_service_refuses_svg_sources(tmp_path: Path) -> None:
    (tmp_path / "x.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    service = Service(Stores({"file": FileStore([tmp_path])}), CpuBackend(), LIMITS)
    payload = {"src": (tmp_path / "x.svg").as_uri(), "dst": (tmp_path / "o.png").as_uri(), "width": 8}
    with pytest.raises(ImgworkerError) as info:
        service.handle(json.dumps(payload).encode())
    assert info.value.code == "UNSUPPORTED_IMAGE"
