"""The Gearman function names, built in one place (imgworker/core/functions.py)."""

from __future__ import annotations

from imgworker.core.functions import BUILTIN, registered, tagged, untagged


def test_a_worker_registers_every_name_plain_and_tagged_with_its_backend_only():
    assert registered("cpu", ["thumbnail"]) == {
        "resize": None, "resize@cpu": None, "thumbnail": "thumbnail", "thumbnail@cpu": "thumbnail",
        "info": "info", "info@cpu": "info",
    }
    assert not any(name.endswith("@gpu") for name in registered("cpu", ["thumbnail"]))


def test_tags_come_off_and_builtins_are_reserved():
    assert tagged("resize", "gpu") == "resize@gpu" and untagged("resize@gpu") == "resize" == untagged("resize")
    assert BUILTIN == ("resize", "info")
