"""``info`` and ``analyze`` through a real gearmand and worker, driven by the clients in examples/."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.corpus import PHOTOS, photo
from support.tools import require_node_client
from support.workerproc import REPO, WorkerProc

from imgworker.analysis import phash
from imgworker.testing.gearmand import Gearmand

EXAMPLES = REPO / "examples"
ALL = ["meta", "thumbhash", "blurhash", "dominant", "phash"]
PIPELINE = """
name: facts_thumb
analyze: [meta, dominant]
steps:
  - auto_orient
outputs:
  - resize: {width: 240}
    encode: {format: jpeg}
"""


@pytest.fixture(scope="module")
def facts_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProc, Path]]:
    root = tmp_path_factory.mktemp("facts")
    (root / "out").mkdir()
    pipelines = root / "pipelines"
    pipelines.mkdir()
    (pipelines / "facts_thumb.yaml").write_text(PIPELINE)
    with Gearmand() as g:
        worker = WorkerProc([g.address], [PHOTOS, root], "--pipelines", str(pipelines))
        with worker:
            worker.wait_registered("info")
            yield worker, root


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def cli(worker: WorkerProc, function: str, payload: dict[str, object]) -> dict[str, object]:
    host, _, port = worker.servers[0].rpartition(":")
    proc = run(["gearman", "-h", host, "-p", port, "-f", function, json.dumps(payload)])
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_info_from_the_gearman_cli_example(facts_worker: tuple[WorkerProc, Path]) -> None:
    worker, root = facts_worker
    host, _, port = worker.servers[0].rpartition(":")
    src = photo("exif6").as_uri()
    before = sorted(root.joinpath("out").iterdir())  # the module's other tests write there, in any order
    proc = run([str(EXAMPLES / "info.sh"), host, port, src, *ALL])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = last_json(proc)
    assert result["ok"] is True and result["src"] == src and "dst" not in result
    facts = result["analysis"]
    assert set(facts) == set(ALL)
    meta = facts["meta"]
    assert (meta["width"], meta["height"], meta["orientation"], meta["format"]) == (1200, 900, 6, "jpeg")
    assert meta["bytes"] == photo("exif6").stat().st_size
    # The rotated file and its upright twin are the same picture: the perceptual hashes agree.
    upright = cli(worker, "info@cpu", {"src": photo("dragonfly").as_uri(), "analyze": ["phash"]})
    assert phash.distance(facts["phash"], upright["analysis"]["phash"]) <= 6  # type: ignore[index]
    assert sorted(root.joinpath("out").iterdir()) == before  # info wrote nothing


def test_info_refuses_a_dst_and_unknown_facts(facts_worker: tuple[WorkerProc, Path]) -> None:
    worker, root = facts_worker
    src = photo("baseline").as_uri()
    refused = cli(worker, "info", {"src": src, "dst": (root / "out" / "x.jpg").as_uri()})
    assert refused["ok"] is False and refused["error"]["code"] == "BAD_REQUEST"  # type: ignore[index]
    assert "remove 'dst'" in refused["error"]["message"]  # type: ignore[index]
    typo = cli(worker, "info", {"src": src, "analyze": ["thumbash"]})
    assert "did you mean 'thumbhash'" in typo["error"]["message"]  # type: ignore[index]
    outside = cli(worker, "info", {"src": "file:///etc/passwd"})
    assert outside["error"]["code"] == "FORBIDDEN_PATH"  # type: ignore[index]
    assert not (root / "out" / "x.jpg").exists()


def test_resize_and_pipeline_results_carry_the_facts(facts_worker: tuple[WorkerProc, Path]) -> None:
    worker, root = facts_worker
    src = photo("baseline").as_uri()
    dst = root / "out" / "facts.jpg"
    result = cli(worker, "resize", {"src": src, "dst": dst.as_uri(), "width": 400, "analyze": ALL})
    assert result["ok"] is True and dst.stat().st_size == result["bytes"]
    facts = result["analysis"]
    assert set(facts) == set(ALL)  # type: ignore[arg-type]
    assert facts["meta"]["width"] == 2048 and facts["meta"]["height"] == 1152  # type: ignore[index]
    assert "analysis" in result["ms"]  # type: ignore[operator]
    info = cli(worker, "info", {"src": src, "analyze": ["phash", "dominant"]})["analysis"]
    # From a 400 px decode or a 100 px info decode: the same picture by its hash and main colour.
    assert phash.distance(facts["phash"], info["phash"]) <= 4  # type: ignore[index]
    assert facts["dominant"]["palette"][0]["share"] > 0.1  # type: ignore[index]
    bad = cli(worker, "resize", {"src": src, "dst": dst.as_uri(), "width": 400, "analyze": ["colour"]})
    assert bad["error"]["code"] == "BAD_REQUEST"  # type: ignore[index]
    # A pipeline's own `analyze:` plus the job's.
    piped = cli(worker, "facts_thumb", {"src": photo("exif6").as_uri(), "dst": (root / "out" / "p.jpg").as_uri(),
                                        "analyze": ["phash"]})
    assert piped["ok"] is True, piped
    assert set(piped["analysis"]) == {"meta", "dominant", "phash"}  # type: ignore[arg-type]
    assert piped["analysis"]["meta"]["width"] == 1200  # type: ignore[index]
    assert phash.distance(piped["analysis"]["phash"], info_phash(worker, "dragonfly")) <= 6  # type: ignore[index]


def info_phash(worker: WorkerProc, kind: str) -> str:
    return cli(worker, "info", {"src": photo(kind).as_uri(), "analyze": ["phash"]})["analysis"]["phash"]  # type: ignore[index, no-any-return]


def test_info_from_php_perl_and_python(facts_worker: tuple[WorkerProc, Path]) -> None:
    worker, _root = facts_worker
    server = worker.servers[0]
    src = photo("rgba").as_uri()
    php = run(["php", str(EXAMPLES / "info.php"), server, src, "meta", "blurhash"])
    assert php.returncode == 0, php.stdout + php.stderr
    facts = last_json(php)["analysis"]
    assert facts["meta"]["has_alpha"] is True and facts["meta"]["format"] == "png"
    assert len(facts["blurhash"]) == 28 and "png 800x534" in php.stderr
    bad = run(["php", str(EXAMPLES / "info.php"), server, "file:///etc/passwd"])
    assert bad.returncode == 1 and last_json(bad)["error"]["code"] == "FORBIDDEN_PATH"
    perl = run(["perl", str(EXAMPLES / "info.pl"), server, src, "dominant"])
    assert perl.returncode == 0 and last_json(perl)["analysis"]["dominant"]["colour"].startswith("#")
    py = run([sys.executable, str(EXAMPLES / "info.py"), server, src, "thumbhash"])
    assert py.returncode == 0 and last_json(py)["analysis"]["thumbhash"] == facts_thumbhash(worker, src)


def facts_thumbhash(worker: WorkerProc, src: str) -> str:
    from imgworker import Client

    with Client(worker.servers, timeout=60) as client:
        return client.info(src=src, analyze=["thumbhash"]).analysis["thumbhash"]  # type: ignore[no-any-return]


def test_info_from_node(facts_worker: tuple[WorkerProc, Path]) -> None:
    worker, _root = facts_worker
    node_dir = EXAMPLES / "node"
    require_node_client(node_dir)  # ./dev setup ran npm ci there; the test never installs
    host, _, port = worker.servers[0].rpartition(":")
    proc = run(["node", str(node_dir / "info.js"), host, port, photo("webp").as_uri(), "meta"])
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc)["analysis"]["meta"]["format"] == "webp"
