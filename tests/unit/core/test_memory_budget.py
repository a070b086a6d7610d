"""The memory budget's decode estimate for real sources, read by the CPU backend's header probe.

docs/security.md ("Memory", and "Memory: estimates against reality" for the measured shares): WebP is charged
its decoded frame (pixels x bands x bytes per sample); a plain, non-interlaced PNG 0.7 of it (it does not stream
a few rows: measured); every decode twice its source's bytes and 10 MiB. The expected bytes are written out
here from those rules, not read from imgworker.core.budget.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips

from imgworker.core import budget
from imgworker.core.errors import LimitExceeded
from imgworker.core.limits import Limits
from imgworker.imaging.probe import probe

W, H = 3000, 2000  # 6 MP: a whole RGB frame is 18,000,000 bytes
JOB = 10 * 1024 * 1024  # every decode's fixed share


class Recording(budget.Budget):
    """A budget that remembers every cost it was asked to admit."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, "test")
        self.seen: list[budget.Cost] = []

    @contextlib.contextmanager
    def admit(self, cost: budget.Cost, held: int = 0) -> Iterator[None]:
        self.seen.append(cost)
        with super().admit(cost, held):
            yield


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Recording:
    rec = Recording(1 << 40)
    monkeypatch.setattr(budget, "_BUDGET", rec)
    return rec


def _source(fmt: str, tmp_path: Path, bands: int = 3) -> bytes:
    """A flat W x H image: a few KB on disk, the full frame in memory once decoded."""
    image = pyvips.Image.black(W, H, bands=bands).linear([1] * bands, [40 + 20 * b for b in range(bands)]).cast("uchar")
    path = tmp_path / f"flat.{fmt}"
    {"webp": lambda: image.webpsave(str(path), lossless=True), "png": lambda: image.pngsave(str(path)),
     "jpeg": lambda: image.jpegsave(str(path), Q=80)}[fmt]()
    return path.read_bytes()


@pytest.mark.parametrize(("bands", "whole"), [(3, W * H * 3), (4, W * H * 4)])
def test_a_webp_source_is_charged_its_whole_frame(recording: Recording, tmp_path: Path, bands: int,
                                                  whole: int) -> None:
    data = _source("webp", tmp_path, bands)
    assert len(data) < 100_000  # the file is tiny: the cost is in the decode
    info = probe(data, Limits())
    assert (info.loader, info.width, info.height) == ("webp", W, H)
    (cost,) = recording.seen
    assert cost.decode == whole + 2 * len(data) + JOB


def test_a_plain_png_of_the_same_size_costs_less(recording: Recording, tmp_path: Path) -> None:
    """The control: the same pixels as a non-interlaced PNG cost 0.7 of the frame (measured, not a row window)."""
    data = _source("png", tmp_path)
    probe(data, Limits())
    (cost,) = recording.seen
    assert cost.decode == int(W * H * 3 * 0.7) + 2 * len(data) + JOB


def test_a_webp_over_the_budget_is_refused_where_the_png_fits(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    small = budget.Budget(25 * budget.MIB, "a 25 MiB test budget")  # between the PNG's ~22 MiB and the WebP's ~27
    monkeypatch.setattr(budget, "_BUDGET", small)
    probe(_source("png", tmp_path), Limits())
    with pytest.raises(LimitExceeded, match="memory budget"):
        probe(_source("webp", tmp_path), Limits())
    assert small.in_use == 0 and small.jobs == 0


# --- the estimate's rules, one at a time, with the bytes worked out by hand ---------------------------------

def est(**kw: object) -> budget.Cost:
    args: dict[str, object] = {"width": 1000, "height": 800, "bands": 3, "bytes_per_sample": 1, "loader": "png",
                               "whole": False, "out_width": 0, "out_height": 0, "fmt": "jpeg"}
    return budget.estimate(**{**args, **kw})  # type: ignore[arg-type]


def test_the_estimate_of_each_kind_of_decode() -> None:
    # Shares of the full frame measured per decoder path (docs/security.md), plus 10 MiB a decode.
    assert est().decode == 1_680_000 + JOB  # PNG/TIFF without shrink-on-load: 0.7 of the frame
    assert est(height=100).decode == 210_000 + JOB
    assert est(whole=True).decode == 2_640_000 + 1_440_000 + JOB  # interlaced PNG: 1.1 frames + 0.6 of 8-bit RGB
    assert est(whole=True, bytes_per_sample=2, bands=4).decode == 7_040_000 + 1_440_000 + JOB
    assert est(bytes_per_sample=0).decode == est().decode  # at least one byte a sample
    assert est(loader="jpeg", whole=True, shrink=4).decode == 1000 * 800 * 3 * 2 + JOB  # progressive: coefficients
    assert est(loader="jpeg", shrink=4).decode == 250 * 256 * 3 * 2 + JOB  # baseline at 1/4 scale: streamed
    assert est(loader="webp", shrink=2).decode == 500 * 400 * 3 + JOB  # WebP: its frame at the decoder's scale
    assert est(loader="webp", shrink=2, width=1001, height=801).decode == 500 * 400 * 3 + JOB  # whole pixels
    assert est(loader="heif").decode == int(2_400_000 * 5.6) + JOB  # AVIF through libheif: 5.6 frames
    assert est(loader="heic").decode == int(2_400_000 * 2.8) + JOB  # HEVC through pillow-heif: 2.8 frames
    assert est(loader="jpeg", shrink=2, width=1001).decode == 500 * 256 * 3 * 2 + JOB
    assert est(bytes_per_sample=2).decode == 3_360_000 + JOB
    assert est(loader="gif", bands=1, bytes_per_sample=2).decode == 5_120_000 + JOB  # GIF frames are RGBA, 1.6
    assert est(loader="gif", frames=3).decode == 5_120_000 * 3 + JOB and est(loader="gif", frames=3).frames == 3
    assert est(source_bytes=1000).decode == est().decode + 2000  # the source, twice
    assert est(width=0, height=0, source_bytes=1000).decode == 2000  # no decode: no fixed share


@pytest.mark.parametrize(("fmt", "per_pixel"), [("jpeg", 5), ("png", 6), ("webp", 12), ("avif", 29), ("gif", 8),
                                                 ("tiff", 8)])
def test_the_estimate_of_each_output(fmt: str, per_pixel: int) -> None:
    # 4 bytes a pixel for the output image, plus the encoder's (docs/security.md: JPEG 1, PNG 2, WebP 8, AVIF 25).
    cost = est(width=0, height=0, out_width=100, out_height=50, fmt=fmt)
    assert (cost.decode, cost.output, cost.total) == (0, 100 * 50 * per_pixel, 100 * 50 * per_pixel)
    assert est(width=0, height=0, out_width=100, out_height=50, fmt=fmt, frames=2).output == 2 * 100 * 50 * per_pixel


def test_costs_describe_themselves_in_mib() -> None:
    mib = budget.MIB
    assert budget.Cost(3 * mib, 2 * mib).describe() == "~5 MiB (decode 3 MiB, output and encoder 2 MiB)"
    assert budget.Cost(6 * mib, 0, 2).describe() == "~6 MiB (decode 6 MiB, output and encoder 0 MiB, 2 frames)"


def test_derive_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    mib = budget.MIB
    assert budget.derive(300, 4, limit=1) == 300 * mib  # configured: as given
    assert budget.derive(1, 1, limit=1000 * mib) == 1 * mib
    monkeypatch.setattr(budget, "container_limit", lambda: 1000 * mib)  # the cgroup's memory.max
    assert budget.derive(0, 1) == int(1000 * mib * 0.85 - 160 * mib)
    monkeypatch.setattr(budget, "container_limit", lambda: None)  # no cgroup limit: the machine's memory
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert budget.derive(0, 1) == max(64 * mib, int(machine * 0.85 - 160 * mib))
    assert budget.derive(0, 1, limit=1000 * mib) == int(1000 * mib * 0.85 - 160 * mib)
    assert budget.derive(0, 2, limit=1000 * mib) == int(1000 * mib * 0.85 / 2 - 160 * mib)
    assert budget.derive(0, 0, limit=1000 * mib) == budget.derive(0, 1, limit=1000 * mib)  # at least one process
    assert budget.derive(0, 8, limit=1000 * mib) == 64 * mib  # never under 64 MiB


def test_admission_refuses_waits_and_releases(caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    mib = budget.MIB
    b = budget.Budget(100 * mib, "a test budget")
    caplog.set_level("INFO", logger="imgworker.worker.budget")
    with pytest.raises(LimitExceeded) as info, b.admit(budget.Cost(101 * mib, 0)):
        pass
    assert info.value.message.startswith("job needs ~101 MiB (decode 101 MiB, output and encoder 0 MiB); this "
                                         "worker's memory budget is 100 MiB per process (a test budget)")
    assert (b.in_use, b.jobs) == (0, 0)
    with b.admit(budget.Cost(100 * mib, 0)):  # exactly the budget: admitted
        assert (b.in_use, b.jobs) == (100 * mib, 1)
    admitted = threading.Event()
    monkeypatch.setattr(budget, "_BUDGET", b)
    assert budget.Budget(1).source == ""
    with budget.job_scope():
        budget.charge(budget.Cost(mib, 0))  # no wait: nothing said about waiting
    assert "waiting for memory" not in caplog.text

    def second() -> None:
        with budget.job_scope():
            budget.charge(budget.Cost(60 * mib, 0))
            admitted.set()

    with b.admit(budget.Cost(60 * mib, 0)):
        t = threading.Thread(target=second, daemon=True)
        t.start()
        # 60 + 60 > 100: it waits while the first holds its share, and says so.
        deadline = time.monotonic() + 10  # a ceiling
        while "job waits for memory: needs 60 MiB, 60 of 100 MiB in use" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.01)
        assert not admitted.is_set() and (b.in_use, b.jobs) == (60 * mib, 1)
        time.sleep(0.1)  # hold a little longer: a wait over 0.05 s is reported when the job is admitted
    t.join(10)  # a ceiling: it is admitted as soon as the first ends
    assert admitted.is_set() and (b.in_use, b.jobs) == (0, 0)
    waited = [m for m in caplog.messages if m.startswith("job admitted after")]
    assert len(waited) == 1 and re.fullmatch(r"job admitted after \d+\.\d\d s waiting for memory", waited[0])
    assert 0.1 <= float(waited[0].split()[3]) < 60


def test_a_job_scope_holds_its_charges_until_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    mib = budget.MIB
    b = Recording(100 * mib)
    monkeypatch.setattr(budget, "_BUDGET", b)
    assert budget.current() is b
    with budget.job_scope():
        budget.charge(budget.Cost(10 * mib, 0))
        budget.charge_frames(3, 2)  # 3 frames in 2 copies: 5 more of the last charge's decode
        assert b.in_use == 60 * mib and b.jobs == 1  # one job, however many charges (issue 26)
        assert b.seen[-1] == budget.Cost(50 * mib, 0, 3)
        budget.charge_frames(1)  # one frame, one copy: nothing more
        assert (b.in_use, b.jobs) == (60 * mib, 1)
    assert (b.in_use, b.jobs) == (0, 0)
    with budget.job_scope():
        budget.charge(budget.Cost(10 * mib, 0))
        budget.charge_frames(2)  # two frames, one copy: one more
        assert b.seen[-1] == budget.Cost(10 * mib, 0, 2)
        budget.charge(budget.Cost(4 * mib, 0))
        budget.charge_frames(1, 2)  # one frame in two copies: one more of the last (4 MiB) charge
        assert b.seen[-1] == budget.Cost(4 * mib, 0, 1) and b.in_use == 28 * mib
    assert (b.in_use, b.jobs) == (0, 0)
    budget.charge(budget.Cost(10 * mib, 0))  # outside a job: admitted and released at once
    budget.charge_frames(5)  # and nothing to multiply
    assert (b.in_use, b.jobs) == (0, 0)
