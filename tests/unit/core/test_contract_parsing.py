"""The job contract (docs/contract.md) and the one option validator (core/options.py), value by value: what a
payload becomes, and the exact message each refusal gives. Expectations are written here, from the doc."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imgworker.core.contract import (
    MAX_DEPTH,
    JobRequest,
    ResizeSpec,
    check_url,
    decode_payload,
    parse_request,
    read_payload,
)
from imgworker.core.errors import BadRequest
from imgworker.core.limits import Limits
from imgworker.core.options import Opt, OptionError, check_options, choice, colour, flag, integer, number, parse_color

L = Limits()
SRC, DST = "file:///in/a.jpg", "file:///out/a.webp"


def req(**kw: Any) -> JobRequest:
    return parse_request(json.dumps({"src": SRC, "dst": DST, **kw}).encode(), L)


def refused(payload: Any, pipeline: str | None = None) -> str:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(BadRequest) as info:
        parse_request(data, L, pipeline=pipeline)
    return info.value.message


def test_a_resize_job_with_every_key() -> None:
    got = req(width=300, height=200, fit="COVER", format="png", quality=70, background="#0a0B0c", id="j-1",
              notify="done_fn", callback="https://h/cb", analyze=["phash"])
    assert got == JobRequest(SRC, DST, ResizeSpec(300, 200, "cover", "png", 70, (10, 11, 12), ("phash",)), None, {},
                             "done_fn", "j-1", callback="https://h/cb", analyze=("phash",))


def test_defaults_and_the_format_from_dst() -> None:
    assert req(width=10) == JobRequest(SRC, DST, ResizeSpec(10, None, "inside", "webp", 80, (255, 255, 255)), None)
    assert req(height=10, dst="file:///o/x.JPG").resize == ResizeSpec(None, 10, "inside", "jpeg", 85)
    assert req(width=1, id=7).id == 7 and req(width=1, id=None).id is None
    assert req(width=L.max_output_side).resize.width == L.max_output_side  # type: ignore[union-attr]


def test_a_pipeline_job_passes_its_other_keys_on() -> None:
    data = json.dumps({"src": SRC, "dst": DST, "pipeline": "web", "quality": 50, "id": 3, "analyze": ["meta"]})
    assert parse_request(data.encode(), L) == JobRequest(SRC, DST, None, "web", {"quality": 50}, None, 3,
                                                         analyze=("meta",))
    named = parse_request(json.dumps({"src": SRC, "dst": DST, "anything": 1}).encode(), L, pipeline="thumbs")
    assert named == JobRequest(SRC, DST, None, "thumbs", {"anything": 1})
    assert parse_request(read_payload(json.dumps({"src": SRC, "dst": DST, "width": 5}).encode(), L), L) == req(width=5)


def test_an_info_job() -> None:
    got = parse_request(json.dumps({"src": SRC, "analyze": ["meta"], "id": "i", "notify": "n"}).encode(), L,
                        pipeline="info")
    assert got == JobRequest(SRC, "", None, None, {}, "n", "i", analyze=("meta",), info=True)
    bare = parse_request(json.dumps({"src": SRC, "callback": "https://h/cb"}).encode(), L, pipeline="info")
    assert bare == JobRequest(SRC, "", None, None, {}, None, None, callback="https://h/cb", info=True)
    assert refused({"src": SRC, "dst": DST}, "info") == (
        "'info' writes nothing: remove 'dst' (send the job to 'resize' to write an image)")
    assert refused({"src": SRC, "widht": 3}, "info") == (
        "unknown key 'widht'; an info job takes: src, analyze, notify, id, callback")
    assert refused({"src": SRC, "analyse": 3}, "info").startswith("unknown key 'analyse' (did you mean 'analyze'?)")
    assert refused({}, "info").startswith("'src' is required")


@pytest.mark.parametrize(("payload", "message"), [
    ({"dst": DST, "width": 1}, "'src' is required: an object-store URL such as file:///data/in/photo.jpg"),
    ({"src": SRC, "width": 1}, "'dst' is required: an object-store URL such as file:///data/in/photo.jpg"),
    ({"src": "", "dst": DST, "width": 1}, "'src' must be a non-empty string, got ''"),
    ({"src": 5, "dst": DST, "width": 1}, "'src' must be a non-empty string, got 5"),
    ({"src": SRC, "dst": DST}, "give 'width', 'height' or both (pixels, 1 to 16384)"),
    ({"src": SRC, "dst": "file:///o/x", "width": 1},
     "cannot tell the output format from dst 'file:///o/x': give 'format' (one of jpeg, png, webp, avif) or end "
     "dst in .jpg, .png, .webp or .avif"),
    ({"src": SRC, "dst": DST, "width": 0}, "'width' must be an integer from 1 to 16384, got 0"),
    ({"src": SRC, "dst": DST, "width": 16385}, "'width' must be an integer from 1 to 16384, got 16385"),
    ({"src": SRC, "dst": DST, "width": 1.5}, "'width' must be an integer from 1 to 16384, got 1.5"),
    ({"src": SRC, "dst": DST, "width": True}, "'width' must be an integer from 1 to 16384, got True"),
    ({"src": SRC, "dst": DST, "width": "9"}, "'width' must be an integer from 1 to 16384, got '9'"),
    ({"src": SRC, "dst": DST, "width": 1, "fit": "cove"},
     "'fit' must be one of inside, cover, contain, fill, outside, got 'cove' (did you mean 'cover'?)"),
    ({"src": SRC, "dst": DST, "width": 1, "quality": 101},
     "'quality' must be an integer from 1 to 100, or \"auto\", \"auto:eco\", \"auto:best\" or \"auto:N\" (N: a "
     "SSIMULACRA2 score from 30 to 95), got 101"),
    ({"src": SRC, "dst": DST, "width": 1, "widht": 2},
     "unknown key 'widht' (did you mean 'width'?); a resize job takes: src, dst, pipeline, notify, id, callback, "
     "analyze, width, height, fit, format, quality, background"),
    ({"src": SRC, "dst": DST, "width": 1, "id": True}, "'id' must be a string or integer, got True"),
    ({"src": SRC, "dst": DST, "width": 1, "id": 1.5}, "'id' must be a string or integer, got 1.5"),
    ({"src": SRC, "dst": DST, "width": 1, "id": [1]}, "'id' must be a string or integer, got [1]"),
    ({"src": SRC, "dst": DST, "width": 1, "callback": "ftp://h/"},
     "'callback' must be an http:// or https:// URL with a host, got 'ftp://h/'"),
    ({"src": "file:///a\nb.jpg", "dst": DST, "width": 1},
     "'src' holds the control character '\\n' at 9; URLs may not contain control characters (percent-encode them)"),
    ({"src": "file://[x", "dst": DST, "width": 1}, "'src' is not a valid URL or name: Invalid IPv6 URL"),
    ({"src": "file:///\ud800", "dst": DST, "width": 1}, "'src' is not a valid URL or name"),
    ({"src": SRC, "dst": DST, "width": 1, "pipeline": ""}, "'pipeline' must be a non-empty string, got ''"),
    ({"src": SRC, "dst": DST, "width": 1, "notify": 3}, "'notify' must be a non-empty string, got 3"),
])
def test_a_bad_payload_is_refused_with_a_message_that_names_the_key(payload: dict[str, Any], message: str) -> None:
    got = refused(json.dumps(payload, ensure_ascii=True).encode().replace(b"\\\\ud800", b"\\ud800"))
    assert got.startswith(message), got


@pytest.mark.parametrize("url", ["s3://KEY:SECRET@b/k", "s3://SECRET@b/k", "s3://KEY:ab/cd@b/k"])
def test_credentials_in_a_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_url("src", url)
    assert info.value.message == ("'src' carries credentials (user:password@): object-store credentials belong in "
                                  "the worker's configuration, never in a job; use s3://bucket/key")
    check_url("src", "s3://b/k@2x.jpg")  # an @ in the key, not the authority: fine
    check_url("src", "s3://b/k")
    for bad in ("a\x00", "a\x1f", "a\x7f", "a\x9f", "a\u2028", "a\u2029"):
        with pytest.raises(BadRequest, match="control character"):
            check_url("src", bad)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "payload is not valid JSON: Expecting value at line 1 column 1"),
    (b"\xff", "payload is not UTF-8: invalid start byte at byte 0"),
    (b"[1]", "payload must be a JSON object, got list"),
    (b'"x"', "payload must be a JSON object, got str"),
    (b"1" * 5000, "payload is not valid JSON: Exceeds the limit"),
    (b"[" * 100_000 + b"]" * 100_000, "payload is nested too deeply: a job is a flat JSON object"),
])
def test_a_payload_that_is_not_a_json_object(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_payload(data, Limits(max_payload_bytes=1 << 20))
    assert info.value.message.startswith(message), info.value.message


def test_depth_and_size_limits() -> None:
    def nested(levels: int) -> bytes:
        return json.dumps({"a": json.loads("[" * (levels - 1) + "]" * (levels - 1))}).encode()

    assert decode_payload(nested(MAX_DEPTH), L)  # exactly the limit: fine
    with pytest.raises(BadRequest, match=f"^payload is nested more than {MAX_DEPTH} levels deep"):
        decode_payload(nested(MAX_DEPTH + 1), L)
    small = Limits(max_payload_bytes=40)
    data = json.dumps({"src": SRC, "dst": DST, "id": "x" * 20}).encode()
    payload = read_payload(data, small)
    assert payload.error is not None and payload.error.message == (
        f"payload is {len(data)} bytes; the limit is 40: a job carries URLs and options, never image data")
    assert payload.fields == {} and payload.id is None  # refused on its length alone, never parsed (issue 26)
    assert read_payload(b'{"id": 1}', small).error is None and read_payload(b'{"id": 1}', small).id == 1
    assert read_payload(b'{"id": true}', L).id is None and read_payload(b'{"id": [1]}', L).id is None
    assert read_payload(b"[1]", L).fields == {} and read_payload(b"nope", L).fields == {}
    exact = json.dumps({"src": SRC}).encode()
    assert read_payload(exact, Limits(max_payload_bytes=len(exact))).error is None


def test_options_check_and_describe() -> None:
    assert integer(1, 10).check(3.0) == 3 and isinstance(integer(1, 10).check(3.0), int)
    assert number(0, 1).check(1) == 1.0 and isinstance(number(0, 1).check(1), float)
    assert integer(1, 10).check(1) == 1 and integer(1, 10).check(10) == 10
    for bad in (0, 11, 2.5, True, "3", None):
        with pytest.raises(OptionError, match=r"^must be an integer from 1 to 10, got "):
            integer(1, 10).check(bad)
    assert Opt("int", lo=1).describe() == "an integer at least 1"
    assert Opt("float", hi=2.5).describe() == "a number at most 2.5"
    assert Opt("float").describe() == "a number"
    assert Opt("str").describe() == "a string" and Opt("bool").describe() == "true or false"
    assert Opt("point").describe() == "[x, y] fractions from 0 to 1"
    assert Opt("list", choices=("a", "b")).describe() == "a list of a, b"
    assert Opt("weird").describe() == "weird"
    assert flag(False).check(True) is True
    with pytest.raises(OptionError, match=r"^must be true or false, got 1$"):
        flag(False).check(1)
    assert Opt("str").check("x") == "x"
    for bad in ("", 3):
        with pytest.raises(OptionError, match=r"^must be a string, got"):
            Opt("str").check(bad)
    assert choice(("a", "bb")).check("BB") == "bb"
    with pytest.raises(OptionError, match=r"^must be one of a, bb, got 5$"):
        choice(("a", "bb")).check(5)
    lst = Opt("list", (), choices=("icc", "exif"))
    assert lst.check(["icc", "exif"]) == ("icc", "exif") and lst.check("icc") == ("icc",)
    with pytest.raises(OptionError, match=r"^must be a list of icc, exif, got 'ic' \(did you mean 'icc'\?\)$"):
        lst.check(["icc", "ic"])
    with pytest.raises(OptionError, match=r"^must be a list of icc, exif, got 3$"):
        lst.check([3])
    assert colour().check("#abc") == (170, 187, 204)
    with pytest.raises(OptionError, match=r'^must be a colour like "#ffffff" or \[255, 255, 255\], got'):
        colour().check("#ab")
    point = Opt("point")
    assert point.check([0, 1]) == (0.0, 1.0) and point.check([0.5, 0.25]) == (0.5, 0.25)
    for bad in ([0, 1.5], [-0.1, 0], [0], [0, 0, 0], "0,0", [True, 0]):
        with pytest.raises(OptionError, match=r"^must be \[x, y\] fractions from 0 to 1, got"):
            point.check(bad)
    assert Opt("int", None).check(None) is None and Opt("int", nullable=True).check(None) is None
    assert Opt("int").required and not Opt("int", None).required
    with pytest.raises(AssertionError):
        Opt("nope", 1).check(1)


def test_the_option_makers() -> None:
    assert integer(1, 9, 5, nullable=True, help="h") == Opt("int", 5, 1, 9, nullable=True, help="h")
    assert number(0.5, 2.5, 1.0, help="h") == Opt("float", 1.0, 0.5, 2.5, help="h")
    assert choice(("a", "b"), "a", help="h") == Opt("choice", "a", choices=("a", "b"), help="h")
    assert flag(True) == Opt("bool", True) and colour() == Opt("color", (255, 255, 255))
    assert colour((0, 0, 0)).default == (0, 0, 0)


def test_check_options_fills_defaults_and_names_the_key() -> None:
    options = {"w": integer(1, 5, None), "fit": choice(("a", "b"), "a"), "need": integer(0, 1)}
    assert check_options({"w": 2, "extra": 1}, options) == {"w": 2, "fit": "a", "need": None}
    assert check_options({"w": None, "fit": None}, options) == {"w": None, "fit": "a", "need": None}
    with pytest.raises(BadRequest) as info:
        check_options({"fit": "c"}, options)
    assert info.value.message == "'fit' must be one of a, b, got 'c'"


@pytest.mark.parametrize(("value", "rgb"), [("#ffffff", (255, 255, 255)), ("#000", (0, 0, 0)),
                                             ("#A1b2C3", (161, 178, 195)), ([0, 128, 255], (0, 128, 255))])
def test_colours(value: Any, rgb: tuple[int, int, int]) -> None:
    assert parse_color(value) == rgb


@pytest.mark.parametrize("value", ["ffffff", "#fffff", "#fffffff", "#ggg", "#-1-1-1", "#+ff+ff", [256, 0, 0],
                                   [-1, 0, 0], [0, 0], [0, 0, 0, 0], [True, 0, 0], [0.5, 0, 0], None, 3])
def test_bad_colours(value: Any) -> None:
    with pytest.raises(BadRequest) as info:
        parse_color(value, "bg")
    assert info.value.message == f"'bg' must be a colour like \"#ffffff\" or [255, 255, 255], got {value!r}"
    with pytest.raises(BadRequest, match=r"^'background' must be a colour"):
        parse_color(value)


def test_the_analyze_list() -> None:
    from imgworker.core.contract import FACTS, parse_analyze

    known = ", ".join(FACTS)
    assert parse_analyze(None) == () and parse_analyze(["meta", "phash", "meta"]) == ("meta", "phash")
    for bad in ("phash", [1], {"a": 1}):
        with pytest.raises(BadRequest) as info:
            parse_analyze(bad)
        assert info.value.message == f"'analyze' must be a list of facts from {known}; got {bad!r}"
    with pytest.raises(BadRequest) as info:
        parse_analyze(["meta", "phsh"], "'steps[2].analyze'")
    assert info.value.message == (f"'steps[2].analyze' has unknown fact 'phsh' (did you mean 'phash'?); "
                                  f"known facts: {known}")


def test_a_pipeline_job_keeps_notify_callback_and_the_raw_payload() -> None:
    data = json.dumps({"src": SRC, "dst": DST, "pipeline": "web", "notify": "n", "callback": "https://h/cb"}).encode()
    assert parse_request(data, L) == JobRequest(SRC, DST, None, "web", {}, "n", callback="https://h/cb")
    for raw in (data, b"not json", b"[1]", b'{"a": ' * 20 + b"1" + b"}" * 20):
        assert read_payload(raw, L).raw is raw


@pytest.mark.parametrize(("opt", "bad", "message"), [
    (integer(1, 10), 11, "must be an integer from 1 to 10, got 11"),
    (integer(1, 10), "3", "must be an integer from 1 to 10, got '3'"),
    (integer(1, 10), 2.5, "must be an integer from 1 to 10, got 2.5"),
    (colour(), "#ab", "must be a colour like \"#ffffff\" or [255, 255, 255], got '#ab'"),
    (Opt("point"), [2, 0], "must be [x, y] fractions from 0 to 1, got [2, 0]"),
    (Opt("str"), 3, "must be a string, got 3"),
])
def test_option_messages_quote_the_value(opt: Opt, bad: Any, message: str) -> None:
    with pytest.raises(OptionError) as info:
        opt.check(bad)
    assert str(info.value) == message
