"""docs/operations.md, "Capacity on paper": every cell of the table recomputed from the inputs it states, and the
measured inputs equal to the figures of the docs that report the measurements (docs/reliability.md,
docs/performance.md, docs/gpu.md)."""

from __future__ import annotations

import math
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SUBMITS, DRAINS = 1580, 2138  # docs/reliability.md, sqlite WAL row
SERVER_USE, POD_USE, PEAK = 0.5, 0.7, 3
CPU_POD = 42.86 / 2  # docs/performance.md thumb512 photos, imgworker C=2, 2 processes
GPU_POD = 151  # docs/gpu.md run 4, 2 processes x 32 threads, 512 px


def section() -> str:
    text = (DOCS / "operations.md").read_text()
    return text[text.index("## Capacity on paper"):]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("M").rstrip("B")) * (1e6 if cell.endswith("M") else 1e9 if
                                                                 cell.endswith("B") else 1)


def test_the_measured_inputs_are_the_measurements() -> None:
    assert re.search(rf"\*\*sqlite, write-ahead log \(imgworker's default\)\*\* \| \*\*{SUBMITS:,}\*\* \| "
                     rf"\*\*{DRAINS:,}\*\*", (DOCS / "reliability.md").read_text())
    assert "| thumb512 photos | C=2 | 42.86 |" in (DOCS / "performance.md").read_text()
    assert f"**{GPU_POD} (1.42x)**" in (DOCS / "gpu.md").read_text()
    text = section()
    assert f"| {SUBMITS:,} | measured" in text and f"| {DRAINS:,} | measured" in text
    assert f"| {CPU_POD:.1f} images/s | measured" in text and f"| {GPU_POD} images/s | measured" in text


def test_every_cell_follows_from_the_inputs() -> None:
    per_server = 1 / (1 / SUBMITS + 1 / DRAINS)
    text = section()
    assert f"| {round(per_server)} | computed" in text
    assert f"{SERVER_USE:.0%} ({math.ceil(per_server * SERVER_USE)} jobs/s)" in text
    rows = re.findall(r"^\| (1M|10M|100M|1B) \| (.*) \|$", text, re.M)
    assert [r[0] for r in rows] == ["1M", "10M", "100M", "1B"]
    for day, rest in rows:
        cells = [number(c.strip()) for c in rest.split("|")]
        average = number(day) / 86400
        peak = average * PEAK
        expected = [
            round(average, 1) if average < 100 else round(average),
            round(peak),
            max(2, math.ceil(peak / (per_server * SERVER_USE))),
            math.ceil(peak / (CPU_POD * POD_USE)),
            math.ceil(peak / (GPU_POD * POD_USE)),
        ]
        assert cells == expected, (day, cells, expected)
