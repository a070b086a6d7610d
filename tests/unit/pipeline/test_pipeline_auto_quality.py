"""``quality: auto`` where users write it: resize job payloads (core/contract.py), pipeline YAML (encode options
and ``type: quality`` parameters, checked at load with file:line) and pipeline jobs (the encode step: result
fields, ``max_bytes`` winning over the target, the memory budget). The search itself: tests/unit/imaging."""

from __future__ import annotations

import textwrap
import time

import pytest
import pyvips
from support.corpus import photo

from imgworker.core import budget
from imgworker.core.contract import parse_request
from imgworker.core.errors import BadRequest, LimitExceeded
from imgworker.core.limits import Limits
from imgworker.core.quality import AutoQuality
from imgworker.imaging.quality import ssimulacra2
from imgworker.pipeline import PipelineError, parse


def resize_job(**keys: object) -> bytes:
    import json

    return json.dumps({"src": "file:///in/a.jpg", "dst": "file:///out/a.jpg", "width": 64, **keys}).encode()


@pytest.mark.parametrize(("given", "target", "name"), [
    ("auto", 75.0, "auto"), ("auto:eco", 65.0, "auto:eco"), ("auto:best", 85.0, "auto:best"),
    ("AUTO:Best", 85.0, "auto:best"), ("auto:80", 80.0, "auto:80"), ("auto:72.5", 72.5, "auto:72.5"),
])
def test_resize_jobs_take_auto_tiers_and_targets(given: str, target: float, name: str) -> None:
    spec = parse_request(resize_job(quality=given), Limits()).resize
    assert spec is not None and spec.quality == AutoQuality(target, name)


@pytest.mark.parametrize(("keys", "message"), [
    ({"quality": "atuo"}, "'quality' must be an integer from 1 to 100, or \"auto\", .* got 'atuo' "
                          r"\(did you mean 'auto'\?\)"),
    ({"quality": "auto:99"}, r"N: a SSIMULACRA2 score from 30 to 95\), got 'auto:99'"),
    ({"quality": "auto:eco2"}, "got 'auto:eco2'"),
    ({"quality": "auto", "format": "png"}, "'quality' 'auto' works for jpeg, webp, avif; png is lossless"),
])
def test_bad_auto_settings_are_refused_with_the_fix(keys: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_request(resize_job(**keys), Limits())


YAML = """\
name: t
params:
  quality: {default: auto, description: a number or auto}
  format: {default: jpeg, choices: [jpeg, png, webp, avif]}
  width: {default: 256}
steps:
  - resize: {width: $width}
outputs:
  - encode: {format: $format, quality: $quality}
"""


def test_a_parameter_defaulting_to_auto_takes_numbers_and_tiers_from_jobs() -> None:
    p = parse("p.yaml", YAML)
    assert p.params["quality"].default == AutoQuality(75.0, "auto")
    assert p.resolve_params({"quality": 60})[0]["quality"] == 60
    assert p.resolve_params({"quality": "auto:best"})[0]["quality"] == AutoQuality(85.0, "auto:best")
    with pytest.raises(BadRequest, match="'quality' must be an integer from 1 to 100, or \"auto\""):
        p.resolve_params({"quality": "best"})


@pytest.mark.parametrize(("text", "expected"), [
    ("name: t\noutputs:\n  - encode: {format: png, quality: auto}\n",
     "p.yaml:3: encode: 'quality' 'auto' works for jpeg, webp, avif; png is lossless"),
    ("name: t\noutputs:\n  - encode: {format: webp, quality: auto, lossless: true}\n",
     "p.yaml:3: encode: 'quality' 'auto' searches lossy qualities: it cannot go with lossless: true"),
    ("name: t\noutputs:\n  - encode: {format: jpeg, quality: auto:bset}\n",
     "p.yaml:3: encode quality must be an integer from 1 to 100, or \"auto\""),
    ("name: t\nparams:\n  q: {default: auto}\n  f: {default: png}\noutputs:\n  - encode: {format: $f, quality: $q}\n",
     "p.yaml:6: encode: 'quality' 'auto' works for jpeg, webp, avif; png is lossless"),
])
def test_the_loader_refuses_auto_where_it_cannot_work(text: str, expected: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse("p.yaml", textwrap.dedent(text))
    assert any(str(p).startswith(expected) for p in info.value.problems), [str(p) for p in info.value.problems]


def scored(path: str, width: int, reference_of: str) -> float:
    """The output's SSIMULACRA2 against a lossless PNG of the same pipeline (the pixels before encoding)."""
    out = pyvips.Image.new_from_file(path)
    ref = pyvips.Image.new_from_file(reference_of)
    assert (out.width, out.height) == (ref.width, ref.height) and out.width == width
    return ssimulacra2.ssimulacra2(ref.numpy(), out.numpy())


# WebP at 512 px: lossy WebP's 4:2:0 chroma tops out at 64 on this photo at 256 px (89 at 512 px).
@pytest.mark.parametrize(("fmt", "width"), [("jpeg", 256), ("webp", 512), ("avif", 256)])
def test_pipeline_outputs_report_and_meet_their_target(run_pipeline, tmp_path, fmt: str, width: int) -> None:
    r = run_pipeline(YAML, photo("dragonfly").name, f"o.{fmt}", format=fmt, width=width)
    out = r["outputs"][0]
    assert set(out) >= {"quality", "score", "probes", "auto", "target"} and "limited_by" not in out
    assert out["auto"] == "auto" and out["target"] == 75.0 and out["score"] >= 75.0 and 1 <= out["probes"] <= 8
    run_pipeline(YAML, photo("dragonfly").name, "ref.png", format="png", quality=100, width=width)
    assert scored(str(tmp_path / f"o.{fmt}"), width, str(tmp_path / "ref.png")) == pytest.approx(out["score"],
                                                                                                   abs=0.01)


def test_max_bytes_wins_over_the_target_and_the_result_says_so(run_pipeline, tmp_path) -> None:
    free = run_pipeline(YAML, photo("baseline").name, "free.jpg", quality="auto:best")["outputs"][0]
    cap = free["bytes"] * 2 // 3
    text = YAML.replace("quality: $quality}", f"quality: $quality, max_bytes: {cap}}}")
    out = run_pipeline(text, photo("baseline").name, "capped.jpg", quality="auto:best")["outputs"][0]
    assert out["limited_by"] == "max_bytes" and out["bytes"] <= cap == cap
    assert (tmp_path / "capped.jpg").stat().st_size == out["bytes"]
    assert out["quality"] < free["quality"] and out["score"] < free["score"]
    # The score reported is the capped file's own.
    run_pipeline(YAML, photo("baseline").name, "ref.png", format="png", quality=100)
    assert scored(str(tmp_path / "capped.jpg"), 256, str(tmp_path / "ref.png")) == pytest.approx(out["score"],
                                                                                                  abs=0.01)
    # A cap under what min_quality gives: LIMIT_EXCEEDED and nothing written, as without auto.
    with pytest.raises(LimitExceeded, match="does not fit max_bytes 300"):
        run_pipeline(YAML.replace("quality: $quality}", "quality: $quality, max_bytes: 300}"),
                     photo("baseline").name, "none.jpg")
    assert not (tmp_path / "none.jpg").exists()


def test_a_job_override_of_the_format_is_checked_before_any_work(run_pipeline, tmp_path, monkeypatch) -> None:
    from imgworker.pipeline import decode

    def no_decode(*args: object, **kw: object) -> None:
        raise AssertionError("the source was decoded")

    monkeypatch.setattr(decode, "decode", no_decode)
    with pytest.raises(BadRequest, match="png is lossless"):
        run_pipeline(YAML, photo("dragonfly").name, "o.png", format="png")
    assert not (tmp_path / "o.png").exists()


def test_the_search_is_charged_to_the_memory_budget(run_pipeline, monkeypatch) -> None:
    """A budget too small for the search's planes refuses the job with LIMIT_EXCEEDED (fixed quality fits)."""
    small = budget.Budget(40 * budget.MIB, "test")
    monkeypatch.setattr(budget, "_BUDGET", small)
    run_pipeline(YAML, photo("dragonfly").name, "fixed.jpg", quality=80)
    with pytest.raises(LimitExceeded, match="memory budget"):
        run_pipeline(YAML, photo("dragonfly").name, "auto.jpg", width=1024)


def slow_save(monkeypatch: pytest.MonkeyPatch, module: object, seconds: float) -> list[int]:
    """Every encode of ``module`` takes ``seconds`` longer; the qualities encoded are recorded."""
    real = module.save  # type: ignore[attr-defined]
    calls: list[int] = []

    def slow(image: object, o: object, quality: int, keep: int) -> bytes:
        calls.append(quality)
        time.sleep(seconds)
        return real(image, o, quality, keep)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, "save", slow)
    return calls


def test_resize_job_probes_stop_at_the_job_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgworker.backends import cpu
    from imgworker.core.contract import ResizeSpec
    from imgworker.core.errors import JobTimeout
    from imgworker.imaging import encode

    calls = slow_save(monkeypatch, encode, 0.4)
    spec = ResizeSpec(width=256, quality=AutoQuality(75.0, "auto"))
    with pytest.raises(JobTimeout, match="before encode"):
        cpu.CpuBackend().resize(photo("dragonfly").read_bytes(), spec, Limits(job_timeout_s=1.0))
    assert 1 <= len(calls) <= 3  # a full search takes 3-4 probes here: the deadline stopped it


def test_pipeline_probes_stop_at_the_pipelines_timeout(run_pipeline, tmp_path, monkeypatch) -> None:
    from imgworker.core.errors import JobTimeout
    from imgworker.pipeline.steps import encode

    calls = slow_save(monkeypatch, encode, 0.4)
    with pytest.raises(JobTimeout, match="before encode"):
        run_pipeline("timeout: 1\n" + YAML, photo("dragonfly").name, "t.jpg")
    assert 1 <= len(calls) <= 3 and not (tmp_path / "t.jpg").exists()


def test_an_animation_is_searched_over_all_its_frames(run_pipeline, tmp_path) -> None:
    """An animated WebP output is probed and scored as its whole frame strip (source: a lossless animated WebP;
    a dithered GIF's noise keeps lossy WebP under 40 even at quality 100)."""
    frames = [pyvips.Image.thumbnail(str(photo("dragonfly")), 320).crop(0, 0, 320, 240).linear(1, 12 * i)
              .cast("uchar").copy_memory() for i in range(3)]  # >= 225 px: all six scales (see docs/contract.md)
    strip = pyvips.Image.arrayjoin(frames, across=1).copy_memory()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 240)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * 3)
    strip.webpsave(str(tmp_path / "anim.webp"), lossless=True)
    text = "name: t\noutputs:\n  - encode: {format: webp, quality: auto:eco}\n"
    out = run_pipeline(text, tmp_path / "anim.webp", "out.webp")["outputs"][0]
    written = pyvips.Image.new_from_file(str(tmp_path / "out.webp"), n=-1)
    assert written.get("n-pages") == 3 and out["score"] >= 65 and "limited_by" not in out, out


def test_the_shipped_thumbnail_pipeline_takes_auto_from_a_job(run_pipeline, tmp_path) -> None:
    from support.fixtures_pipeline import PIPELINES_DIR

    text = (PIPELINES_DIR / "thumbnail.yaml").read_text()
    out = run_pipeline(text, photo("dragonfly").name, "t.webp", format="webp", width=512, quality="auto")["outputs"][0]
    assert out["auto"] == "auto" and out["score"] >= 75
    with pytest.raises(BadRequest, match="'quality' must be an integer from 30 to 95, or \"auto\""):
        run_pipeline(text, photo("dragonfly").name, "t.jpg", quality=20)
