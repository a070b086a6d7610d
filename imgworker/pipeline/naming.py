"""Where each output goes: the job's ``dst`` is a template ({stem}, {width}, {format}...).

A ``dst`` ending in ``/`` is a directory or prefix; the pipeline's ``dst_template`` names the files in it.
"""

from __future__ import annotations

import posixpath
import string
from collections.abc import Mapping
from urllib.parse import urlsplit

from imgworker.core.contract import suggest
from imgworker.core.errors import BadRequest

VARIABLES = ("stem", "name", "ext", "format", "width", "height", "label", "index")


def template_for(dst: str, dst_template: str, count: int) -> str:
    if dst.endswith("/"):
        return dst + dst_template
    if count > 1 and "{" not in dst:
        raise BadRequest(
            f"this pipeline writes {count} outputs: dst must be a template such as "
            f"'.../{{stem}}-{{width}}.{{ext}}' (or end in / to use {dst_template!r})"
        )
    return dst


def render(template: str, values: Mapping[str, object]) -> str:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise BadRequest(f"dst {template[:200]!r} is not a valid template: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in VARIABLES:
            raise BadRequest(f"dst uses {{{field}}}{suggest(field, VARIABLES)}; it may use: "
                             + ", ".join("{" + v + "}" for v in VARIABLES))
        if spec or conversion:
            # "{stem:>500000000}" would allocate gigabytes inside str.format: plain fields only.
            raise BadRequest(f"dst field {{{field}{'!' + conversion if conversion else ''}"
                             f"{':' + spec[:20] if spec else ''}}} has a format spec or conversion; "
                             f"use plain {{{field}}}")
    # Built here, not by str.format: each field is a plain substitution, so the size is bounded by the parts.
    return "".join(literal + ("" if field is None else str(values[field])) for literal, field, _, _ in parsed)


def source_names(src: str) -> dict[str, str]:
    name = posixpath.basename(urlsplit(src).path) or "image"
    return {"name": name, "stem": posixpath.splitext(name)[0]}
