"""The ``batch`` job's payload: a source prefix, a destination prefix, and what to run on each object.

    {"src": "s3://photos/in/", "dst": "s3://photos/thumbs/", "width": 512, "format": "webp"}
    {"src": "file:///data/in/", "dst": "s3://cdn/out/", "pipeline": "thumbnails"}

Optional keys: ``function`` (the Gearman function for each object, e.g. ``resize@gpu``; default ``resize``
or the pipeline's name), ``in_flight`` (jobs out at once, default 32), ``manifest`` (default
``<dst>manifest.json``), ``overwrite`` (default false: objects whose output already exists are skipped, which
is how a resubmitted or re-queued batch resumes), ``timeout`` (seconds per object job), ``id``.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgworker.core.contract import RESIZE_KEYS, decode_payload, parse_resize, suggest
from imgworker.core.errors import BadRequest
from imgworker.core.formats import RESIZE_FORMATS, suffix
from imgworker.core.functions import RESIZE, untagged
from imgworker.core.limits import Limits
from imgworker.stores.file import url_to_path

OWN_KEYS = ("src", "dst", "pipeline", "function", "in_flight", "manifest", "overwrite", "timeout", "id")
MAX_IN_FLIGHT = 1024


def as_prefix(url: str) -> str:
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class BatchSpec:
    src: str
    dst: str
    function: str
    params: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 32
    manifest: str = ""
    overwrite: bool = False
    timeout: float = 600.0
    id: str | None = None

    @property
    def checks_outputs(self) -> bool:
        """Whether an existing ``dst`` means done: true for resize; a pipeline may write other names."""
        return "pipeline" not in self.params and untagged(self.function) == RESIZE

    def relative(self, src_url: str) -> str:
        if self.src.startswith("file://"):
            # FileStore lists resolved, percent-encoded URIs; compare paths, not strings.
            base = os.path.realpath(url_to_path(self.src))
            return Path(os.path.relpath(url_to_path(src_url), base)).as_posix()
        return src_url[len(self.src) :]

    def child_dst(self, src_url: str) -> str:
        rel = self.relative(src_url)
        fmt = self.params.get("format")
        if isinstance(fmt, str) and fmt.lower() in RESIZE_FORMATS:
            rel = posixpath.splitext(rel)[0] + suffix(fmt.lower())
        if self.dst.startswith("file://"):
            return (Path(url_to_path(self.dst)) / rel).as_uri()
        return self.dst + rel

    def child_payload(self, src_url: str) -> dict[str, Any]:
        return {"src": src_url, "dst": self.child_dst(src_url), **self.params}


def _number(obj: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise BadRequest(f"{key!r} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def parse_batch(data: bytes, limits: Limits) -> BatchSpec:
    obj = decode_payload(data, limits)
    src, dst = obj.get("src"), obj.get("dst")
    if not isinstance(src, str) or not isinstance(dst, str) or "://" not in src or "://" not in dst:
        raise BadRequest("a batch needs 'src' and 'dst' prefixes, like s3://bucket/in/ and s3://bucket/out/")
    src, dst = as_prefix(src), as_prefix(dst)
    pipeline = obj.get("pipeline")
    if pipeline is not None and (not isinstance(pipeline, str) or not pipeline):
        raise BadRequest(f"'pipeline' must be a pipeline name, got {pipeline!r}")
    function = obj.get("function") or pipeline or RESIZE
    if not isinstance(function, str):
        raise BadRequest(f"'function' must be a Gearman function name, got {function!r}")
    params = {k: v for k, v in obj.items() if k not in OWN_KEYS}
    if pipeline is None:
        for key in params:
            if key not in RESIZE_KEYS:
                allowed = OWN_KEYS + RESIZE_KEYS
                hint = suggest(key, allowed)
                raise BadRequest(f"unknown batch key {key!r}{hint}; a batch takes: {', '.join(allowed)}")
        # Validate the resize parameters once here, not as 100,000 identical per-object failures.
        fmt = str(params.get("format")).lower()
        parse_resize(params, "x" + (suffix(fmt) if fmt in RESIZE_FORMATS else ".jpg"), limits)
    elif function != pipeline:
        params["pipeline"] = pipeline
    overwrite = obj.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise BadRequest(f"'overwrite' must be true or false, got {overwrite!r}")
    manifest = obj.get("manifest") or dst + "manifest.json"
    if not isinstance(manifest, str) or manifest.endswith("/"):
        raise BadRequest(f"'manifest' must be an object URL, got {manifest!r}")
    job_id = obj.get("id")
    return BatchSpec(
        src=src,
        dst=dst,
        function=function,
        params=params,
        in_flight=int(_number(obj, "in_flight", 32, 1, MAX_IN_FLIGHT)),
        manifest=manifest,
        overwrite=overwrite,
        timeout=_number(obj, "timeout", 600.0, 1, 86_400),
        id=None if job_id is None else str(job_id),
    )
