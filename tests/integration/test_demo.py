"""``imgworker demo`` as a newcomer runs it: the shipped photos through a real gearmand and worker, and the
contact sheet opened in a real browser (headless Chromium) with every image loaded."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support.corpus import photos
from support.workerproc import REPO


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = subprocess.run([sys.executable, "-m", "imgworker", "demo", "--out", str(out), "--processes", "1"],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def test_demo_resizes_every_shipped_photo_and_shows_the_error(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    shipped = photos()
    assert len(shipped) >= 9
    assert f"{len(shipped)} of {len(shipped) + 1} resize jobs succeeded" in stdout
    assert "FORBIDDEN_PATH" in stdout and "web pipeline: 6 outputs" in stdout
    page = (out / "index.html").read_text()
    for src in shipped:
        assert html.escape(src.name) in page
        with Image.open(out / f"{src.stem}.jpg") as img:
            assert img.format == "JPEG" and img.width == 512
        assert (out / "originals" / src.name).read_bytes() == src.read_bytes()
    assert "<code>FORBIDDEN_PATH</code>" in page and page.count("decode") >= len(shipped)
    web = sorted(p.name for p in (out / "web").iterdir())
    assert len(web) == 6 and {Path(n).suffix for n in web} == {".webp", ".jpg"}
    # Every link on the page is relative and points at a file in the folder: the page survives a move.
    links = re.findall(r'src="([^"]+)"', page)
    assert len(links) == 2 * len(shipped) + 6
    for link in links:
        assert not link.startswith(("/", "file:")) and (out / html.unescape(link)).is_file(), link


CHECK = """<!doctype html><meta charset=utf-8><title>check</title>
<script>
function check(frame) {  // at the frame's load event every (eager) image has loaded or failed
  const imgs = [...frame.contentDocument.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.body.setAttribute('data-result', JSON.stringify({total: imgs.length, broken: broken}));
}
</script>
<body><iframe src="index.html" onload="check(this)" style="width:1400px;height:900px"></iframe>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is not installed: ./dev setup installs Debian's chromium package")


def test_contact_sheet_loads_every_image_in_a_real_browser(demo: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = demo
    (out / "check.html").write_text(CHECK)
    profile = tmp_path / "profile"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--allow-file-access-from-files", "--virtual-time-budget=20000",
           "--dump-dom", (out / "check.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r"data-result=\"([^\"]+)\"", proc.stdout)
    assert found, f"the page did not report (chromium rc {proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["broken"] == [] and result["total"] == 2 * len(photos()) + 6, result
