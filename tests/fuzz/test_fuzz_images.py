"""Fuzzing image bytes: mutated files (truncation, bit flips, size fields that lie, wrong magic) through
Service.handle with the real CpuBackend and FileStore, and a sample through a real worker process. Every job
ends ok with a whole image, or with a documented error code (never INTERNAL), within a time bound; the worker
survives in bounded memory and serves the next job."""

from __future__ import annotations

import json
import random
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pyvips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.corpus import BAD, photo
from support.fixtures_reliability import NamedWorker
from support.fuzzing import examples

from imgworker.backends.cpu import CpuBackend
from imgworker.core.errors import ERROR_CODES, ImgworkerError
from imgworker.core.limits import Limits
from imgworker.gearman import SyncClient
from imgworker.jobs.service import Service
from imgworker.stores import FileStore, Stores
from imgworker.testing.gearmand import Gearmand

CASE_SECONDS = 20.0  # generous: the 2-core CI box is shared; a decode that hangs takes far longer
WORKER_RSS_LIMIT_MIB = 1024
BAD_FILES = sorted(BAD.iterdir())


def _seeds(directory: Path) -> dict[str, bytes]:
    """Small valid files of every decoded format, made from a corpus photo (fast to fuzz)."""
    small = pyvips.Image.thumbnail(str(photo("rgba")), 120).copy_memory()
    rgb = small.flatten()
    seeds = {
        "jpeg": bytes(rgb.jpegsave_buffer(Q=80)),
        "progressive.jpeg": bytes(rgb.jpegsave_buffer(Q=80, interlace=True)),
        "png": bytes(small.pngsave_buffer()),
        "webp": bytes(small.webpsave_buffer(Q=70)),
        "gif": bytes(rgb.gifsave_buffer()),
        "tiff": bytes(rgb.tiffsave_buffer()),
        "avif": bytes(rgb.heifsave_buffer(compression="av1", Q=40, effort=0)),
    }
    for name, data in seeds.items():
        (directory / f"seed.{name}").write_bytes(data)
    return seeds


def lie_about_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the declared size in a PNG IHDR or a JPEG SOF header (the pixels stay as they were)."""
    out = bytearray(data)
    if data.startswith(b"\x89PNG"):
        out[16:24] = struct.pack(">II", width, height)
        return bytes(out)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            out[at + 5 : at + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
            return bytes(out)
    return bytes(out)


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"II*\x00", b"BM", b"%PDF-"]


def mutate(data: bytes, rng: random.Random, kind: str) -> bytes:
    if kind == "truncate":
        return data[: rng.randrange(0, len(data))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 32)):
            pos = rng.randrange(len(out))
            out[pos] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "lie":
        return lie_about_size(data, rng.choice([0, 1, 65535, 100_000, 2**31 - 1]), rng.choice([0, 1, 65535, 100_000]))
    if kind == "magic":
        magic = rng.choice(MAGICS)
        return magic + data[len(magic) :]
    if kind == "splice":  # a chunk of the file repeated somewhere else
        a, b = sorted(rng.randrange(len(data)) for _ in range(2))
        at = rng.randrange(len(data))
        return data[:at] + data[a:b] * rng.randint(1, 8) + data[at:]
    raise ValueError(kind)


KINDS = ["truncate", "flip", "lie", "magic", "splice"]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("fuzzroot")
    return root, _seeds(root)


def run_case(service: Service, root: Path, data: bytes, name: str, width: int = 64) -> dict[str, object]:
    src = root / "in" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    dst = root / "out" / f"{name}.png"
    dst.unlink(missing_ok=True)
    payload = json.dumps({"src": src.as_uri(), "dst": dst.as_uri(), "width": width}).encode()
    started = time.monotonic()
    try:
        result = service.handle(payload)
    except ImgworkerError as exc:
        assert exc.code in ERROR_CODES and exc.code != "INTERNAL", repr(exc)
        assert not dst.exists(), "a failed job must not leave a destination"
        result = {"ok": False, "code": exc.code}
    else:
        out = pyvips.Image.new_from_file(str(dst), fail_on="warning")
        assert out.width == result["width"] and out.avg() >= 0  # a whole image
    assert time.monotonic() - started < CASE_SECONDS
    assert src.read_bytes() == data, "the source must never be modified"
    return result


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(seed=st.sampled_from(["jpeg", "progressive.jpeg", "png", "webp", "gif", "tiff", "avif"]),
       kind=st.sampled_from(KINDS), rnd=st.randoms(use_true_random=False))
def test_mutated_images_through_the_service(fuzz_root: tuple[Path, dict[str, bytes]], seed: str, kind: str,
                                            rnd: random.Random) -> None:
    root, seeds = fuzz_root
    service = Service(Stores({"file": FileStore([root])}), CpuBackend(), Limits())
    run_case(service, root, mutate(seeds[seed], rnd, kind), f"case.{seed}")


@pytest.mark.parametrize("bad", BAD_FILES, ids=[p.name for p in BAD_FILES])
def test_corpus_bad_files_end_in_their_documented_codes(fuzz_root: tuple[Path, dict[str, bytes]], bad: Path) -> None:
    root, _ = fuzz_root
    service = Service(Stores({"file": FileStore([root])}), CpuBackend(), Limits())
    expected = {
        "empty.jpg": "UNSUPPORTED_IMAGE",
        "text_named.jpg": "UNSUPPORTED_IMAGE",
        "truncated_dragonfly.jpg": "DECODE_FAILED",
        "corrupt_scan_dragonfly.jpg": "DECODE_FAILED",
        "bomb_100000x100000_1bit.png": "LIMIT_EXCEEDED",
        "bomb_100000x100000_truncated.png": "LIMIT_EXCEEDED",
    }[bad.name]
    result = run_case(service, root, bad.read_bytes(), bad.name)
    assert result == {"ok": False, "code": expected}


@pytest.fixture
def server() -> Iterator[Gearmand]:
    with Gearmand() as g:
        yield g


def test_a_sample_through_the_real_worker(server: Gearmand, worker_factory: Callable[..., NamedWorker],
                                          fuzz_root: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    """Mutants and the corpus bad files through a worker process: every job answers with a documented code,
    the worker stays up in bounded memory, and a good job after them succeeds."""
    _, seeds = fuzz_root
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    rng = random.Random(7)
    files: list[Path] = []
    for k in range(40):
        seed = rng.choice(sorted(seeds))
        path = root / "in" / f"m{k}.{seed}"
        path.write_bytes(mutate(seeds[seed], rng, KINDS[k % len(KINDS)]))
        files.append(path)
    for bad in BAD_FILES:
        files.append(root / "in" / bad.name)
        files[-1].write_bytes(bad.read_bytes())
    good = root / "in" / "good.jpeg"
    good.write_bytes(seeds["jpeg"])
    w = worker_factory([server.address], [root], concurrency=2).wait_ready()
    codes: dict[str, int] = {}
    with SyncClient([server.address]) as client:
        for path in [*files, good]:
            body = client.submit(
                "resize", json.dumps({"src": path.as_uri(), "dst": (root / "out" / f"{path.name}.png").as_uri(),
                                      "width": 64}).encode(), timeout=60)
            result = json.loads(body)
            code = "ok" if result["ok"] else result["error"]["code"]
            assert code == "ok" or (code in ERROR_CODES and code != "INTERNAL"), result
            codes[code] = codes.get(code, 0) + 1
        assert code == "ok", "the good job after the hostile ones must succeed"
    assert w.alive() and "Traceback" not in w.log()
    assert w.sample_rss() < WORKER_RSS_LIMIT_MIB * 1024, f"worker peak RSS {w.sample_rss() // 1024} MiB"
    assert len(codes) >= 3, codes  # the sample exercised several failure paths, not one


def test_error_codes_do_not_depend_on_other_threads_failing_at_the_same_time() -> None:
    """libvips keeps one process-wide error buffer: with jobs failing in several threads at once, a code
    derived from that buffer flipped between UNSUPPORTED_IMAGE and DECODE_FAILED (found by the soak)."""
    import threading
    from collections import Counter

    from imgworker.imaging.probe import probe

    codes: Counter[str] = Counter()

    def run() -> None:
        for _ in range(1500):
            try:
                probe(b"not an image\n", Limits())
            except ImgworkerError as exc:
                codes[exc.code] += 1

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == Counter({"UNSUPPORTED_IMAGE": 6000})
