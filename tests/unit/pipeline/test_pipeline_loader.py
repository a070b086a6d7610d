"""Validation at load time: every problem names the file, the line and the fix; `pipelines check` exits 0/1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imgworker.core.errors import BadRequest
from imgworker.pipeline import PipelineError, PipelineSet, load_dir, parse

OK = """\
name: t
params:
  width: {default: 320, min: 16, max: 2048}
  quality: {default: 80, min: 30, max: 95, override: false}
steps:
  - resize: {width: $width}
outputs:
  - encode: {format: jpeg, quality: $quality}
"""


def problems(text: str, path: str = "p.yaml") -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse(path, textwrap.dedent(text))
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: t\nsteps:\n  - resise: {width: 3}\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: unknown step 'resise' (did you mean 'resize'?)"),
        ("name: t\nsteps:\n  - blur: {sigm: 2}\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: blur options: unknown key 'sigm' (did you mean 'sigma'?); allowed: sigma"),
        ("name: t\nsteps:\n  - resize:\n      width: wide\noutputs: [{encode: jpeg}]\n",
         "p.yaml:4: resize width must be an integer from 1 to 16384, got 'wide'"),
        ("name: t\nsteps:\n  - blur: 5000\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: blur sigma must be a number from 0 to 1000, got 5000"),
        ("name: t\nsteps:\n  - resize: {fit: covr, width: 3}\noutputs: [{encode: jpeg}]\n",
         "fit must be one of inside, cover, contain, fill, outside, got 'covr' (did you mean 'cover'?)"),
        ("name: t\nsteps:\n  - resize: {width: $widht}\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: resize width: no parameter 'widht'"),
        ("name: t\nparams:\n  w: {default: 320, max: 50000}\nsteps:\n  - resize: {width: $w}\n"
         "outputs: [{encode: jpeg}]\n",
         "p.yaml:5: resize width uses parameter 'w' whose max does not fit: width must be an integer from 1 to 16384"),
        ("name: t\nparams:\n  q: {default: 500, max: 100}\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: parameter 'q' default must be an integer"),
        ("name: t\nsteps:\n  - encode: jpeg\noutputs: [{encode: jpeg}]\n",
         "encode belongs in an output's `encode:`"),
        ("name: t\nsteps:\n  - watermark: {opacity: 1}\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: watermark needs 'src'"),
        ("name: t\nsteps: []\n", "p.yaml:1: a pipeline needs outputs:"),
        ("name: t\noutputs:\n  - resize: {width: 3}\n", "p.yaml:3: an output needs encode:"),
        ("name: t\noutputs: [{encode: {format: jpg}}]\n", "got 'jpg' (did you mean 'jpeg'?)"),
        ("name: Bad-Name\noutputs: [{encode: jpeg}]\n", "p.yaml:1: name must be lower-case"),
        ("name: resize\noutputs: [{encode: jpeg}]\n", "not 'resize'"),
        ("name: t\nsteps: [auto_orient]\nstep: []\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: pipeline: unknown key 'step' (did you mean 'steps'?)"),
        ("name: t\ntimeout: 0\noutputs: [{encode: jpeg}]\n", "p.yaml:2: timeout must be seconds"),
        ("name: t\nanimation: all\noutputs: [{encode: jpeg}]\n", "p.yaml:2: animation must be keep"),
        ("name: t\nbackends: [tpu]\noutputs: [{encode: jpeg}]\n", "p.yaml:2: backends must be a list"),
        ("name: t\nname: u\noutputs: [{encode: jpeg}]\n", "p.yaml:2: pipeline: 'name' is given twice"),
        ("name: t\nsteps:\n  - blur: {sigma: [1\n", "not valid YAML"),
        ("name: t\nsteps:\n  - rotate: {angle: 90}\n    flip: horizontal\noutputs: [{encode: jpeg}]\n",
         "p.yaml:3: a step is a name"),
        ("name: t\noutputs:\n  - resize: {width: [100, 200, 300, 400, 500, 600, 700, 800, 900]}\n"
         "    encode: [jpeg, webp, png, avif]\n", "36 outputs; at most 32"),
    ],
)
def test_each_validation_error_names_line_and_fix(text, expected):
    found = problems(text)
    assert any(expected in p for p in found), found


def test_all_problems_of_a_file_are_reported_together():
    found = problems("name: t\nsteps:\n  - resise: 1\n  - blur: {sigm: 1}\noutputs: [{encode: {format: jpg}}]\n")
    assert [p.split(":")[1] for p in found[:2]] == ["3", "4"] and any(":5:" in p for p in found)


def test_gpu_and_numpy_workers_serve_every_step_and_skip_cpu_only_pipelines(tmp_path):
    # Every step has an array executor now (issue 13): trim loads for gpu and numpy workers too.
    (tmp_path / "a.yaml").write_text("name: a\nsteps:\n  - trim: 10\noutputs: [{encode: jpeg}]\n")
    for backend in ("cpu", "gpu", "numpy"):
        assert load_dir(str(tmp_path), backend)[0].keys() == {"a"}
    (tmp_path / "a.yaml").write_text("name: a\nbackends: [cpu]\nsteps:\n  - trim: 10\noutputs: [{encode: jpeg}]\n")
    assert load_dir(str(tmp_path), "gpu") == ({}, ["a"])
    assert load_dir(str(tmp_path), "numpy") == ({}, ["a"])  # numpy stands in for gpu


def test_a_step_without_an_array_executor_is_refused_for_gpu_with_file_and_line(tmp_path):
    from dataclasses import replace

    from imgworker.pipeline.loader import check_backend, load_file
    from imgworker.pipeline.steps import STEPS

    registry = {**STEPS, "trim": replace(STEPS["trim"], array=None)}
    path = tmp_path / "a.yaml"
    path.write_text("name: a\nsteps:\n  - trim: 10\noutputs: [{encode: jpeg}]\n")
    pipeline = load_file(str(path), registry)
    (problem,) = check_backend(pipeline, "gpu")
    assert str(problem).endswith("a.yaml:3: the gpu backend cannot run this: step 'trim' has no array executor; "
                                 "add `backends: [cpu]` to serve 'a' from cpu workers only, or change the step")
    assert check_backend(pipeline, "numpy") and not check_backend(pipeline, "cpu")


def test_gpu_runs_the_options_it_used_to_refuse(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "name: a\nsteps:\n  - rotate: 45\n  - resize: {width: 9, height: 9, fit: cover, position: attention}\n"
        "outputs: [{encode: jpeg}]\n")
    assert load_dir(str(tmp_path), "gpu")[0].keys() == {"a"}


def test_duplicate_pipeline_names_are_refused(tmp_path):
    for f in ("a.yaml", "b.yaml"):
        (tmp_path / f).write_text("name: same\noutputs: [{encode: jpeg}]\n")
    with pytest.raises(PipelineError, match="'same' is already used by"):
        load_dir(str(tmp_path), "cpu")


def test_job_overrides_are_checked_against_the_parameters():
    p = parse("p.yaml", OK)
    assert p.resolve_params({"width": 100}) == ({"width": 100, "quality": 80}, None)
    with pytest.raises(BadRequest, match=r"has no parameter 'widht' \(did you mean 'width'\?\); a job may set: width"):
        p.resolve_params({"widht": 100})
    with pytest.raises(BadRequest, match="fixes 'quality': a job may not set it"):
        p.resolve_params({"quality": 90})
    with pytest.raises(BadRequest, match="'width' must be an integer from 16 to 2048, got 5000"):
        p.resolve_params({"width": 5000})
    with pytest.raises(BadRequest, match="'focal' must be"):
        p.resolve_params({"focal": [2, 0]})
    assert p.resolve_params({"focal": [0.25, 1]})[1] == (0.25, 1.0)


def test_reload_keeps_the_old_set_when_a_file_is_bad(tmp_path):
    (tmp_path / "a.yaml").write_text(OK)
    pset = PipelineSet.load(str(tmp_path), "cpu")
    old = pset.current()
    (tmp_path / "b.yaml").write_text("name: b\nsteps: [nope]\noutputs: [{encode: jpeg}]\n")
    assert pset.reload() is False and pset.current() is old
    (tmp_path / "b.yaml").write_text("name: b\noutputs: [{encode: jpeg}]\n")
    assert pset.reload() is True and set(pset.current()) == {"t", "b"}
    assert set(old) == {"t"}  # a job holding the old mapping still sees what it started with


def _check(directory: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgworker", "pipelines", "check", str(directory)],
                          capture_output=True, text=True, timeout=60)


def test_check_command_passes_the_shipped_pipelines():
    from support.fixtures_pipeline import PIPELINES_DIR

    done = _check(PIPELINES_DIR)
    assert done.returncode == 0, done.stderr
    assert "cpu: 4 pipelines OK: avatar, product_zoom, thumbnail, web" in done.stdout
    assert "gpu: 4 pipelines OK: avatar, product_zoom, thumbnail, web\n" in done.stdout  # issue 13: all on gpu


def test_check_command_fails_with_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nsteps:\n  - sharpn: 1\noutputs: [{encode: jpeg}]\n")
    done = _check(tmp_path)
    assert done.returncode == 1
    assert f"{tmp_path / 'bad.yaml'}:3: unknown step 'sharpn' (did you mean 'sharpen'?)" in done.stderr
