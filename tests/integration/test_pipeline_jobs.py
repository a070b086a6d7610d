"""Pipelines in a real worker process: the `gearman` CLI, notify to a PHP worker, SIGHUP reload under load."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips
from support.corpus import photo
from support.fixtures_pipeline import PIPELINES_DIR
from support.tools import needs_tool, require_tool
from support.workerproc import WorkerProc, registered

from imgworker.gearman import Client
from imgworker.testing.gearmand import Gearmand

pytestmark = needs_tool("gearman", "apt-get install gearman-tools")

PHP_NOTIFY_WORKER = r"""<?php
// Receives imgworker completion notifications and appends each workload as one line to a file.
[$_, $host, $port, $fn, $out, $n] = $argv;
$w = new GearmanWorker();
$w->addServer($host, (int)$port);
$count = 0;
$w->addFunction($fn, function ($job) use ($out, &$count) {
    file_put_contents($out, $job->workload() . "\n", FILE_APPEND | LOCK_EX);
    $count++;
    return "ok";
});
fwrite(STDOUT, "ready\n");
fflush(STDOUT);
while ($count < (int)$n && $w->work());
"""


@pytest.fixture(scope="module")
def pl_gearmand() -> Iterator[Gearmand]:
    """A private gearmand: this module registers the shipped pipeline names, which other areas may use too."""
    with Gearmand() as g:
        yield g


@pytest.fixture(scope="module")
def pl_root(tmp_path_factory: pytest.TempPathFactory, pl_photos: Path) -> Path:
    root = tmp_path_factory.mktemp("plroot")
    (root / "out").mkdir()
    small = pyvips.Image.thumbnail(str(photo("dragonfly")), 640)
    small.jpegsave(str(root / "small.jpg"))
    mark = pyvips.Image.black(64, 32, bands=3).linear([1, 1, 1], [255, 255, 255]).cast("uchar").bandjoin(255)
    mark.pngsave(str(root / "mark.png"))
    return root


@pytest.fixture(scope="module")
def pl_worker(pl_gearmand: Gearmand, pl_root: Path, pl_photos: Path) -> Iterator[WorkerProc]:
    worker = WorkerProc([pl_gearmand.address], [pl_photos, pl_root], "--pipelines", str(PIPELINES_DIR))
    with worker.start(wait_for="product_zoom"):
        yield worker


def gearman_cli(address: str, function: str, payload: dict[str, object], *flags: str) -> str:
    host, port = address.rsplit(":", 1)
    done = subprocess.run(["gearman", "-h", host, "-p", port, *flags, "-f", function, json.dumps(payload)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", ["thumbnail", "avatar", "web", "product_zoom"])
def test_shipped_pipelines_run_from_the_gearman_cli(pl_worker, pl_gearmand, pl_root, pl_photos, name):
    dst = f"file://{pl_root}/out/{name}/" + ("" if name == "web" else "out.img")
    payload: dict[str, object] = {"src": photo("exif6").as_uri(), "dst": dst}
    if name == "product_zoom":
        payload["watermark"] = (pl_root / "mark.png").as_uri()
    result = json.loads(gearman_cli(pl_gearmand.address, name, payload))
    assert result["ok"] is True, result
    assert result["pipeline"] == name and result["backend"] == "cpu"
    expected = {"thumbnail": (320, 240), "avatar": (256, 256), "web": (256, 192),
                "product_zoom": (1200, 900)}  # 2048 px at most, never enlarged past the 1200x900 source
    assert (result["width"], result["height"]) == expected[name]
    assert len(result["outputs"]) == (6 if name == "web" else 1)
    for out in result["outputs"]:
        assert Path(out["dst"].removeprefix("file://")).stat().st_size == out["bytes"]


def test_a_bad_job_for_a_pipeline_gets_a_json_error(pl_worker, pl_gearmand, pl_root):
    payload = {"src": f"file://{pl_root}/small.jpg", "dst": f"file://{pl_root}/out/x.jpg", "quality": 5}
    result = json.loads(gearman_cli(pl_gearmand.address, "thumbnail@cpu", payload))
    assert result["ok"] is False
    assert result["error"]["code"] == "BAD_REQUEST" and "'quality' must be an integer from 30 to 95" in \
        result["error"]["message"]


def test_notify_reaches_a_php_worker_for_pipelines_and_resize(pl_worker, pl_gearmand, pl_root, tmp_path,
                                                              gearman_fn):
    require_tool("php", "apt-get install php-cli php-gearman")
    script, received, fn = tmp_path / "notify.php", tmp_path / "received.jsonl", gearman_fn("notified")
    script.write_text(PHP_NOTIFY_WORKER)
    host, port = pl_gearmand.address.rsplit(":", 1)
    php = subprocess.Popen(["php", str(script), host, port, fn, str(received), "3"], stdout=subprocess.PIPE)
    try:
        assert php.stdout is not None and php.stdout.readline().strip() == b"ready"
        src = f"file://{pl_root}/small.jpg"
        jobs = [
            ("thumbnail", {"src": src, "dst": f"file://{pl_root}/out/n1.jpg", "notify": fn, "id": "job-1"}),
            ("thumbnail", {"src": f"file://{pl_root}/missing.jpg", "dst": f"file://{pl_root}/out/n2.jpg",
                           "notify": fn, "id": "job-2"}),
            ("resize", {"src": src, "dst": f"file://{pl_root}/out/n3.jpg", "width": 50, "notify": fn, "id": "job-3"}),
        ]
        for function, payload in jobs:
            gearman_cli(pl_gearmand.address, function, payload, "-b")  # background: nobody waits for the result
        php.wait(timeout=60)
    finally:
        php.kill()
    notes = {n["id"]: n for n in map(json.loads, received.read_text().splitlines())}
    assert notes.keys() == {"job-1", "job-2", "job-3"}
    assert notes["job-1"]["ok"] is True and notes["job-1"]["dst"].endswith("/out/n1.jpg")
    assert notes["job-1"]["function"] == "thumbnail" and notes["job-1"]["width"] == 320
    assert notes["job-2"]["ok"] is False and notes["job-2"]["error"]["code"] == "SOURCE_NOT_FOUND"
    assert notes["job-3"]["ok"] is True and notes["job-3"]["width"] == 50 and notes["job-3"]["function"] == "resize"


def test_worker_refuses_to_start_with_a_bad_pipeline(pl_gearmand, pl_root, tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nsteps:\n  - blur: {sigma: -1}\noutputs: [{encode: jpeg}]\n")
    worker = WorkerProc([pl_gearmand.address], [pl_root], "--pipelines", str(tmp_path))
    worker.start(wait_for=None)
    assert worker.wait(timeout=60) == 2
    assert f"{tmp_path / 'bad.yaml'}:3: blur sigma must be a number from 0 to 1000, got -1" in worker.log()


def test_sighup_reload_under_load_loses_no_job(pl_root, tmp_path):
    pdir = tmp_path / "pipelines"
    pdir.mkdir()
    shutil.copy(PIPELINES_DIR / "thumbnail.yaml", pdir)
    with Gearmand() as gearmand:  # its own job server: only this worker can take these jobs
        _reload_under_load(gearmand, pdir, pl_root)


def _reload_under_load(pl_gearmand: Gearmand, pdir: Path, pl_root: Path) -> None:
    worker = WorkerProc([pl_gearmand.address], [pl_root], "--pipelines", str(pdir), concurrency=2)
    src = f"file://{pl_root}/small.jpg"

    async def load() -> tuple[list[dict[str, object]], dict[str, object]]:
        async with Client([pl_gearmand.address]) as client:

            async def one(function: str, i: int) -> dict[str, object]:
                payload = {"src": src, "dst": f"file://{pl_root}/out/hup-{function}-{i}.jpg", "width": 64}
                return json.loads(await client.submit(function, json.dumps(payload).encode(), timeout=120))

            tasks = []
            for i in range(60):
                tasks.append(asyncio.create_task(one("thumbnail", i)))
                await asyncio.sleep(0.02)
                if i == 15:  # a bad file: the reload fails, the old set keeps serving
                    (pdir / "broken.yaml").write_text("name: broken\nsteps: [nope]\noutputs: [{encode: jpeg}]\n")
                    worker.signal(signal.SIGHUP)
                if i == 30:  # fixed and a new pipeline added: served after this reload
                    (pdir / "broken.yaml").unlink()
                    (pdir / "tiny.yaml").write_text(
                        "name: tiny\nparams: {width: {default: 32}}\nsteps: [{resize: {width: $width}}]\n"
                        "outputs: [{encode: jpeg}]\n")
                    worker.signal(signal.SIGHUP)
            results = await asyncio.gather(*tasks)
            await asyncio.to_thread(worker.wait_registered, "tiny", timeout=30)
            return results, await one("tiny", 0)

    with worker.start(wait_for="thumbnail"):
        results, tiny = asyncio.run(asyncio.wait_for(load(), 180))
        assert worker.alive()
    assert [r["ok"] for r in results] == [True] * 60, [r for r in results if not r["ok"]][:3]
    assert tiny["ok"] is True and tiny["width"] == 64 and tiny["pipeline"] == "tiny"
    log = worker.log()
    assert "pipeline reload failed; still serving the previous set" in log
    assert "broken.yaml:2: unknown step 'nope'" in log
    assert "pipelines reloaded: thumbnail, tiny" in log
    assert registered(pl_gearmand.address, "tiny@cpu") == 0  # the worker is gone: deregistered
