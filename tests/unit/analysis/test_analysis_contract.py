"""``analyze`` in payloads and pipeline files, and the facts on every route: resize (CPU and the GPU
backend's NumPy engine), pipelines with and without auto_orient, all decoding once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.corpus import photo

from imgworker.analysis import phash
from imgworker.backends.cpu import CpuBackend
from imgworker.core.contract import parse_request
from imgworker.core.errors import BadRequest
from imgworker.core.limits import Limits
from imgworker.jobs.service import Service
from imgworker.pipeline import decode as decoder
from imgworker.pipeline.loader import parse
from imgworker.pipeline.model import PipelineError
from imgworker.stores import Stores
from imgworker.stores.file import FileStore

BASE = "name: p\nsteps: []\noutputs:\n  - resize: {width: 200}\n    encode: {format: jpeg}\n"


def test_pipeline_file_analyze_is_checked_with_line_and_hint() -> None:
    assert parse("p.yaml", BASE + "analyze: [meta, phash]\n").analyze == ("meta", "phash")
    with pytest.raises(PipelineError) as err:
        parse("p.yaml", BASE + "analyze: [meta, phsh]\n")
    assert "p.yaml:6:" in str(err.value) and "did you mean 'phash'" in str(err.value)
    with pytest.raises(PipelineError, match="not 'resize' or 'info'"):
        parse("p.yaml", BASE.replace("name: p", "name: info"))


def test_payload_analyze_on_resize_pipeline_and_info() -> None:
    limits = Limits()
    req = parse_request(b'{"src": "file:///a.jpg", "dst": "file:///b.jpg", "width": 9, "analyze": ["meta"]}', limits)
    assert req.analyze == ("meta",) and req.resize is not None and req.resize.analyze == ("meta",)
    piped = parse_request(b'{"src": "file:///a.jpg", "dst": "file:///b/", "analyze": ["phash"], "width": 9}',
                          limits, pipeline="web")
    assert piped.analyze == ("phash",) and "analyze" not in piped.overrides
    info = parse_request(b'{"src": "file:///a.jpg", "analyze": ["dominant"], "id": 7}', limits, pipeline="info")
    assert info.info and info.analyze == ("dominant",) and info.id == 7
    with pytest.raises(BadRequest, match=r"unknown key 'analyse' \(did you mean 'analyze'\?\)"):
        parse_request(b'{"src": "file:///a.jpg", "analyse": ["meta"]}', limits, pipeline="info")
    with pytest.raises(BadRequest, match="did you mean 'blurhash'"):
        parse_request(b'{"src": "file:///a.jpg", "dst": "file:///b.jpg", "width": 9, "analyze": ["blurhsh"]}',
                      limits)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for kind in ("baseline", "exif6", "dragonfly"):
        shutil.copy(photo(kind), tmp_path / f"{kind}.jpg")
    return tmp_path


def service(root: Path, backend: object, pipelines: dict | None = None) -> Service:  # type: ignore[type-arg]
    return Service(Stores({"file": FileStore([root])}), backend, Limits(), pipelines)  # type: ignore[arg-type]


def job(svc: Service, root: Path, src: str, pipeline: str | None = None, **keys: object) -> dict:  # type: ignore[type-arg]
    payload = {"src": (root / src).as_uri(), "dst": (root / "out.jpg").as_uri(), **keys}
    return svc.handle(json.dumps(payload).encode(), pipeline=pipeline)


def test_resize_facts_describe_the_picture_before_a_cover_crop(root: Path) -> None:
    svc = service(root, CpuBackend())
    result = job(svc, root, "baseline.jpg", width=100, height=100, fit="cover", analyze=["thumbhash", "meta"])
    assert (result["width"], result["height"]) == (100, 100)
    header = __import__("base64").b64decode(result["analysis"]["thumbhash"])
    assert header[4] & 0x80  # ThumbHash's landscape flag: the whole 16:9 picture, not the square crop
    assert result["analysis"]["meta"]["width"] == 2048


def test_gpu_backend_resize_gets_facts_too(root: Path) -> None:
    from imgworker.backends.gpu import GpuBackend

    gpu = GpuBackend(xp=np, max_batch=1)
    try:
        result = job(service(root, gpu), root, "baseline.jpg", width=300, analyze=["phash", "dominant"])
    finally:
        gpu.close()
    cpu = job(service(root, CpuBackend()), root, "baseline.jpg", width=300, analyze=["phash", "dominant"])
    assert result["backend"] == "gpu" and phash.distance(result["analysis"]["phash"], cpu["analysis"]["phash"]) <= 4
    assert result["analysis"]["dominant"]["palette"]


@pytest.mark.parametrize("orient", [True, False])
def test_pipeline_facts_decode_once_and_are_upright(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                    orient: bool) -> None:
    from imgworker.pipeline.run import Runner

    text = ("name: p\nanalyze: [meta, phash]\nsteps:\n" + ("  - auto_orient\n" if orient else "  []\n")
            + "outputs:\n  - resize: {width: 200}\n    encode: {format: jpeg}\n")
    text = text.replace("steps:\n  []\n", "steps: []\n")
    runner = Runner(parse("p.yaml", text))
    calls: list[int] = []
    real = decoder.decode

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decoder, "decode", counting)
    result = job(service(root, CpuBackend(), {"p": runner}), root, "exif6.jpg", pipeline="p", analyze=["dominant"])
    assert len(calls) == 1  # the facts read the job's own decode
    assert set(result["analysis"]) == {"meta", "phash", "dominant"}
    assert result["analysis"]["meta"]["width"] == 1200
    upright = job(service(root, CpuBackend()), root, "dragonfly.jpg", width=200, analyze=["phash"])
    # With or without auto_orient in the pipeline, the facts describe the picture as shown.
    assert phash.distance(result["analysis"]["phash"], upright["analysis"]["phash"]) <= 6
