"""benchmarks/gpu/util.py, the engine-utilisation sampler beside every GPU figure (issue 17): parsing of
``nvidia-smi dmon -s u`` output, and a clean "not available" without a GPU. The samples below are in the
layout nvidia-smi 535+ prints (``jpg`` / ``ofa`` columns) and the older one (no ``jpg``); they were not
captured on the lent H200 (no GPU in this task), which the device script's first run will confirm."""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repo, not of the installed wheel

import pytest  # noqa: E402

from benchmarks.gpu.ceiling import case_for, parse_layouts  # noqa: E402
from benchmarks.gpu.util import Sampler, parse_dmon, sampled, summarise  # noqa: E402

DMON_NEW = """\
# gpu     sm    mem    enc    dec    jpg    ofa
# Idx      %      %      %      %      %      %
    0     12      3      0      0     85      0
    0     40      9      0      0    100      0
# gpu     sm    mem    enc    dec    jpg    ofa
# Idx      %      %      %      %      %      %
    0     20      5      0      1     57      -
"""

DMON_OLD = """\
# gpu   sm   mem   enc   dec
# Idx    %     %     %     %
    0    7     2     -     -
    1   30     4     0     0
"""


def test_parse_dmon_new_layout_with_jpeg_column() -> None:
    rows = parse_dmon(DMON_NEW.splitlines())
    assert [r["jpg"] for r in rows] == [85.0, 100.0, 57.0]
    assert [r["sm"] for r in rows] == [12.0, 40.0, 20.0]
    assert "ofa" not in rows[2]  # "-": no counter, left out rather than read as 0
    s = summarise(rows, "nvidia-smi dmon")
    assert s["available"] and s["samples"] == 3
    assert s["jpg"] == {"mean": 80.7, "max": 100.0}
    assert s["sm"] == {"mean": 24.0, "max": 40.0}


def test_parse_dmon_old_layout_has_no_jpeg_figure() -> None:
    rows = parse_dmon(DMON_OLD.splitlines())
    assert len(rows) == 2 and "dec" not in rows[0] and rows[1]["dec"] == 0.0
    s = summarise(rows, "nvidia-smi dmon")
    assert "jpg" not in s and s["sm"]["max"] == 30.0


def test_parse_dmon_skips_noise_and_lines_before_a_header() -> None:
    lines = ["    0 1 2 3 4", "Failed to initialize NVML", "# gpu sm dec", "    0 50", "    0 50 10"]
    assert parse_dmon(lines) == [{"gpu": 0.0, "sm": 50.0, "dec": 10.0}]


def test_sampler_without_gpu_says_why_and_never_raises() -> None:
    with Sampler(0.05, nvml=True, smi=None) as s:  # nvidia-ml-py not installed here, or no driver
        pass
    out = s.summary()
    assert out["available"] is False and out["source"] == "none"
    assert "nvidia-smi" in out["reason"] and ("nvidia-ml-py" in out["reason"] or "NVML" in out["reason"])
    result, util = sampled(lambda: 42, 0.05)
    assert result == 42 and "available" in util and util["wall_s"] >= 0


def test_sampler_reads_a_dmon_process(tmp_path: Path) -> None:
    """A real child process printing dmon's layout stands in for nvidia-smi (no GPU here)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n"
                    "printf '# gpu     sm    mem    enc    dec    jpg    ofa\\n# Idx      %%      %%      %%      %%"
                    "      %%      %%\\n'\n"
                    "i=0; while [ $i -lt 50 ]; do echo \"    0     30      2      0      0     90      0\"; "
                    "i=$((i+1)); sleep 0.02; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    s = Sampler(0.05, nvml=False, smi=str(fake)).start()
    try:
        for _ in range(250):  # generous: the machine may be loaded
            if len(s.rows) >= 3:
                break
            time.sleep(0.02)
    finally:
        s.stop()
    out = s.summary()
    assert out["source"] == "nvidia-smi dmon" and out["samples"] >= 3, out
    assert out["jpg"]["max"] == 90.0 and out["sm"]["mean"] == 30.0


def test_device_sweep_layouts_parse_and_size_their_threads() -> None:
    (a, b) = parse_layouts("2:7:14:on,4:1:7:off")
    assert a == {"procs": 2, "decoders": 7, "max_batch": 14, "batch_single": True}
    case = case_for(b, (0, 2), 512, 96, fake=True)
    assert (case["decoders"], case["batch_single"], case["max_batch"]) == (1, False, 7)
    assert case["threads"] >= 2 * case["max_batch"] and case["memory_fraction"] == 0.5 / 4
    for bad in ("2:8:4:on", "0:1:1:off", "1:1:1:maybe", "1:1:1"):
        with pytest.raises((SystemExit, ValueError)):
            parse_layouts(bad)
