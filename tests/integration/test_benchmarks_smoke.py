"""The benchmark harness runs end to end (real gearmand, worker processes, loops) and reports what it should.

No figures are asserted (timings belong in benchmarks/, not in tests): only that every expected row is there,
measured or skipped with a reason, and that the report keeps the hand-written parts of the doc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.corpus import PHOTOS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repo, not of the installed wheel

from benchmarks.harness import Row  # noqa: E402
from benchmarks.suite import report  # noqa: E402


def test_quick_run_reports_every_row(tmp_path: Path) -> None:
    # The shipped small photos stand in for the full-size corpus: the harness finds photos by pattern.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "photos").symlink_to(PHOTOS)
    out = tmp_path / "bench.json"
    doc = tmp_path / "performance.md"
    cmd = [sys.executable, "-m", "benchmarks.suite", "run", "--quick", "--no-peers", "--only", "baseline",
           "--only", "noop", "--processes", "1", "--json", str(out), "--doc", str(doc)]
    env = {**os.environ, "IMGWORKER_CORPUS": str(corpus)}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = {(r["workload"], r["engine"].split(" (")[0]): r for r in data["rows"]}

    for engine in ("imgworker e2e", "imgworker backend loop", "pyvips loop", "decode limit"):
        row = rows[("thumb512 baseline-jpeg", engine)]
        assert row["skipped"] is None, row
        assert row["images_per_s"] > 0 and row["jobs"] > 0 and row["p50_ms"] > 0, row
        assert row["peak_rss_mb"] > 0, row
    for peer in ("sharp", "thumbor"):
        assert rows[("thumb512 baseline-jpeg", peer)]["skipped"] == "disabled (--no-peers)"
    for engine in ("imgworker.gearman worker", "php-gearman worker"):
        row = rows[("noop round trip", engine)]
        assert row["skipped"] is None and row["images_per_s"] > 0, row
        assert rows[("noop drain 2p", engine)]["images_per_s"] > 0
    ratio = next(r for r in data["ratios"] if r["workload"] == "thumb512 baseline-jpeg")
    assert ratio["vs_pyvips_loop"] > 0 and ratio["vs_decode_limit"] > 0
    assert "vs_sharp" not in ratio  # skipped peers give no ratio, rather than a made-up one
    assert data["meta"]["versions"]["libvips"]
    text = doc.read_text()
    assert report.BEGIN in text and "| thumb512 baseline-jpeg | imgworker e2e (C=1) |" in text
    assert "| thumb512 baseline-jpeg | imgworker e2e (C=2) |" in text  # the default C: its own row
    e2e = [r for r in data["rows"] if r["engine"].startswith("imgworker e2e")]
    assert all(isinstance(r["extra"]["load_before"], float) for r in e2e)  # every cell records its load
    assert {r["imgworker"] for r in data["ratios"] if r["workload"] == "thumb512 baseline-jpeg"} == {"C=1", "C=2"}
    assert "skipped: disabled (--no-peers)" in done.stdout


def test_write_doc_keeps_the_hand_written_parts(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Perf\n\nanalysis above\n\n{report.BEGIN}\nold figures\n{report.END}\n\nnotes below\n")
    rows = [Row("w", "imgworker e2e", images_per_s=10.0, peak_rss_mb=50.0),
            Row("w", "sharp", images_per_s=8.0, peak_rss_mb=60.0),
            Row("w", "thumbor (Pillow)", skipped="not installed")]
    meta = {"date": "d", "machine": "m", "load_before": "0", "load_after": "0", "processes": 2, "command": "c",
            "versions": {"libvips": "8"}}
    report.write_doc(doc, report.document(meta, rows))
    text = doc.read_text()
    assert "analysis above" in text and "notes below" in text and "old figures" not in text
    assert "| w | e2e | 10 | - | 1.25 ok | - | - | 0.83 ok | - |" in text
    assert "skipped: not installed" in text


def test_autoquality_benchmark_runs_and_checks_every_target(tmp_path: Path) -> None:
    """benchmarks/service/autoquality.py on one sample photo: every target line is printed (figures not asserted)."""
    out = tmp_path / "aq.json"
    cmd = [sys.executable, "-m", "benchmarks.service.autoquality", "--runs", "1", "--sizes", "512",
           "--only", "dragonfly_1600", "--json", str(out), "--markdown"]
    env = {**os.environ, "IMGWORKER_CORPUS": str(tmp_path / "none")}  # the sample photos only
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for what in ("jpeg 512 px: auto median bytes", "webp 512 px: auto median bytes", "under 75",
                 "CPU time auto/fixed", "encodes on average", "load average before"):
        assert what in done.stdout, what
    data = json.loads(out.read_text())
    assert {(r["format"], r["setting"]) for r in data["rows"]} == {
        (f, s) for f in ("jpeg", "webp") for s in ("fixed", "auto:eco", "auto", "auto:best")}
    assert all(r["score"] >= 75 for r in data["rows"] if r["setting"] == "auto")
