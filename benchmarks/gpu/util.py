"""Sample the GPU's engine utilisation beside a figure: SM, video decoder and JPEG engines (issue 17).

``with Sampler() as s: ...measure...`` then ``s.summary()``: mean / max per engine over the samples, and the
source. Sources, first that works: NVML through nvidia-ml-py (``nvmlDeviceGetJpgUtilization`` where the
driver has it, ``nvmlDeviceGetDecoderUtilization``, ``nvmlDeviceGetUtilizationRates``), else ``nvidia-smi
dmon -s u`` read line by line. Without a GPU neither works and the summary says so (``available: False``
and why); nothing raises, so a figure is never lost to its utilisation.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

ENGINES = ("sm", "dec", "jpg")


def parse_dmon(lines: Iterable[str]) -> list[dict[str, float]]:
    """Rows of ``nvidia-smi dmon -s u`` output: {column: percent}; "-" (not supported) columns left out.

    The header (``# gpu sm mem enc dec jpg ofa``) names the columns; a driver without JPEG counters has no
    ``jpg`` column. Lines before a header or that do not match it are skipped.
    """
    names: list[str] | None = None
    rows: list[dict[str, float]] = []
    for line in lines:
        parts = line.lstrip().lstrip("#").split()
        if not parts:
            continue
        if line.lstrip().startswith("#"):
            if parts[0].lower() == "gpu":  # the names line; the "# Idx % % ..." units line is skipped
                names = [p.lower() for p in parts]
            continue
        if names is None or len(parts) != len(names):
            continue
        row: dict[str, float] = {}
        for name, value in zip(names, parts, strict=True):
            try:
                row[name] = float(value)
            except ValueError:
                continue  # "-": this engine has no counter on this driver / GPU
        if "gpu" in row:
            rows.append(row)
    return rows


def summarise(rows: list[dict[str, float]], source: str, reason: str = "") -> dict[str, Any]:
    """mean / max per engine in percent over the sample rows (rows of every GPU dmon reports)."""
    out: dict[str, Any] = {"source": source, "samples": len(rows), "available": bool(rows)}
    if not rows:
        out["reason"] = reason or "no samples"
        return out
    for engine in ENGINES:
        values = [r[engine] for r in rows if engine in r]
        if values:
            out[engine] = {"mean": round(sum(values) / len(values), 1), "max": max(values)}
    return out


def _nvml_reader() -> tuple[Callable[[], dict[str, float]] | None, str]:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError as exc:
        return None, f"nvidia-ml-py not installed ({exc})"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception as exc:  # no driver, no device
        return None, f"NVML: {type(exc).__name__}: {exc}"
    jpg = getattr(pynvml, "nvmlDeviceGetJpgUtilization", None)

    def read() -> dict[str, float]:
        row = {"gpu": 0.0, "sm": float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)}
        row["dec"] = float(pynvml.nvmlDeviceGetDecoderUtilization(handle)[0])
        if jpg is not None:
            with contextlib.suppress(Exception):  # the function exists, this GPU/driver has no JPEG counter
                row["jpg"] = float(jpg(handle)[0])
        return row

    try:
        read()
    except Exception as exc:
        return None, f"NVML read: {type(exc).__name__}: {exc}"
    return read, "nvml"


class Sampler:
    """Background sampling every ``interval`` s while the block runs; ``summary()`` after it."""

    def __init__(self, interval: float = 0.2, *, nvml: bool = True, smi: str | None = "nvidia-smi") -> None:
        self.interval = interval
        self.rows: list[dict[str, float]] = []
        self.source, self.reason = "none", ""
        self._nvml = nvml
        self._smi = shutil.which(smi) if smi else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> Sampler:
        reader, why = _nvml_reader() if self._nvml else (None, "NVML not tried")
        if reader is not None:
            self.source = "nvml"
            self._thread = threading.Thread(target=self._poll, args=(reader,), daemon=True)
        elif self._smi is not None:
            self.source = "nvidia-smi dmon"
            ms = max(1, int(self.interval * 1000))
            try:  # dmon's -d is in whole seconds; -s u: utilisation columns
                self._proc = subprocess.Popen([self._smi, "dmon", "-s", "u", "-d", str(max(1, ms // 1000))],
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError as exc:
                self.source, self.reason = "none", f"{why}; nvidia-smi: {exc}"
                return self
            self._thread = threading.Thread(target=self._read_dmon, daemon=True)
        else:
            self.reason = f"{why}; no nvidia-smi on PATH"
            return self
        self._thread.start()
        return self

    def _poll(self, reader: Callable[[], dict[str, float]]) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.rows.append(reader())
            except Exception as exc:
                self.reason = f"NVML read: {exc}"
                return

    def _read_dmon(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        header: list[str] = []
        for line in self._proc.stdout:
            if line.startswith("#"):
                header.append(line)
                continue
            self.rows.extend(parse_dmon([*header[-2:], line]))

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        return summarise(list(self.rows), self.source, self.reason)

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sampled(fn: Callable[[], Any], interval: float = 0.2) -> tuple[Any, dict[str, Any]]:
    """``fn()``'s result and the utilisation while it ran."""
    with Sampler(interval) as s:
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
    summary = s.summary()
    summary["wall_s"] = round(wall, 3)
    return result, summary
