"""The GPU backend (CuPy). Importing this package needs no CuPy: it is imported lazily by detect.py.

Use: ``backend = GpuBackend() if gpu_available() else CpuBackend()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgworker.backends.gpu.backend import GpuBackend
from imgworker.backends.gpu.batcher import MicroBatcher
from imgworker.backends.gpu.detect import GpuUnavailable, gpu_available, require_gpu
from imgworker.core.cpus import available_cpus

__all__ = ["GpuBackend", "GpuUnavailable", "MicroBatcher", "create_backend", "gpu_available", "require_gpu"]


def create_backend(config: Any, numpy: bool = False) -> GpuBackend:
    """Build the backend from a WorkerConfig; raises GpuUnavailable (a ConfigError) naming the extra.

    Optional config fields (defaults when absent): gpu_max_batch (half the job threads, 1-32: the other half
    do their CPU stages meanwhile, as measured in run 4 of docs/gpu.md), gpu_max_wait_ms (10),
    gpu_memory_fraction (0.5, split across worker processes), gpu_decode ("auto"), gpu_encode ("auto").
    ``numpy``: the same backend on NumPy, named "numpy" (``--backend numpy``: a slow reference, no GPU).
    """
    threads = int(getattr(config, "concurrency", 16) or 16)
    # processes=0 means one per CPU core: effective_processes counts them.
    processes = max(1, int(getattr(config, "effective_processes", None) or getattr(config, "processes", 1) or 1))
    extra: dict[str, Any] = {"xp": np, "name": "numpy", "gpu_decode": "never", "gpu_encode": "never"}
    if not numpy:
        extra = {"gpu_decode": str(getattr(config, "gpu_decode", "auto")),
                 "gpu_encode": str(getattr(config, "gpu_encode", "auto"))}
    return GpuBackend(
        max_batch=int(getattr(config, "gpu_max_batch", 0) or max(1, min(32, threads // 2))),
        max_wait_ms=float(getattr(config, "gpu_max_wait_ms", 10.0)),
        memory_fraction=float(getattr(config, "gpu_memory_fraction", 0.5)) / processes,
        fail_on=str(getattr(config, "fail_on", "warning")),
        # CPU-side decode threads: the pod's CPUs shared by its worker processes, not the node's cores each
        # (a hybrid node's supervisor sets gpu_decoder_threads to the GPU processes' reserve).
        cpu_threads=int(getattr(config, "gpu_decoder_threads", 0) or 0) or max(1, available_cpus() // processes),
        decoders=int(getattr(config, "gpu_decoders", 1) or 1),
        batch_single=str(getattr(config, "gpu_batch_single", "off")) == "on",
        **extra,
    )
