"""The memory budget against a real worker (issue 19, item 6): a job is admitted on its estimated cost.

The issue's figures (1.5 GB interlaced PNGs, 2.5 GB AVIF upscales, a 4.2 GB animation) are scaled down here
by giving the worker a small ``--memory-budget``, so the test images stay small and quick to make and the
"before" runs cost tens of MB, not gigabytes. Before the budget each of these jobs decoded and succeeded.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from support.fixtures_hostile import REPO, NamedWorker, code, job, vm_hwm_kb
from support.fixtures_reliability import make_tiny_image

from imgworker.core import budget
from imgworker.testing.gearmand import Gearmand
from imgworker.testing.ports import reserve_port

BUDGET_MIB = 96


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("memory-root")
    (root / "out").mkdir()
    make_tiny_image(root / "in" / "tiny.png", size=1)
    # 16-bit RGBA, interlaced: decoded whole. 4000^2 x 8 bytes = 122 MiB (over the budget), 2600^2: 52 MiB.
    for side in (4000, 2600):
        image = pyvips.Image.black(side, side, bands=4).cast("ushort").copy(interpretation="rgb16")
        image.pngsave(str(root / "in" / f"i16_{side}.png"), compression=9, interlace=True)
    # Progressive CMYK JPEG: libjpeg keeps every coefficient, 4000^2 x 4 x 2 bytes = 122 MiB.
    cmyk = pyvips.Image.black(4000, 4000, bands=4).copy(interpretation="cmyk")
    cmyk.jpegsave(str(root / "in" / "cmyk_prog.jpg"), interlace=True, Q=50)
    # An animation of 250 frames of 256x256: 62 MiB of RGBA frames, kept by `web` once decoded and per size.
    frames = 250
    # Each frame a white square in a place of its own (identical frames would be merged by the GIF encoder).
    xy = pyvips.Image.xyz(256, 256 * frames)
    index = (xy[1] / 256).floor()
    square = ((xy[0] / 16).floor() == index % 16) & (((xy[1] % 256) / 16).floor() == (index / 16).floor())
    grey = square.ifthenelse(255, 0).cast("uchar")
    strip = grey.bandjoin([grey, grey]).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 256)
    strip.gifsave(str(root / "in" / "anim.gif"))
    assert pyvips.Image.new_from_file(str(root / "in" / "anim.gif")).get("n-pages") == frames
    port_holder: dict[str, Any] = {}
    log = tmp_path_factory.mktemp("memory-log") / "worker.log"
    with Gearmand() as server:
        port = reserve_port()
        worker = NamedWorker([server.address], [root], log, name="memory", concurrency=2,
                            extra=["--memory-budget", str(BUDGET_MIB), "--metrics-port", str(port),
                                   "--pipelines", str(REPO / "pipelines")])
        worker.start().wait_ready()
        port_holder.update(server=server.address, root=root, worker=worker, port=port)
        yield port_holder
        worker.stop()


def run(env: dict[str, Any], src: str, function: str = "resize", **params: Any) -> dict[str, Any]:
    root: Path = env["root"]
    dst = (root / "out").as_uri() + "/" if function != "resize" else (root / "out" / f"{src}.out").as_uri()
    return job(env["server"], {"src": (root / "in" / src).as_uri(), "dst": dst, **params}, function=function)


@pytest.mark.parametrize(("src", "params", "function"), [
    ("i16_4000.png", {"width": 100, "format": "png"}, "resize"),
    ("cmyk_prog.jpg", {"width": 100, "format": "jpeg"}, "resize"),
    ("tiny.png", {"width": 2000, "height": 2000, "fit": "fill", "format": "avif"}, "resize"),
    ("anim.gif", {}, "web"),
])
def test_a_job_over_the_memory_budget_is_refused_before_decoding(env: dict[str, Any], src: str,
                                                                  params: dict[str, Any], function: str) -> None:
    """Before: decoded (interlaced 16-bit PNG, progressive CMYK), encoded (1x1 upscaled to AVIF) or kept every
    frame (GIF through `web`): at full scale 1.6 GB, 1.6 GB, 2.5 GB, 4.2 GB."""
    worker: NamedWorker = env["worker"]
    peak = vm_hwm_kb(worker.pid)
    result = run(env, src, function, **params)
    assert code(result) == "LIMIT_EXCEEDED", result
    assert "memory budget" in result["error"]["message"] and f"{BUDGET_MIB} MiB" in result["error"]["message"]
    assert vm_hwm_kb(worker.pid) - peak < 30_000  # KiB: refused on the header


def test_two_jobs_that_fit_only_one_at_a_time_run_one_after_the_other(env: dict[str, Any]) -> None:
    """Each needs ~52 MiB of a 96 MiB budget: both succeed, the second after the first (one waits)."""
    worker: NamedWorker = env["worker"]
    results: list[dict[str, Any]] = [{}, {}]

    def one(i: int) -> None:
        results[i] = run(env, "i16_2600.png", width=64 + i, format="png")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [code(r) for r in results] == ["ok", "ok"], results
    assert "job waits for memory" in worker.log()


def test_the_budget_and_memory_in_use_are_in_the_metrics(env: dict[str, Any]) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{env['port']}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r"^imgworker_memory_budget_bytes(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert found and float(found.group(1)) == BUDGET_MIB * budget.MIB
    assert re.search(r"^imgworker_memory_reserved_bytes(?:\{[^}]*\})? 0\.0$", text, re.M)


def test_the_budget_derives_from_the_container_limit_and_processes() -> None:
    pod = 1536 * budget.MIB  # the CPU pod's limit in k8s/cpu
    one = budget.derive(0, 1, limit=pod)
    assert one == int(pod * budget.USABLE_SHARE - budget.BASE_PER_PROCESS)
    assert budget.derive(0, 2, limit=pod) < one / 2 + 1
    assert budget.derive(300, 4, limit=pod) == 300 * budget.MIB
    # The sources at full scale: over the pod's budget on their own, so refused, not run.
    png = budget.estimate(width=14000, height=14000, bands=4, bytes_per_sample=2, loader="png", whole=True,
                          out_width=256, out_height=256, fmt="jpeg")
    avif = budget.estimate(width=1, height=1, bands=3, bytes_per_sample=1, loader="png", whole=False,
                           out_width=10000, out_height=10000, fmt="avif")
    assert png.total > one and avif.total > one
    # A 24 MP baseline JPEG to a 2048 px JPEG fits many times over.
    photo = budget.estimate(width=6000, height=4000, bands=3, bytes_per_sample=1, loader="jpeg", whole=False,
                            out_width=2048, out_height=1365, fmt="jpeg", shrink=2)
    assert photo.total * 8 < one
