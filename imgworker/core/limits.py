"""Limits that bound the work and memory of one job (decompression bombs, giant outputs, huge payloads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    # 100+ MP camera photos pass (Phase One: 150 MP); the 10^10-pixel bombs in the corpus do not.
    max_source_pixels: int = 200_000_000
    max_source_bytes: int = 100 * 1024 * 1024
    max_output_pixels: int = 100_000_000
    max_output_side: int = 16_384
    max_frames: int = 500
    max_payload_bytes: int = 64 * 1024
    job_timeout_s: float = 60.0
