"""The job contract: parse and validate a job's JSON payload (docs/contract.md is its public description).

Every rejection is a BadRequest whose message names the key, what was given and what is allowed, with a
"did you mean" hint for misspelt keys, so a PHP or Perl developer can fix the call from the message alone.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from imgworker.core.callback_url import parse_target
from imgworker.core.errors import BadRequest
from imgworker.core.formats import DEFAULT_QUALITY, format_from_path
from imgworker.core.formats import RESIZE_FORMATS as FORMATS
from imgworker.core.functions import INFO
from imgworker.core.limits import Limits
from imgworker.core.options import Opt, check_options, choice, colour, integer, suggest
from imgworker.core.options import quality as quality_option
from imgworker.core.quality import Quality, check_auto
from imgworker.core.urls import CONTROL_CHARACTERS, split_credentials

CONTRACT_VERSION = 1

FITS = ("inside", "cover", "contain", "fill", "outside")

RESIZE_KEYS = ("width", "height", "fit", "format", "quality", "background")
COMMON_KEYS = ("src", "dst", "pipeline", "notify", "id", "callback", "analyze")
KNOWN_KEYS = COMMON_KEYS + RESIZE_KEYS
# The keys an ``info`` payload takes (facts of a source, nothing written).
INFO_KEYS = ("src", "analyze", "notify", "id", "callback")
# The facts a job may ask for with ``analyze`` (imgworker/analysis computes them; docs/contract.md).
FACTS = ("meta", "thumbhash", "blurhash", "dominant", "phash")


def parse_analyze(value: Any, where: str = "'analyze'") -> tuple[str, ...]:
    """A job's (or a pipeline file's) ``analyze`` list, checked; BadRequest names the fix."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{where} must be a list of facts from {', '.join(FACTS)}; got {value!r}")
    for name in value:
        if name not in FACTS:
            raise BadRequest(f"{where} has unknown fact {name!r}{suggest(name, FACTS)}; "
                             f"known facts: {', '.join(FACTS)}")
    return tuple(dict.fromkeys(value))  # in the order given, once each


@dataclass(frozen=True, slots=True)
class ResizeSpec:
    """What a plain ``resize`` job asks for."""

    width: int | None = None
    height: int | None = None
    fit: str = "inside"
    format: str = "jpeg"
    quality: Quality = 85  # or AutoQuality: the search for the lowest quality that reaches a score
    background: tuple[int, int, int] = (255, 255, 255)
    analyze: tuple[str, ...] = ()  # facts for the result (imgworker.analysis), from the decoded image


@dataclass(frozen=True, slots=True)
class JobRequest:
    src: str
    dst: str
    resize: ResizeSpec | None
    pipeline: str | None = None
    # Keys given next to ``pipeline``: overrides the pipeline validates against its own parameters.
    overrides: dict[str, Any] = field(default_factory=dict)
    notify: str | None = None
    id: str | int | None = None
    # An http(s):// URL POSTed the result when the job ends (callbacks.py; the worker checks the allow-list).
    callback: str | None = None
    analyze: tuple[str, ...] = ()
    info: bool = False  # an ``info`` job: facts only, no dst


@dataclass(frozen=True, slots=True)
class Payload:
    """A job's payload, JSON-decoded once per job: the service validates ``fields``; the worker's log line,
    failed results' ``id`` and the notifier read them too (even for a payload the service refuses)."""

    raw: bytes
    fields: dict[str, Any]  # the decoded object; {} when the payload is not a JSON object
    error: BadRequest | None  # why the payload is refused before any key is looked at (None: it is not)

    @property
    def id(self) -> str | int | None:
        """The job's ``id`` when it is a valid one: echoed in failed results too (the caller needs it most then)."""
        job_id = self.fields.get("id")
        return job_id if isinstance(job_id, str | int) and not isinstance(job_id, bool) else None


def payload_too_big(size: int, limits: Limits) -> BadRequest:
    """The refusal of a payload over the limit: the same words whether the worker's Gearman connection skipped
    it unread or it arrived and was measured (docs/contract.md)."""
    return BadRequest(f"payload is {size} bytes; the limit is {limits.max_payload_bytes}: "
                      "a job carries URLs and options, never image data")


def read_payload(data: bytes, limits: Limits) -> Payload:
    """Decode ``data`` once; never raises (the refusal, if any, is ``error``). A payload over the limit is
    refused on its length alone, never parsed: its cost must not grow with its size."""
    if len(data) > limits.max_payload_bytes:
        return Payload(data, {}, payload_too_big(len(data), limits))
    try:
        obj: Any = _loads(data)
    except BadRequest as exc:
        return Payload(data, {}, exc)
    fields = obj if isinstance(obj, dict) else {}
    try:
        _check_payload(obj)
    except BadRequest as exc:
        return Payload(data, fields, exc)
    return Payload(data, fields, None)


def decode_payload(data: bytes, limits: Limits) -> dict[str, Any]:
    """The payload's object, or BadRequest (too big, not JSON, not an object, too deep)."""
    payload = read_payload(data, limits)
    if payload.error is not None:
        raise payload.error
    return payload.fields


def _check_payload(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise BadRequest(f"payload must be a JSON object, got {type(obj).__name__}")
    if _depth(obj) > MAX_DEPTH:
        # Shallower than the decoder's limit can still be deep enough to exhaust repr() or a logger later.
        raise BadRequest(f"payload is nested more than {MAX_DEPTH} levels deep: a job is a flat JSON object")


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        # 64 KiB of "[[[[..." is within the size limit but deeper than the JSON decoder's stack.
        raise BadRequest("payload is nested too deeply: a job is a flat JSON object") from None
    except ValueError as exc:
        # An integer of more than 4,300 digits (Python's int/str conversion limit) is a ValueError.
        raise BadRequest(f"payload is not valid JSON: {str(exc)[:200]}") from None


MAX_DEPTH = 16


def _depth(obj: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def check_url(key: str, value: str) -> None:
    """Refuse control characters and credentials in a URL (the message never echoes the credentials)."""
    bad = CONTROL_CHARACTERS.search(value)
    if bad:
        raise BadRequest(f"{key!r} holds the control character {bad.group()!r} at {bad.start()}; "
                         "URLs may not contain control characters (percent-encode them)")
    found = split_credentials(value)
    if found is not None:
        raise BadRequest(f"{key!r} carries credentials (user:password@): object-store credentials "
                         f"belong in the worker's configuration, never in a job; use {found[0]}://bucket/key")


def _str(obj: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key!r} is required: an object-store URL such as file:///data/in/photo.jpg")
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string, got {value!r}")
    check_url(key, value)
    try:
        # A lone surrogate ("\ud800" in the JSON) cannot become a path or a log line; a malformed URL
        # ("file://[x") would raise later in urlsplit: refuse both here, where the caller learns why.
        value.encode("utf-8")
        urlsplit(value)
    except ValueError as exc:
        raise BadRequest(f"{key!r} is not a valid URL or name: {exc}") from None
    return value


def resize_options(limits: Limits) -> dict[str, Opt]:
    """A resize job's keys, as the pipeline steps' options are checked (imgworker/core/options.py)."""
    return _resize_options(limits.max_output_side)


@functools.cache
def _resize_options(side: int) -> dict[str, Opt]:
    return {"width": integer(1, side, None), "height": integer(1, side, None), "fit": choice(FITS, "inside"),
            "format": choice(FORMATS, None), "quality": quality_option(), "background": colour()}


def parse_resize(obj: dict[str, Any], dst: str, limits: Limits) -> ResizeSpec:
    o = check_options(obj, resize_options(limits))
    if o["width"] is None and o["height"] is None:
        raise BadRequest(f"give 'width', 'height' or both (pixels, 1 to {limits.max_output_side})")
    fmt = o["format"] or format_from_path(dst)
    if fmt is None:
        raise BadRequest(
            f"cannot tell the output format from dst {dst!r}: give 'format' (one of {', '.join(FORMATS)}) "
            "or end dst in .jpg, .png, .webp or .avif"
        )
    quality = o["quality"]
    check_auto(fmt, quality)
    return ResizeSpec(
        width=o["width"],
        height=o["height"],
        fit=o["fit"],
        format=fmt,
        quality=quality if quality is not None else DEFAULT_QUALITY[fmt],
        background=o["background"],
        analyze=parse_analyze(obj.get("analyze")),
    )


def _job_id(obj: dict[str, Any]) -> str | int | None:
    job_id = obj.get("id")
    if job_id is not None and (isinstance(job_id, bool) or not isinstance(job_id, str | int)):
        raise BadRequest(f"'id' must be a string or integer, got {job_id!r}")
    return job_id


def _callback(obj: dict[str, Any]) -> str | None:
    callback = obj.get("callback")
    if callback is not None:
        parse_target(callback)  # BadRequest naming what is wrong with it
    return callback


def _fields(payload: Payload) -> dict[str, Any]:
    if payload.error is not None:
        raise payload.error
    return payload.fields


def parse_info(obj: dict[str, Any]) -> JobRequest:
    """An ``info`` payload: ``src`` and ``analyze``; a ``dst`` is refused (info writes nothing)."""
    if "dst" in obj:
        raise BadRequest("'info' writes nothing: remove 'dst' (send the job to 'resize' to write an image)")
    for key in obj:
        if key not in INFO_KEYS:
            raise BadRequest(
                f"unknown key {key!r}{suggest(key, INFO_KEYS)}; an info job takes: {', '.join(INFO_KEYS)}"
            )
    src = _str(obj, "src", required=True)
    assert src is not None
    notify = _str(obj, "notify", required=False)
    return JobRequest(src, "", None, None, {}, notify, _job_id(obj), callback=_callback(obj),
                      analyze=parse_analyze(obj.get("analyze")), info=True)


def parse_request(data: bytes | Payload, limits: Limits, *, pipeline: str | None = None) -> JobRequest:
    """Parse a job payload (raw, or as ``read_payload`` decoded it once for the whole job). ``pipeline`` is
    set when the job came in on a pipeline's own function name."""
    obj = decode_payload(data, limits) if isinstance(data, bytes) else _fields(data)
    if pipeline == INFO:
        return parse_info(obj)
    src = _str(obj, "src", required=True)
    dst = _str(obj, "dst", required=True)
    assert src is not None and dst is not None
    name = pipeline or _str(obj, "pipeline", required=False)
    notify = _str(obj, "notify", required=False)
    callback = _callback(obj)
    job_id = _job_id(obj)
    if name is not None:
        # The pipeline validates its own overrides (it knows which parameters it allows).
        overrides = {k: v for k, v in obj.items() if k not in COMMON_KEYS}
        analyze = parse_analyze(obj.get("analyze"))
        return JobRequest(src, dst, None, name, overrides, notify, job_id, callback=callback, analyze=analyze)
    for key in obj:
        if key not in KNOWN_KEYS:
            raise BadRequest(
                f"unknown key {key!r}{suggest(key, KNOWN_KEYS)}; a resize job takes: {', '.join(KNOWN_KEYS)}"
            )
    spec = parse_resize(obj, dst, limits)
    return JobRequest(src, dst, spec, None, {}, notify, job_id, callback=callback, analyze=spec.analyze)
