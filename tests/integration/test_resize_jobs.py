"""Resize jobs end to end: Python client -> real gearmand -> real worker process -> file store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms
from support.corpus import BAD, PHOTOS, photo

from imgworker.core.errors import (
    BadRequest,
    DecodeFailed,
    ForbiddenPath,
    ImgworkerError,
    LimitExceeded,
    SourceNotFound,
    StoreFailed,
    UnsupportedImage,
)

EXPECTED_512 = {
    photo("rgb16").name: (512, 288),
    photo("cmyk").name: (512, 288),
    photo("dragonfly").name: (512, 384),
    photo("png_named_jpg").name: (512, 384),
    photo("exif6").name: (512, 384),  # displayed landscape, stored portrait
    photo("baseline").name: (512, 288),
    photo("progressive").name: (512, 288),
    photo("rgba").name: (512, 342),
    photo("webp").name: (512, 341),
}


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_corpus_photo_resizes(py_client: Any, core_root: Path) -> None:
    assert sorted(p.name for p in PHOTOS.iterdir() if p.suffix != ".md") == sorted(EXPECTED_512)
    for name, (w, h) in EXPECTED_512.items():
        src = PHOTOS / name
        before = sha(src)
        dst = core_root / "out" / f"{src.stem}.jpg"
        result = py_client.resize(src=src.as_uri(), dst=dst.as_uri(), width=512, height=512)
        assert (result.width, result.height) == (w, h), name
        assert result.format == "jpeg" and result.backend == "cpu" and result.ok is True
        assert result.bytes == dst.stat().st_size
        assert set(result.ms) >= {"read", "decode", "encode", "write", "total"}
        with Image.open(dst) as out:
            assert out.format == "JPEG" and out.size == (w, h) and out.mode == "RGB"
            # Metadata is stripped by default: no EXIF, no ICC profile.
            assert not out.info.get("exif") and not out.info.get("icc_profile")
        assert sha(src) == before, f"source {name} was modified"


def test_exif_orientation_is_applied(py_client: Any, core_root: Path) -> None:
    out = core_root / "out"
    py_client.resize(
        src=photo("dragonfly").as_uri(), dst=(out / "ref.png").as_uri(), width=256
    )
    py_client.resize(
        src=photo("exif6").as_uri(), dst=(out / "rot.png").as_uri(), width=256
    )
    ref, rot = rgb(out / "ref.png"), rgb(out / "rot.png")
    assert ref.shape == rot.shape == (192, 256, 3)
    # Same picture the right way up: close to the upright original, far from it turned the other way.
    assert psnr(ref, rot) > 30
    assert psnr(np.rot90(ref, 2), rot) < 20


def test_cmyk_is_colour_managed_to_srgb(py_client: Any, core_root: Path) -> None:
    src = photo("cmyk")
    dst = core_root / "out" / "cmyk.png"
    py_client.resize(src=src.as_uri(), dst=dst.as_uri(), width=256, height=144, fit="fill")
    # Reference computed another way: Pillow + LittleCMS with the embedded CMYK profile, relative colorimetric
    # (the intent the CPU backend uses: docs/performance.md, the CMYK row).
    with Image.open(src) as im:
        assert im.mode == "CMYK"
        profile = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        small = im.resize((256, 144), Image.Resampling.LANCZOS)

        def managed(intent: ImageCms.Intent) -> np.ndarray:
            out = ImageCms.profileToProfile(small, profile, ImageCms.createProfile("sRGB"), outputMode="RGB",
                                            renderingIntent=intent)
            return np.asarray(out, dtype=np.float64)

        expected = managed(ImageCms.Intent.RELATIVE_COLORIMETRIC)
        # Controls: the same profile with another intent, and a naive CMYK->RGB without the profile.
        controls = {"perceptual": managed(ImageCms.Intent.PERCEPTUAL),
                    "absolute": managed(ImageCms.Intent.ABSOLUTE_COLORIMETRIC),
                    "naive": np.asarray(small.convert("RGB"), dtype=np.float64)}
    got = rgb(dst)
    # Measured 44.1 dB (the resampling differs a little); the controls measure 39.4, 31.3 and 20.1 dB.
    assert psnr(got, expected) > 42, psnr(got, expected)
    for name, control in controls.items():
        assert psnr(control, expected) < 42, (name, psnr(control, expected))


def test_16bit_png_comes_out_8bit_and_right(py_client: Any, core_root: Path) -> None:
    src = photo("rgb16")
    dst = core_root / "out" / "rgb16.png"
    py_client.resize(src=src.as_uri(), dst=dst.as_uri(), width=512)
    with Image.open(dst) as out:
        assert out.mode == "RGB" and out.size == (512, 288)
    ref = np.asarray(Image.open(src).convert("RGB").resize((512, 288), Image.Resampling.LANCZOS), dtype=np.float64)
    assert psnr(rgb(dst), ref) > 28


def test_alpha_kept_for_png_and_flattened_on_white_for_jpeg(py_client: Any, core_root: Path) -> None:
    src = photo("rgba")
    png, jpg = core_root / "out" / "alpha.png", core_root / "out" / "alpha.jpg"
    py_client.resize(src=src.as_uri(), dst=png.as_uri(), width=400)
    py_client.resize(src=src.as_uri(), dst=jpg.as_uri(), width=400)
    with Image.open(src) as im:
        alpha_src = np.asarray(im.getchannel("A").resize((400, 267)))
    with Image.open(png) as out:
        assert out.mode == "RGBA"
        alpha = np.asarray(out.getchannel("A"), dtype=np.float64)
    assert np.abs(alpha - alpha_src).mean() < 3
    transparent = alpha_src == 0
    assert transparent.any()
    flat = rgb(jpg)
    assert flat[transparent].mean() > 245, "transparent areas must be white in JPEG, not black"


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"width": 300, "height": 300, "fit": "inside"}, (300, 169)),
        ({"width": 300, "height": 300, "fit": "cover"}, (300, 300)),
        ({"width": 300, "height": 300, "fit": "contain"}, (300, 300)),
        ({"width": 300, "height": 300, "fit": "fill"}, (300, 300)),
        ({"width": 300, "height": 300, "fit": "outside"}, (533, 300)),
        ({"height": 100}, (178, 100)),
        ({"width": 1000, "format": "webp"}, (1000, 562)),
        ({"width": 64, "format": "avif", "quality": 40}, (64, 36)),
    ],
)
def test_fit_modes_and_formats(py_client: Any, core_root: Path, params: dict[str, Any], size: tuple[int, int]) -> None:
    src = photo("baseline")
    fmt = params.get("format", "png")
    dst = core_root / "out" / f"fit_{'_'.join(map(str, params.values()))}.{'png' if fmt == 'png' else fmt}"
    result = py_client.resize(src=src.as_uri(), dst=dst.as_uri(), **({"format": "png"} | params))
    assert (result.width, result.height) == size
    assert result.format == fmt
    head = dst.read_bytes()[:16]
    magic = {"png": b"\x89PNG", "webp": b"RIFF", "avif": b"\x00\x00\x00"}[fmt]
    assert head.startswith(magic)
    if fmt == "png":
        with Image.open(dst) as out:
            assert out.size == size
            if params.get("fit") == "contain":
                # Letterboxed with the white background above and below the picture.
                assert out.convert("RGB").getpixel((150, 2)) == (255, 255, 255)


BAD_CASES = {
    "empty.jpg": UnsupportedImage,
    "text_named.jpg": UnsupportedImage,
    "truncated_dragonfly.jpg": DecodeFailed,
    "corrupt_scan_dragonfly.jpg": DecodeFailed,
    "bomb_100000x100000_1bit.png": LimitExceeded,
    "bomb_100000x100000_truncated.png": LimitExceeded,
}


def test_bad_files_fail_with_their_code_quickly_and_worker_keeps_serving(py_client: Any, core_root: Path) -> None:
    assert sorted(p.name for p in BAD.iterdir()) == sorted(BAD_CASES)
    for name, error in BAD_CASES.items():
        dst = core_root / "out" / f"bad_{name}.jpg"
        # Its own code, not TIMEOUT: refused by its check, not by the job's time limit.
        with pytest.raises(error) as info:
            py_client.resize(src=(BAD / name).as_uri(), dst=dst.as_uri(), width=256)
        assert info.value.message and info.value.retryable is False
        assert not dst.exists(), "a failed job must leave no destination"
        assert not list(dst.parent.glob(f".{dst.name}*")), "no temporary file left behind"
        # The worker serves the next job.
        ok = py_client.resize(
            src=photo("png_named_jpg").as_uri(),
            dst=(core_root / "out" / "next.jpg").as_uri(),
            width=64,
        )
        assert ok.width == 64


def test_request_errors_name_the_problem(py_client: Any, core_root: Path) -> None:
    src, dst = photo("png_named_jpg").as_uri(), (core_root / "out" / "e.jpg").as_uri()
    cases: list[tuple[dict[str, Any], type[ImgworkerError], str]] = [
        ({"src": src, "dst": dst, "widht": 10}, BadRequest, "did you mean 'width'"),
        ({"src": src, "dst": dst, "width": 0}, BadRequest, "'width' must be an integer from 1 to"),
        ({"src": src, "dst": dst, "width": 100, "fit": "stretch"}, BadRequest, "inside, cover, contain, fill, outside"),
        ({"src": src, "dst": dst, "width": 100, "quality": 101}, BadRequest,
         "'quality' must be an integer from 1 to 100"),
        ({"src": src, "dst": dst}, BadRequest, "give 'width', 'height' or both"),
        ({"dst": dst, "width": 10}, BadRequest, "'src' is required"),
        ({"src": src, "dst": dst[:-4] + ".bmp", "width": 10}, BadRequest, "cannot tell the output format"),
        ({"src": src, "dst": dst, "width": 10, "pipeline": "nope"}, BadRequest, "unknown pipeline 'nope'"),
        ({"src": "http://169.254.169.254/x.jpg", "dst": dst, "width": 10}, ForbiddenPath, "not allowed"),
        ({"src": "file:///etc/passwd", "dst": dst, "width": 10}, ForbiddenPath, "outside the allowed roots"),
        ({"src": src, "dst": "file:///tmp/../etc/x.jpg", "width": 10}, ForbiddenPath, "outside the allowed roots"),
        (
            {"src": (core_root / "in" / "missing.jpg").as_uri(), "dst": dst, "width": 10},
            SourceNotFound,
            "does not exist",
        ),
    ]
    for payload, error, text in cases:
        with pytest.raises(error) as info:
            py_client.run("resize", payload)
        assert text in info.value.message, (payload, info.value.message)


def test_symlink_escaping_a_root_is_forbidden(py_client: Any, core_root: Path) -> None:
    link = core_root / "in" / "escape.jpg"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/hostname")
    with pytest.raises(ForbiddenPath):
        py_client.resize(src=link.as_uri(), dst=(core_root / "out" / "x.jpg").as_uri(), width=10)
    dir_link = core_root / "out" / "escape_dir"
    if not dir_link.exists():
        dir_link.symlink_to("/tmp")
    with pytest.raises(ForbiddenPath):
        py_client.resize(
            src=photo("png_named_jpg").as_uri(), dst=(dir_link / "x.jpg").as_uri(), width=10
        )


def test_unwritable_destination_is_store_failed(py_client: Any, core_root: Path) -> None:
    blocker = core_root / "out" / "a_file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(StoreFailed) as info:
        py_client.resize(
            src=photo("png_named_jpg").as_uri(), dst=(blocker / "x.jpg").as_uri(), width=10
        )
    assert "cannot write" in info.value.message or "not writable" in info.value.message
    assert blocker.read_bytes() == b"not a directory"


def test_missing_destination_directories_are_created(py_client: Any, core_root: Path) -> None:
    dst = core_root / "out" / "deep" / "er" / "x.webp"
    py_client.resize(src=photo("png_named_jpg").as_uri(), dst=dst.as_uri(), width=20)
    assert dst.read_bytes()[:4] == b"RIFF"


def test_huge_output_from_tiny_source_is_refused(py_client: Any, core_root: Path) -> None:
    tiny = core_root / "in" / "one.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tiny)
    with pytest.raises(BadRequest):  # over the per-side limit in the contract
        py_client.resize(src=tiny.as_uri(), dst=(core_root / "out" / "big.jpg").as_uri(), width=100000, height=100000)
    with pytest.raises(LimitExceeded):  # within each side, but too many pixels
        py_client.resize(
            src=tiny.as_uri(), dst=(core_root / "out" / "big.jpg").as_uri(), width=16000, height=16000, fit="fill"
        )


def test_id_is_echoed_in_successes_and_failures_with_its_type(
    py_client: Any, core_worker: Any, core_root: Path
) -> None:
    import json
    import subprocess

    src = photo("png_named_jpg").as_uri()
    ok = py_client.resize(src=src, dst=(core_root / "out" / "id.jpg").as_uri(), width=16, id=42)
    assert ok.id == 42
    # A failed job's raw result carries the id too: it is what PHP, Perl and the CLI read.
    host, _, port = core_worker.servers[0].rpartition(":")
    payload = json.dumps({"src": src + ".missing", "dst": (core_root / "out" / "id.jpg").as_uri(), "width": 16,
                          "id": "job-7"})
    out = subprocess.run(["gearman", "-h", host, "-p", port, "-f", "resize", payload], capture_output=True,
                         text=True, timeout=60)
    result = json.loads(out.stdout)
    assert result["ok"] is False and result["error"]["code"] == "SOURCE_NOT_FOUND" and result["id"] == "job-7"


def test_destination_that_is_the_source_is_refused(py_client: Any, core_root: Path) -> None:
    src = core_root / "in" / "self.jpg"
    src.write_bytes(photo("dragonfly").read_bytes())
    before = sha(src)
    for dst in (src.as_uri(), (core_root / "in" / "." / "self.jpg").as_uri()):
        with pytest.raises(BadRequest, match="is the source itself"):
            py_client.resize(src=src.as_uri(), dst=dst, width=16)
    assert sha(src) == before
