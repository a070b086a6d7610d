"""The GPU backend (CuPy). Importing this package needs no CuPy: it is imported lazily by detect.py.

Use: ``backend = GpuBackend() if gpu_available() else CpuBackend()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgworker.backends.gpu.backend import GpuBackend
from imgworker.backends.gpu.batcher import MicroBatcher
from imgworker.backends.gpu.detect import GpuUnavailable, gpu_available, require_gpu
from imgworker.core.config import WorkerConfig
from imgworker.core.cpus import available_cpus

__all__ = ["GpuBackend", "GpuUnavailable", "MicroBatcher", "create_backend", "gpu_available", "require_gpu"]


def create_backend(config: WorkerConfig, numpy: bool = False) -> GpuBackend:
    """Build the backend from a WorkerConfig; raises GpuUnavailable (a ConfigError) naming the extra.

    gpu_max_batch 0 means half the job threads (1-32: the other half do their CPU stages meanwhile, as
    measured in run 4 of docs/gpu.md); the memory fraction is split across worker processes.
    ``numpy``: the same backend on NumPy, named "numpy" (``--backend numpy``: a slow reference, no GPU).
    """
    threads = config.concurrency or 16
    processes = max(1, config.effective_processes)  # processes=0 means one per CPU core
    extra: dict[str, Any] = {"xp": np, "name": "numpy", "gpu_decode": "never", "gpu_encode": "never"}
    if not numpy:
        extra = {"gpu_decode": config.gpu_decode, "gpu_encode": config.gpu_encode}
    return GpuBackend(
        max_batch=config.gpu_max_batch or max(1, min(32, threads // 2)),
        max_wait_ms=config.gpu_max_wait_ms,
        memory_fraction=config.gpu_memory_fraction / processes,
        fail_on=config.fail_on,
        # CPU-side decode threads: the pod's CPUs shared by its worker processes, not the node's cores each
        # (a hybrid node's supervisor sets gpu_decoder_threads to the GPU processes' reserve).
        cpu_threads=config.gpu_decoder_threads or max(1, available_cpus() // processes),
        decoders=config.gpu_decoders,
        batch_single=config.gpu_batch_single == "on",
        **extra,
    )
