"""k8s/gpu/worker-gpu.yaml as a hybrid node (issue 17): the pod requests the cores its CPU-backend processes use,
requests = limits (the quota cpus.py sizes by), and the supervisor's split of that quota, computed by the code
the pod runs (imgworker/worker/hybrid.py), uses every CPU and no more. Static: parsed, no cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from imgworker.commands.cli import build_parser
from imgworker.core import budget
from imgworker.core.config import WorkerConfig
from imgworker.worker import hybrid

MANIFEST = Path(__file__).resolve().parents[2] / "k8s" / "gpu" / "worker-gpu.yaml"


def quantity(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def memory(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(float(q[:-2]) * units[q[-2:]]) if q[-2:] in units else int(q)


def gpu_container() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def worker_config(args: list[str]) -> WorkerConfig:
    ns = build_parser().parse_args(args)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(WorkerConfig)
              if getattr(ns, f.name, None) is not None}
    values.pop("pipelines", None)  # a path inside the image
    return WorkerConfig(**values).validate()


def test_gpu_pod_is_a_hybrid_node_that_uses_its_cores() -> None:
    c = gpu_container()
    res = c["resources"]
    quota = quantity(res["limits"]["cpu"])
    assert quota == quantity(res["requests"]["cpu"]), "requests.cpu = limits.cpu: the quota is what it sizes by"
    cfg = worker_config(c["args"])
    assert cfg.backend == "gpu" and cfg.cpu_processes == -1, "the CPU processes follow the pod's CPUs"
    layout = hybrid.plan(cfg, "gpu", int(quota))
    assert layout.cpu >= 1, "a GPU pod with no CPU-backend processes leaves its cores idle"
    # Every CPU of the quota is someone's: the GPU processes' reserve plus one per CPU child, no more.
    assert layout.main * cfg.gpu_process_cpus + layout.cpu == int(quota)
    assert layout.main_threads == cfg.gpu_process_cpus >= 2, "CPU threads per GPU process"
    slots = [s.backend for s in hybrid.child_configs(cfg, layout)]
    assert slots.count("cpu") == layout.cpu and slots.count("gpu") == layout.main


def test_gpu_pod_memory_covers_every_process() -> None:
    c = gpu_container()
    cfg = worker_config(c["args"])
    res = c["resources"]
    quota = int(quantity(res["limits"]["cpu"]))
    limit = memory(res["limits"]["memory"])
    layout = hybrid.plan(cfg, "gpu", quota)
    gpu_mib, cpu_mib = hybrid.memory_budgets(layout, cfg.concurrency, cfg.cpu_concurrency, limit)
    # Not below what a GPU process had in the 8Gi, 2-process pod before the hybrid node (derive's share) ...
    assert gpu_mib * budget.MIB >= budget.derive(0, 2, 8 << 30)
    # ... and a CPU process keeps room for two jobs of a 24 MP source decoded whole (3 bytes/px, twice).
    assert cpu_mib >= 2 * 2 * 24 * 3
    assert memory(res["requests"]["memory"]) >= layout.total * budget.BASE_PER_PROCESS * 4
