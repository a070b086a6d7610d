"""The README's sections "Submitting a job", "s3:// end to end" and "Pipelines" run as written: their bash blocks
and console commands in order, in bash from the repository's folder, each command's answer compared with the one
the README shows (ok, error code and message, size and format; not the timings or byte counts).

Only what would collide with other runs on one machine is changed: the ports (4730-4732, 9000: free ports here),
the /tmp folders (under pytest's tmp_path) and `.venv/bin` (this interpreter's). Started processes are ended when
the section's script exits.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.fixtures_s3 import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
SECTIONS = ("Submitting a job", "s3:// end to end", "Pipelines")
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def localize(text: str, tmp: Path, ports: dict[str, str]) -> str:
    text = text.replace("$PWD/.venv/bin", VENV_BIN).replace(".venv/bin/", VENV_BIN + "/")
    text = text.replace("/tmp/imgworker-", f"{tmp}/imgworker-")
    for port, free in ports.items():
        text = re.sub(rf"\b{port}\b", free, text)
    return text


def script(title: str, tmp: Path, ports: dict[str, str]) -> tuple[str, list[str]]:
    """The section as one bash script, and the answers its console commands should give (in order)."""
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    expected: list[str] = []
    for lang, body in FENCE.findall(section(title)):
        body = localize(body, tmp, ports)
        if lang == "bash":
            lines.append(body)
        elif lang == "python":
            path = tmp / f"readme{len(lines)}.py"
            path.write_text(body)
            lines.append(f"{VENV_BIN}/python {path}")
        elif lang == "console":
            rows = body.splitlines()
            for i, row in enumerate(rows):
                if row.startswith("$ "):
                    lines.append(f"{row[2:]} > {tmp}/answer{len(expected)}.json")
                    expected.append(rows[i + 1])
    return "\n".join(lines) + "\n", expected


def same_answer(got: dict[str, object], shown: dict[str, object]) -> bool:
    if got["ok"] != shown["ok"]:
        return False
    if not shown["ok"]:
        return got["error"] == shown["error"]
    return all(got[k] == shown[k] for k in ("dst", "width", "height", "format", "backend"))


@pytest.mark.parametrize("title", SECTIONS)
def test_readme_section_runs_as_written(title: str, tmp_path: Path) -> None:
    ports = {p: str(free_port()) for p in ("4730", "4731", "4732", "9000")}
    text, expected = script(title, tmp_path, ports)
    (tmp_path / "section.sh").write_text(text)
    proc = subprocess.run(["bash", str(tmp_path / "section.sh")], cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{title}: exit {proc.returncode}\n{text}\n{output}"
    for i, shown in enumerate(expected):
        got = json.loads((tmp_path / f"answer{i}.json").read_text())
        assert same_answer(got, json.loads(shown)), (title, got, shown)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
