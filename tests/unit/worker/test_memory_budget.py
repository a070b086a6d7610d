"""The memory budget's decode estimate for real sources, read by the CPU backend's header probe.

docs/security.md ("Memory"): formats that decode whole (WebP among them) are charged decoded pixels x bands x
bytes per sample; streaming decodes (a plain, non-interlaced PNG) a 256-row window. The expected bytes are
written out here from those rules, not read from imgworker.worker.budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips

from imgworker.backends.cpu import probe
from imgworker.core.errors import LimitExceeded
from imgworker.core.limits import Limits
from imgworker.worker import budget

W, H = 3000, 2000  # 6 MP: a whole RGB frame is 18,000,000 bytes


class Recording(budget.Budget):
    """A budget that remembers every cost it was asked to admit."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, "test")
        self.seen: list[budget.Cost] = []

    @contextlib.contextmanager
    def admit(self, cost: budget.Cost) -> Iterator[None]:
        self.seen.append(cost)
        with super().admit(cost):
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
    assert cost.decode == whole


def test_a_plain_png_of_the_same_size_streams(recording: Recording, tmp_path: Path) -> None:
    """The control: the same pixels as a non-interlaced PNG cost a 256-row window (at most double-buffered)."""
    probe(_source("png", tmp_path), Limits())
    (cost,) = recording.seen
    assert W * 256 * 3 <= cost.decode <= W * 256 * 3 * 2


def test_a_webp_over_the_budget_is_refused_where_the_png_fits(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    small = budget.Budget(16 * budget.MIB, "a 16 MiB test budget")  # between the PNG's strip and the WebP's frame
    monkeypatch.setattr(budget, "_BUDGET", small)
    probe(_source("png", tmp_path), Limits())
    with pytest.raises(LimitExceeded, match="memory budget"):
        probe(_source("webp", tmp_path), Limits())
    assert small.in_use == 0 and small.jobs == 0
