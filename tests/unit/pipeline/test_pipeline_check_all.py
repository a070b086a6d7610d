"""`imgworker pipelines check` lists every problem of every file in one run (file and line order) and refuses a
pipeline with `outputs: []`, on which every job would fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgworker.commands.cli import main

BAD = """\
name: bad
timeout: -1
params:
  quality: {default: 80, min: 1, max: 100}
steps:
  - auto_orient
  - resize: {width: 100, fit: nope}
  - sharpen: {sigma: "x"}
outputs:
  - encode: {format: webp, quality: $qualty}
"""
EMPTY_OUTPUTS = """\
name: empty
steps:
  - auto_orient
outputs: []
"""


def check(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["pipelines", "check", str(directory)])
    return code, capsys.readouterr().err.splitlines()


def test_every_problem_at_once_in_line_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "empty.yaml").write_text(EMPTY_OUTPUTS)
    code, lines = check(tmp_path, capsys)
    assert code == 1
    where = [line.split(": ", 1)[0] for line in lines]
    bad, empty = tmp_path / "bad.yaml", tmp_path / "empty.yaml"
    assert where == [f"{bad}:2", f"{bad}:7", f"{bad}:8", f"{bad}:10", f"{empty}:4"], lines
    assert "no parameter 'qualty' (did you mean 'quality'?)" in lines[3]
    assert "outputs: is empty; a pipeline needs at least one" in lines[4]


def test_empty_outputs_alone_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.yaml").write_text(EMPTY_OUTPUTS)
    code, lines = check(tmp_path, capsys)
    assert code == 1 and len(lines) == 1 and "outputs: is empty" in lines[0]
    (tmp_path / "empty.yaml").write_text(EMPTY_OUTPUTS.replace("outputs: []", "outputs:\n  - encode: {format: jpeg}"))
    code, lines = check(tmp_path, capsys)
    assert code == 0 and lines == []
