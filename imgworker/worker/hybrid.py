"""Hybrid node: a GPU worker's supervisor also runs CPU-backend processes on the cores its GPU processes leave.

The GPU processes keep the GPU busy with few CPU cycles (header checks, progressive decodes, non-JPEG
encodes); the rest of the pod's CPUs would sit idle. CPU children (``--backend cpu``) register the untagged
names and ``@cpu`` (never ``@gpu``) and compete for untagged jobs: a process takes a job when it has a free
slot, so the GPU processes take what they can and the CPU children the rest (docs/gpu.md, "Hybrid node").
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from imgworker.core import budget
from imgworker.core.config import ConfigError, WorkerConfig
from imgworker.core.cpus import available_cpus


@dataclass(frozen=True)
class Layout:
    """The children of one supervisor: ``main`` processes of the configured backend, ``cpu`` CPU ones."""

    backend: str  # what the main processes resolve to: gpu, numpy or cpu
    main: int
    cpu: int
    cpus: int  # the pod's CPUs this was sized from
    main_threads: int  # CPU threads each main (GPU) process is given (0: its own rule, not hybrid)

    @property
    def total(self) -> int:
        return self.main + self.cpu

    @property
    def hybrid(self) -> bool:
        return self.cpu > 0


def plan(config: WorkerConfig, backend: str, cpus: int | None = None) -> Layout:
    """Split the pod between the backend's processes and CPU ones.

    ``backend`` is what config.backend resolves to (app.backend_name). ``--cpu-processes -1`` (auto) gives a
    GPU worker ``cpus - processes x --gpu-process-cpus`` CPU children (none if that is <= 0) and nothing to
    any other backend; an explicit N is taken as given (numpy stands in for the GPU in tests).
    """
    cpus = available_cpus() if cpus is None else cpus
    main = config.effective_processes
    if config.cpu_processes > 0 and backend == "cpu":
        raise ConfigError("--cpu-processes adds CPU processes to a GPU worker; this worker's backend is cpu "
                          "(no usable GPU): size it with --processes")
    if config.cpu_processes >= 0:
        cpu = config.cpu_processes
    else:
        cpu = max(0, cpus - main * config.gpu_process_cpus) if backend == "gpu" else 0
    threads = 0
    if cpu:
        # The GPU processes get their reserve as CPU threads, not the whole pod each (cpus.py's rule).
        threads = config.gpu_decoder_threads or config.gpu_process_cpus
    return Layout(backend=backend, main=main, cpu=cpu, cpus=cpus, main_threads=threads)


def child_configs(config: WorkerConfig, layout: Layout) -> list[WorkerConfig]:
    """One config per child slot: the main backend's first, then the CPU children's."""
    if not layout.hybrid:
        return [config] * layout.main
    main_mib = cpu_mib = config.memory_budget
    if config.memory_budget == 0:
        main_mib, cpu_mib = memory_budgets(layout, config.concurrency, config.cpu_concurrency)
    main = dataclasses.replace(config, gpu_decoder_threads=layout.main_threads, cpu_processes=0,
                               memory_budget=main_mib)
    cpu = dataclasses.replace(config, backend="cpu", processes=1, concurrency=config.cpu_concurrency,
                              batch_slots=0, cpu_processes=0, memory_budget=cpu_mib)
    return [main] * layout.main + [cpu] * layout.cpu


def memory_budgets(layout: Layout, main_slots: int, cpu_slots: int, limit: int | None = None) -> tuple[int, int]:
    """MiB of job memory per main and per CPU child: the container's usable memory (budget.derive's rule)
    less each child's base, split by job slots (a GPU process with 32 slots gets 16x a 2-slot CPU child)."""
    if limit is None:
        limit = budget.container_limit() or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    usable = limit * budget.USABLE_SHARE - layout.total * budget.BASE_PER_PROCESS
    slots = layout.main * main_slots + layout.cpu * cpu_slots
    per_slot = max(0.0, usable) / max(1, slots)
    floor = 64  # MiB: budget.derive's floor
    return (max(floor, int(per_slot * main_slots) // budget.MIB), max(floor, int(per_slot * cpu_slots) // budget.MIB))
