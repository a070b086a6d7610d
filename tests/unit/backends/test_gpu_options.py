"""Decoder layout options and the hybrid node's sizing (issue 17): validation, the numbers the supervisor
derives from the pod's CPUs, and what the backends do with the options. No GPU: the BatchDecoder test uses
an in-memory stand-in for nvImageCodec (a unit test of decode.py's splitting only); the hybrid supervisor
with real processes is tests/reliability/test_hybrid_supervisor.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from imgworker.backends.gpu import create_backend
from imgworker.backends.gpu.decode import BatchDecoder, DecoderLayout, split
from imgworker.core import budget
from imgworker.core.config import ConfigError, WorkerConfig, load
from imgworker.core.cpus import available_cpus
from imgworker.worker import hybrid


def config(**kw: Any) -> WorkerConfig:
    return WorkerConfig(**kw).validate()


@pytest.mark.parametrize("kw, message", [
    ({"gpu_decoders": 0}, "--gpu-decoders must be 1 to 16"),
    ({"gpu_decoders": 17}, "--gpu-decoders must be 1 to 16"),
    ({"gpu_decoders": 4, "gpu_max_batch": 2}, "exceeds --gpu-max-batch 2"),
    ({"gpu_decoder_threads": -1}, "--gpu-decoder-threads must be >= 0"),
    ({"gpu_process_cpus": 0}, "--gpu-process-cpus"),
    ({"cpu_concurrency": 0}, "--cpu-concurrency"),
    ({"cpu_processes": -2}, "--cpu-processes must be -1"),
    ({"cpu_processes": 3, "backend": "cpu"}, "a --backend cpu worker sizes itself with --processes"),
    ({"gpu_batch_single": "yes"}, "--gpu-batch-single must be one of on, off"),
])
def test_layout_options_are_validated(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**kw)


def test_layout_options_come_from_flags_and_environment() -> None:
    import argparse

    from imgworker.core.config import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--gpu-decoders", "7", "--gpu-batch-single", "on", "--gpu-max-batch", "14"])
    env = {"IMGWORKER_CPU_PROCESSES": "6", "IMGWORKER_GPU_DECODER_THREADS": "3"}
    c = load(args, env)
    assert (c.gpu_decoders, c.gpu_batch_single, c.gpu_max_batch) == (7, "on", 14)
    assert (c.cpu_processes, c.gpu_decoder_threads) == (6, 3)
    with pytest.raises(ConfigError, match="did you mean IMGWORKER_CPU_PROCESSES"):
        load(None, {"IMGWORKER_CPU_PROCESSE": "6"})


def fake_cgroup(tmp_path: Path, cpus: float) -> tuple[str, str]:
    (tmp_path / "cpu.max").write_text(f"{int(cpus * 100000)} 100000\n")
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/\n")
    return str(tmp_path), str(proc)


@pytest.mark.parametrize("quota, processes, per_process, expect_cpu", [
    (16, 2, 4, 8),  # the H200 pod: 2 GPU processes keep 8 CPUs, 8 CPU children
    (16.5, 2, 4, 8),  # a fractional quota rounds down (cpus.py)
    (8, 2, 4, 0),  # the old 8-CPU pod: nothing left over
    (6, 2, 4, 0),  # never negative
    (32, 4, 2, 24),
])
def test_auto_cpu_processes_follow_available_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota: float, processes: int, per_process: int, expect_cpu: int
) -> None:
    root, proc = fake_cgroup(tmp_path, quota)
    monkeypatch.setattr("imgworker.core.cpus.affinity_cpus", lambda: 64)  # a big node: the quota decides
    cpus = available_cpus(root, proc)
    assert cpus == int(quota)
    layout = hybrid.plan(config(processes=processes, gpu_process_cpus=per_process), "gpu", cpus)
    assert (layout.main, layout.cpu, layout.total) == (processes, expect_cpu, processes + expect_cpu)
    assert layout.main_threads == (per_process if expect_cpu else 0)


def test_auto_adds_cpu_children_to_gpu_workers_only() -> None:
    for backend in ("cpu", "numpy"):
        assert hybrid.plan(config(processes=2), backend, 16).cpu == 0
    assert hybrid.plan(config(processes=2, cpu_processes=0), "gpu", 16).cpu == 0  # off
    assert hybrid.plan(config(processes=2, cpu_processes=3), "numpy", 16).cpu == 3  # explicit: as given
    with pytest.raises(ConfigError, match="no usable GPU"):  # --backend auto resolved to cpu
        hybrid.plan(config(processes=2, cpu_processes=3), "cpu", 16)


def test_child_configs_of_a_hybrid_node() -> None:
    c = config(processes=2, concurrency=32, cpu_processes=3, cpu_concurrency=2, gpu_process_cpus=4)
    layout = hybrid.plan(c, "gpu", 16)
    slots = hybrid.child_configs(c, layout)
    assert [s.backend for s in slots] == ["auto"] * 2 + ["cpu"] * 3
    gpu, cpu = slots[0], slots[-1]
    assert (gpu.concurrency, gpu.gpu_decoder_threads, gpu.cpu_processes) == (32, 4, 0)
    assert (cpu.concurrency, cpu.processes, cpu.cpu_processes, cpu.batch_slots) == (2, 1, 0, 0)
    # The container's memory is shared by all 5 children, by job slots (32 : 2), each less its base.
    main_mib, cpu_mib = hybrid.memory_budgets(layout, 32, 2)
    assert (gpu.memory_budget, cpu.memory_budget) == (main_mib, cpu_mib)
    limit = 20 * 1024 * budget.MIB  # a 20Gi pod, 2 GPU x 32 slots + 3 CPU x 2 slots
    main_mib, cpu_mib = hybrid.memory_budgets(layout, 32, 2, limit)
    usable = (limit * budget.USABLE_SHARE - 5 * budget.BASE_PER_PROCESS) / budget.MIB
    assert abs(main_mib - usable * 32 / 70) <= 1 and abs(cpu_mib - usable * 2 / 70) <= 1
    assert 2 * main_mib + 3 * cpu_mib <= usable  # never more than the pod has
    explicit = config(processes=2, cpu_processes=1, memory_budget=300)
    assert {s.memory_budget for s in hybrid.child_configs(explicit, hybrid.plan(explicit, "gpu", 16))} == {300}
    for s in slots:
        s.validate()
    # Not hybrid: the same config in every slot, untouched.
    plain = config(processes=2, cpu_processes=0)
    assert hybrid.child_configs(plain, hybrid.plan(plain, "gpu", 16)) == [plain, plain]


def test_numpy_backend_records_the_layout_and_uses_the_thread_option() -> None:
    backend = create_backend(config(processes=2, gpu_decoders=3, gpu_batch_single="on", gpu_decoder_threads=5),
                             numpy=True)
    try:
        assert backend.decoder_layout == DecoderLayout(3, True)
        assert backend._pool._max_workers == 5  # the CPU-stage pool takes --gpu-decoder-threads
        assert getattr(backend.engine, "decoder", None) is None  # NumPy: no Decoder to lay out
    finally:
        backend.close()


def test_decoder_layout_options_string() -> None:
    assert DecoderLayout().options() == ""
    assert DecoderLayout(2, True).options() == "nvjpeg_hw_decoder:force_batch_single=1"


@pytest.mark.parametrize("n, parts", [(1, 4), (7, 7), (16, 7), (32, 3), (5, 1)])
def test_split_covers_the_batch_in_order(n: int, parts: int) -> None:
    ranges = split(n, parts)
    assert [i for r in ranges for i in r] == list(range(n))
    assert len(ranges) == min(n, parts) and all(len(r) for r in ranges)
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


class _Stream:
    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr = id(self)
        self.synced = 0

    def synchronize(self) -> None:
        self.synced += 1


class _Cp:
    class cuda:
        Stream = _Stream

    @staticmethod
    def asarray(x: Any) -> Any:
        return x


class _Mod:
    """nvImageCodec's surface that BatchDecoder and detect.gpu_decoder touch."""

    class BackendKind:
        HW_GPU_ONLY, HYBRID_CPU_GPU, GPU_ONLY = 1, 2, 3

    class ColorSpec:
        SRGB = 0

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []
        self.calls: list[tuple[int, list[bytes], int, str]] = []

    def Backend(self, kind: int) -> int:
        return kind

    def DecodeParams(self, **kw: Any) -> dict[str, Any]:
        return kw

    def CodeStream(self, data: bytes) -> bytes:
        return data

    def Decoder(self, **kw: Any) -> Any:
        mod, index = self, len(self.made)
        self.made.append(kw)

        class Dec:
            def decode(self, streams: list[bytes], params: Any, cuda_stream: int) -> list[Any]:
                mod.calls.append((index, list(streams), cuda_stream, threading.current_thread().name))
                return [None if s == b"bad" else s.upper() for s in streams]

        return Dec()


def test_batch_decoder_splits_a_batch_over_its_decoders() -> None:
    mod = _Mod()
    dec = BatchDecoder(_Cp(), mod, cpu_threads=2, layout=DecoderLayout(3, True))
    assert len(mod.made) == 3
    assert all(m["options"] == "nvjpeg_hw_decoder:force_batch_single=1" and m["max_num_cpu_threads"] == 2
               for m in mod.made)
    jpegs = [b"a", b"b", b"bad", b"d", b"e", b"f", b"g"]
    images, ms = dec.decode(jpegs)
    assert images == [b"A", b"B", None, b"D", b"E", b"F", b"G"]  # order kept, a refusal stays in its slot
    assert sorted(c[0] for c in mod.calls) == [0, 1, 2]  # every Decoder got a part...
    assert len({c[2] for c in mod.calls}) == 3  # ...on its own stream...
    assert all(c[3].startswith("gpu-decode") for c in mod.calls)  # ...on its own thread
    assert all(s.synced == 1 for s in dec.streams) and ms >= 0
    mod.calls.clear()
    single = BatchDecoder(_Cp(), _Mod())  # the default: one Decoder, one call on the caller's thread
    assert single.decode([b"x", b"y"])[0] == [b"X", b"Y"] and "options" not in single.mod.made[0]
