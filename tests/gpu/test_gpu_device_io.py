"""Pipeline jobs' device JPEG decode and encode (engine/device_io.py, pipeline/array_run.py), without a GPU.

The NumPy GpuBackend runs the array executor with stand-in codecs that have nvImageCodec's interfaces
(BatchDecoder: full-size decode, no EXIF orientation, None for a file it refuses; JpegEncoder: a list of
images and qualities per call), given through the backend's ``jpeg_decoder`` / ``jpeg_encoder`` seam; the
routing, batching, orientation and fallbacks under test are the production code's. Compared with the same
backend without codecs (the CPU-decode array path) and with the CPU worker.

Bound: PSNR >= 33 dB between the device-decode output and the CPU-decode output, both lossy-encoded. The
device path resizes from the full-size decode, the CPU path from libvips' shrink-on-load decode at the target
size (a second resample): measured 35.8-47.1 dB for thumbnail, web and avatar on baseline, dragonfly and exif6
against the CPU-decode array path and the CPU worker (libvips 8.18, this machine). Controls on the same
thumbnails: the image 1 px off measures 22.8-23.3 dB, upside down 9.3-11.7 dB (a wrong turn by 90 degrees
changes the shape, which is asserted). The ``-m gpu`` tests hold the real nvImageCodec codecs on a CuPy
backend to the same bound against the CPU worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from support.corpus import PHOTOS, bad, photo

from imgworker.backends.cpu import CpuBackend
from imgworker.backends.gpu import GpuBackend
from imgworker.core.errors import ImgworkerError
from imgworker.core.limits import Limits
from imgworker.jobs.service import Service
from imgworker.pipeline import PipelineSet
from imgworker.stores import FileStore, Stores

REPO = Path(__file__).resolve().parents[2]
BOUND_DB = 33.0


def _full_size_rgb(jpeg: bytes) -> np.ndarray:
    """The file's pixels as stored (no EXIF turn), (H, W, 3) uint8."""
    img = pyvips.Image.new_from_buffer(jpeg, "", access="sequential")
    return np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(img.height, img.width, img.bands))


class StandInDecoder:
    """BatchDecoder's interface on the CPU: full-size RGB decode (libvips' libjpeg-turbo), no orientation, like
    nvJPEG. libvips, not simplejpeg: this file runs on the device machine too, where only the carried wheels
    (docs/gpu.md) are installed."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[int] = []
        self.refuse = refuse
        self._lock = threading.Lock()

    def decode(self, jpegs: Sequence[bytes]) -> tuple[list[Any], float]:
        with self._lock:
            self.calls.append(len(jpegs))
        if self.refuse:
            return [None] * len(jpegs), 0.1
        return [_full_size_rgb(j) for j in jpegs], 1.0


class StandInEncoder:
    """JpegEncoder's interface on the CPU: libvips' baseline/progressive JPEG of each image."""

    def __init__(self, fail: bool = False, progressive_kw: bool = True) -> None:
        self.calls: list[list[tuple[int, int, int]]] = []  # per call: (height, width, quality) of each image
        self.data: list[bytes] = []
        self.fail = fail
        if not progressive_kw:  # an nvImageCodec without progressive JPEG: the keyword is a TypeError
            self.encode = self._encode_plain  # type: ignore[method-assign,assignment]

    def encode(self, images: Sequence[Any], qualities: Sequence[int],
               progressive: Sequence[bool] | None = None) -> tuple[list[bytes | None], float]:
        self.calls.append([(int(i.shape[0]), int(i.shape[1]), q) for i, q in zip(images, qualities, strict=True)])
        if self.fail:
            raise RuntimeError("stand-in encoder out of buffers")
        flags = progressive or [False] * len(images)
        out: list[bytes | None] = []
        for img, q, p in zip(images, qualities, flags, strict=True):
            h, w, c = img.shape
            vi = pyvips.Image.new_from_memory(np.ascontiguousarray(img).data, w, h, c, "uchar")
            out.append(bytes(vi.copy(interpretation="srgb").jpegsave_buffer(Q=q, optimize_coding=True,
                                                                           interlace=p, keep=0)))
        self.data += [d for d in out if d is not None]
        return out, 1.0

    def _encode_plain(self, images: Sequence[Any], qualities: Sequence[int]) -> tuple[list[bytes | None], float]:
        return StandInEncoder.encode(self, images, qualities)


def gpu_backend(decoder: Any = None, encoder: Any = None, **kw: Any) -> GpuBackend:
    return GpuBackend(np, name="numpy", gpu_decode="always", gpu_encode="always", jpeg_decoder=decoder,
                      jpeg_encoder=encoder, **{"max_batch": 4, "max_wait_ms": 5.0, **kw})


def service(backend: Any, out: Path, pipelines: Path = REPO / "pipelines") -> Service:
    pset = PipelineSet.load(str(pipelines), "cpu" if isinstance(backend, CpuBackend) else "numpy")
    return Service(Stores({"file": FileStore([str(out), str(PHOTOS), str(bad("empty.jpg").parent)])}), backend,
                   Limits(), pset.current)


def job(name: str, src: Path, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    dst = f"{out.as_uri()}/" if name == "web" else f"{out.as_uri()}/{name}.jpg"
    extra = {"watermark": photo("rgba").as_uri()} if name == "product_zoom" else {}
    return {"src": src.as_uri(), "dst": dst, **extra}


def run(svc: Service, name: str, src: Path, out: Path) -> dict[str, Any]:
    return svc.handle(json.dumps(job(name, src, out)).encode(), pipeline=name)


def pixels(url: str) -> np.ndarray:
    image = pyvips.Image.new_from_file(url.removeprefix("file://"))
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, image.bands))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else float(10 * np.log10(255**2 / mse))


def agree(got: dict[str, Any], want: dict[str, Any], bound: float = BOUND_DB) -> list[float]:
    """Same outputs (names aside) within ``bound`` dB; the PSNR of each."""
    dbs = []
    for a, b in zip(got["outputs"], want["outputs"], strict=True):
        assert set(a) == set(b) and (a["width"], a["height"], a["format"]) == (b["width"], b["height"], b["format"])
        dbs.append(psnr(pixels(a["dst"]), pixels(b["dst"])))
    assert min(dbs) >= bound, dbs
    return dbs


def concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call on its own thread, all at once (as a worker's job threads): its result or its exception."""
    results: list[Any] = [None] * len(calls)

    def go(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@pytest.fixture(scope="module")
def plain() -> Iterator[GpuBackend]:
    """The CPU-decode array path: the NumPy backend without device codecs."""
    backend = GpuBackend(np, name="numpy")
    yield backend
    backend.close()


def test_concurrent_jobs_share_one_device_decode_and_match_the_cpu_decode_path(
    tmp_path: Path, plain: GpuBackend
) -> None:
    dec, enc = StandInDecoder(), StandInEncoder()
    backend = gpu_backend(dec, enc, max_wait_ms=20000.0)  # the batch closes when all 4 jobs are in
    svc = service(backend, tmp_path)
    jobs = [("web", photo("baseline")), ("thumbnail", photo("baseline")), ("web", photo("dragonfly")),
            ("thumbnail", photo("dragonfly"))]
    results = concurrently([lambda i=i: run(svc, jobs[i][0], jobs[i][1], tmp_path / f"dev{i}")  # type: ignore[misc]
                            for i in range(len(jobs))])
    backend.close()
    assert not [r for r in results if not isinstance(r, dict)], results
    assert dec.calls == [4]  # one decoder call for the whole batch
    ref = service(plain, tmp_path)
    for (name, src), got in zip(jobs, results, strict=True):
        ms = got["ms"]
        assert ms["decode_gpu_batch_size"] == 4 and "decode_routed_cpu" not in ms, ms
        want = run(ref, name, src, tmp_path / f"ref-{name}-{src.stem}")
        assert "decode_gpu" not in want["ms"]
        agree(got, want)
        if name == "web":  # its JPEGs are mozjpeg: the CPU encodes them; its WebPs always
            assert ms["encode_routed_cpu_mozjpeg"] == 3 and "encode_gpu" not in ms, ms
        else:  # thumbnail: progressive JPEG, no metadata: the device encoder
            assert ms["encode_gpu_outputs"] == 1 and "encode_routed_cpu" not in ms, ms
            assert Path(got["dst"].removeprefix("file://")).read_bytes() in enc.data
    assert len(enc.calls) == 2 and all(len(c) == 1 for c in enc.calls)


def test_exif6_comes_out_oriented_like_the_cpu_worker(tmp_path: Path) -> None:
    dec = StandInDecoder()
    backend = gpu_backend(dec, StandInEncoder())
    try:
        got = run(service(backend, tmp_path), "thumbnail", photo("exif6"), tmp_path / "dev")
    finally:
        backend.close()
    want = run(service(CpuBackend(), tmp_path), "thumbnail", photo("exif6"), tmp_path / "cpu")
    assert dec.calls == [1] and "decode_gpu" in got["ms"]
    assert (got["width"], got["height"]) == (want["width"], want["height"]) == (320, 240)  # 900x1200 stored
    agree(got, want)


def icc_tagged(tmp_path: Path) -> Path:
    """The baseline photo with an sRGB ICC profile embedded (libvips' own): the policy sends it to libvips."""
    image = pyvips.Image.new_from_file(str(photo("dragonfly"))).icc_transform("srgb", embedded=False,
                                                                               input_profile="srgb")
    path = tmp_path / "icc.jpg"
    image.jpegsave(str(path), Q=90, keep=pyvips.enums.ForeignKeep.ICC)
    assert pyvips.Image.new_from_file(str(path)).get_typeof("icc-profile-data") != 0
    return path


@pytest.mark.parametrize(("kind", "reason"), [
    ("progressive", "decode_routed_cpu_progressive"),
    ("cmyk", "decode_routed_cpu_icc_profile"),
    ("icc", "decode_routed_cpu_icc_profile"),
    ("truncated", "decode_routed_cpu_no_eoi_truncated"),
    ("corrupt", "decode_routed_cpu_invalid_marker_in_scan"),
])
def test_sources_the_policy_keeps_off_the_device_decode_on_the_cpu(
    tmp_path: Path, plain: GpuBackend, kind: str, reason: str
) -> None:
    src = {"progressive": photo("progressive"), "cmyk": photo("cmyk"), "truncated": bad("truncated_dragonfly.jpg"),
           "corrupt": bad("corrupt_scan_dragonfly.jpg")}.get(kind) or icc_tagged(tmp_path)
    dec = StandInDecoder()
    backend = gpu_backend(dec, StandInEncoder())
    outcome: list[Any] = []
    try:
        for b in (backend, plain):
            try:
                outcome.append(run(service(b, tmp_path), "thumbnail", src, tmp_path / f"{kind}-{len(outcome)}"))
            except ImgworkerError as exc:
                outcome.append(exc.code)
        got, want = outcome
        assert dec.calls == []  # never reached the device decoder
        if isinstance(want, str):  # the CPU path fails it: the same code
            assert got == want, outcome
            assert kind in ("truncated", "corrupt")
            return
        assert isinstance(got, dict) and got["ms"][reason] == 1.0 and got["ms"]["decode_routed_cpu"] == 1.0, got
        assert agree(got, want, 99.0) == [99.0]  # the same CPU decode: the same pixels
    finally:
        backend.close()


def test_a_refused_decode_and_a_failing_encoder_fall_back_and_the_job_succeeds(
    tmp_path: Path, plain: GpuBackend
) -> None:
    want = run(service(plain, tmp_path), "thumbnail", photo("dragonfly"), tmp_path / "ref")
    refusing, failing = StandInDecoder(refuse=True), StandInEncoder(fail=True)
    backend = gpu_backend(refusing, failing)
    try:
        got = run(service(backend, tmp_path), "thumbnail", photo("dragonfly"), tmp_path / "dev")
    finally:
        backend.close()
    assert refusing.calls == [1] and len(failing.calls) == 1
    ms = got["ms"]
    assert ms["decode_gpu_refused"] == 1.0 and "decode_gpu" not in ms, ms
    assert ms["encode_gpu_failed"] == 1 and "encode_gpu_outputs" not in ms, ms
    # Both fell back to the CPU path: the very bytes the plain array path writes.
    assert Path(got["dst"].removeprefix("file://")).read_bytes() == Path(want["dst"].removeprefix("file://")).read_bytes()


def test_mozjpeg_and_max_bytes_jpegs_are_encoded_on_the_cpu(tmp_path: Path) -> None:
    enc = StandInEncoder()
    backend = gpu_backend(StandInDecoder(), enc)
    try:
        got = run(service(backend, tmp_path), "product_zoom", photo("baseline"), tmp_path / "zoom")
    finally:
        backend.close()
    assert enc.calls == [] and got["ms"]["encode_routed_cpu_mozjpeg"] == 1 and "decode_gpu" in got["ms"]
    assert "quality" in got["outputs"][0] and got["bytes"] <= 614400  # max_bytes' quality search, on the CPU
    data = Path(got["dst"].removeprefix("file://")).read_bytes()
    assert pyvips.Image.new_from_buffer(data, "").get("interlaced") == 1  # mozjpeg's progressive scans


SIZES = """
name: sizes
params:
  max_bytes: {default: 0, min: 0, max: 5000000}
steps:
  - auto_orient
outputs:
  - resize: {width: [200, 300, 400]}
    encode:
      - {format: jpeg, quality: 80}
      - {format: png}
  - resize: {width: 150}
    encode: {format: jpeg, quality: 70, max_bytes: $max_bytes}
"""


def test_a_jobs_jpeg_outputs_go_to_the_encoder_in_one_call(tmp_path: Path, plain: GpuBackend) -> None:
    pdir = tmp_path / "pipelines"
    pdir.mkdir()
    (pdir / "sizes.yaml").write_text(SIZES)
    enc = StandInEncoder()
    backend = gpu_backend(StandInDecoder(), enc)
    try:
        payload: dict[str, Any] = {"src": photo("exif6").as_uri(), "dst": f"{tmp_path.as_uri()}/dev/{{width}}.{{ext}}",
                   "max_bytes": 4000}
        got = service(backend, tmp_path, pdir).handle(json.dumps(payload).encode(), pipeline="sizes")
    finally:
        backend.close()
    want = service(plain, tmp_path, pdir).handle(json.dumps({**payload, "dst": payload["dst"].replace(
        "/dev/", "/ref/")}).encode(), pipeline="sizes")
    assert enc.calls == [[(150, 200, 80), (225, 300, 80), (300, 400, 80)]]  # displayed 1200x900: one call
    assert got["ms"]["encode_gpu_outputs"] == 3 and got["ms"]["encode_routed_cpu_max_bytes"] == 1
    agree(got, want)
    assert got["outputs"][-1]["quality"] == want["outputs"][-1]["quality"]


def test_an_encoder_without_progressive_falls_back_then_routes_progressive_jpegs_to_the_cpu(tmp_path: Path) -> None:
    enc = StandInEncoder(progressive_kw=False)
    backend = gpu_backend(StandInDecoder(), enc)
    try:
        svc = service(backend, tmp_path)
        first = run(svc, "thumbnail", photo("dragonfly"), tmp_path / "a")
        second = run(svc, "thumbnail", photo("dragonfly"), tmp_path / "b")
    finally:
        backend.close()
    assert first["ms"]["encode_gpu_failed"] == 1  # the keyword was a TypeError: libvips encoded it
    assert second["ms"]["encode_routed_cpu_progressive"] == 1 and "encode_gpu_failed" not in second["ms"]
    for r in (first, second):
        data = Path(r["dst"].removeprefix("file://")).read_bytes()
        assert pyvips.Image.new_from_buffer(data, "").get("interlaced") == 1


# --- on the GPU machine (benchmarks/gpu/pipelines_check.sh) --------------------------------------------------


@pytest.fixture(scope="module")
def cuda_backend() -> Iterator[GpuBackend]:
    from imgworker.backends.gpu import detect

    cp = detect.require_gpu()
    backend = GpuBackend(cp, max_batch=4, max_wait_ms=5.0, gpu_decode="always")
    yield backend
    backend.close()


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["baseline", "exif6", "progressive"])
def test_gpu_pipelines_decode_and_encode_on_the_device_like_the_cpu_worker(
    cuda_backend: GpuBackend, tmp_path: Path, kind: str
) -> None:
    assert cuda_backend.device_decoder is not None, "no nvImageCodec decoder on this GPU machine"
    svc, cpu = service(cuda_backend, tmp_path), service(CpuBackend(), tmp_path)
    for name in ("thumbnail", "web"):
        got = run(svc, name, photo(kind), tmp_path / f"gpu-{name}")
        want = run(cpu, name, photo(kind), tmp_path / f"cpu-{name}")
        agree(got, want)
        ms = got["ms"]
        assert ("decode_gpu" in ms) is (kind != "progressive"), ms
        if name == "thumbnail" and cuda_backend.device_encoder is not None:
            assert ms.get("encode_gpu_outputs") == 1 or ms.get("encode_routed_cpu_progressive") == 1, ms


@pytest.mark.gpu
def test_gpu_concurrent_pipeline_jobs_share_one_hardware_decode(cuda_backend: GpuBackend, tmp_path: Path) -> None:
    from imgworker.backends.gpu import detect

    batched = GpuBackend(detect.require_gpu(), max_batch=4, max_wait_ms=5000.0, gpu_decode="always")
    svc = service(batched, tmp_path)
    results = concurrently([lambda i=i: run(svc, "thumbnail", photo("baseline" if i % 2 else "dragonfly"),  # type: ignore[misc]
                                            tmp_path / str(i)) for i in range(4)])
    batched.close()
    assert all(isinstance(r, dict) and r["ms"]["decode_gpu_batch_size"] == 4 for r in results), results


AUTO = """
name: auto
steps:
  - auto_orient
outputs:
  - resize: {width: 400}
    encode:
      - {format: jpeg, quality: auto}
      - {format: jpeg, quality: 80}
"""


def test_auto_quality_jpegs_are_searched_on_the_cpu_like_a_cpu_workers(tmp_path: Path) -> None:
    """quality: auto's probes use libvips' encoder on the host copy (the same search a cpu worker runs on its
    pixels, which the array resize matches to > 40 dB); the fixed-quality JPEG beside it still goes to the
    device encoder."""
    pdir = tmp_path / "pipelines"
    pdir.mkdir()
    (pdir / "auto.yaml").write_text(AUTO)
    enc = StandInEncoder()
    backend = gpu_backend(StandInDecoder(), enc)

    def auto_job(svc: Service, out: str) -> dict[str, Any]:
        payload = {"src": photo("dragonfly").as_uri(), "dst": f"{tmp_path.as_uri()}/{out}-{{index}}.jpg"}
        return svc.handle(json.dumps(payload).encode(), pipeline="auto")

    try:
        got = auto_job(service(backend, tmp_path, pdir), "gpu")
    finally:
        backend.close()
    want = auto_job(service(CpuBackend(), tmp_path, pdir), "cpu")
    auto, fixed = got["outputs"]
    assert got["ms"]["encode_routed_cpu_auto_quality"] == 1 and got["ms"]["encode_gpu_outputs"] == 1
    assert [q for call in enc.calls for _, _, q in call] == [80]  # only the fixed-quality output
    assert {"quality", "score", "probes", "auto", "target"} <= set(auto) and "quality" not in fixed
    assert auto["score"] >= 75 and abs(auto["quality"] - want["outputs"][0]["quality"]) <= 3


def test_auto_quality_resize_jobs_on_the_gpu_backend_search_the_host_copy(plain: GpuBackend) -> None:
    from imgworker.core.contract import parse_resize

    spec = parse_resize({"width": 400, "quality": "auto"}, "x.jpg", Limits())
    source = photo("dragonfly").read_bytes()
    got, want = plain.resize(source, spec, Limits()), CpuBackend().resize(source, spec, Limits())
    assert got.fields["score"] >= 75 and got.fields["auto"] == "auto" and "encode_gpu" not in got.timings
    assert abs(got.fields["quality"] - want.fields["quality"]) <= 3


@pytest.mark.gpu
def test_auto_quality_resize_gpu_chooses_like_the_cpu_worker(cuda_backend: GpuBackend) -> None:
    """On the device: the resize runs on the GPU, the search on the host copy with libvips (never nvJPEG)."""
    from imgworker.core.contract import parse_resize

    source = photo("baseline").read_bytes()
    for quality, floor in (("auto", 75.0), ("auto:best", 85.0)):
        spec = parse_resize({"width": 512, "quality": quality}, "x.jpg", Limits())
        got, want = cuda_backend.resize(source, spec, Limits()), CpuBackend().resize(source, spec, Limits())
        assert got.fields["score"] >= floor and "encode_gpu" not in got.timings, got.timings
        assert abs(got.fields["quality"] - want.fields["quality"]) <= 3
