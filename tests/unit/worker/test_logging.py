"""``--log-level debug`` keeps libvips' messages but not pyvips' argument dumps: those print a source's bytes
as text (4x its size), which cost 1.7 GB and 12 s on one 187 MB PNG."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import io, logging, sys
    import pyvips
    from imgworker.worker.process import setup_logging
    setup_logging(sys.argv[1])
    out = io.StringIO()
    logging.getLogger().handlers[0].setStream(out)
    pyvips.cache_set_max(0)
    png = pyvips.Image.black(1200, 1200, bands=3).write_to_buffer(".png", compression=0)  # ~4 MB
    pyvips.Image.new_from_buffer(png, "").thumbnail_image(64).write_to_buffer(".jpg")
    print(len(png), len(out.getvalue()), int("VIPS:" in out.getvalue()))
""")


@pytest.mark.parametrize("level", ["debug", "info"])
def test_debug_logging_does_not_print_the_source_bytes(level: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    source, logged, libvips = map(int, proc.stdout.split())
    assert source > 4_000_000
    assert logged < 20_000, f"{logged} characters of log for one job at {level}"
    assert libvips == (level == "debug")  # libvips' own lines still come at debug
