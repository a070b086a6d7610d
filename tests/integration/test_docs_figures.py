"""Figures the docs give as numbers, checked against what they count: the test counts of README.md and
docs/reliability.md against what their commands collect (within 5%: other work adds tests between doc edits)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def collected(*args: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    found = re.search(r"^(?:(\d+)/)?(\d+) tests? collected", proc.stdout, re.M)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    return int(found.group(1) or found.group(2))  # "1080/1257 collected (177 deselected)": the 1080 that run


def stated(path: str, pattern: str) -> int:
    found = re.search(pattern, (REPO / path).read_text())
    assert found, f"{path}: no figure matching {pattern!r}"
    return int(found.group(1).replace(",", ""))


@pytest.mark.parametrize(
    "path, pattern, args",
    [
        ("README.md", r"about ([\d,]+) tests in", ()),
        ("docs/reliability.md", r"About ([\d,]+) tests \(`tests/integration/test_docs_figures.py`",
         ("tests/reliability", "tests/integration/test_submit.py")),
    ],
)
def test_test_counts(path: str, pattern: str, args: tuple[str, ...]) -> None:
    doc, real = stated(path, pattern), collected(*args)
    assert abs(doc - real) <= real * 0.05, f"{path} says {doc} tests; its command collects {real}"
