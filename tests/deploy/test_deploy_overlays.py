"""What a cluster gets from each overlay (k8s/overlays/*), read from the rendered objects: the problems that kept
`kubectl apply -k k8s/` from starting on a typical cluster (issue 28) stay fixed.

Rendered by ``kubectl kustomize`` (tests/support/kustomize.py); the strict schema checks of the same objects are
in test_deploy_manifests.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from support.kustomize import K8S, OVERLAYS, config_env, render

from imgworker.commands.exporter import GearmanCollector, ServerReport, imgworker_functions
from imgworker.gearman import FunctionStatus

# A 16-vCPU GPU node (g5.4xlarge, g4dn.4xlarge, n1-standard-16 + GPU): allocatable is 16 less the kubelet's and
# the system's reserve, and DaemonSets (CNI, kube-proxy, NVIDIA device plugin, node exporters) take their share.
GPU_NODE_VCPUS = 16
NODE_RESERVE_VCPUS = 1.5
CLUSTER_SCOPED = {"Namespace"}
NAMESPACED_REFERENCES = ("gearmand-a", "gearmand-b")


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in of_kind(docs, "Deployment")]


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_gpu_pod_fits_a_16_vcpu_gpu_node() -> None:
    (gpu,) = [pod for name, pod in pods(render("production")) if name == "imgworker-gpu"]
    requested = sum(cpus(c["resources"]["requests"]["cpu"]) for c in all_containers(gpu))
    assert requested <= GPU_NODE_VCPUS - NODE_RESERVE_VCPUS, f"{requested} CPUs never fit a 16-vCPU GPU node"


def test_every_pod_fits_the_node_it_targets(docs: list[dict[str, Any]]) -> None:
    for name, pod in pods(docs):
        requested = sum(cpus(c["resources"]["requests"].get("cpu", "0")) for c in pod["containers"])
        assert requested <= GPU_NODE_VCPUS - NODE_RESERVE_VCPUS, name


def test_every_container_is_guaranteed_qos(docs: list[dict[str, Any]]) -> None:
    """requests = limits for cpu and memory in every container, init containers too: the pods are Guaranteed,
    the last evicted under node pressure (the worker sizes its memory budget from the limit)."""
    for name, pod in pods(docs):
        for c in all_containers(pod):
            res = c["resources"]
            for resource in ("cpu", "memory"):
                assert resource in res["requests"], (name, c["name"], resource)
                assert res["requests"][resource] == res["limits"].get(resource), (name, c["name"], resource)


def test_images_are_fully_qualified(docs: list[dict[str, Any]]) -> None:
    """registry/path/name:tag: an unqualified `imgworker:0.1.0-cpu` is pulled from docker.io/library and fails."""
    for name, pod in pods(docs):
        for c in all_containers(pod):
            image = c["image"]
            registry, _, rest = image.partition("/")
            assert rest and ("." in registry or ":" in registry), f"{name}: {image} names no registry"
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image


def test_monitoring_selectors_are_patched(docs: list[dict[str, Any]]) -> None:
    """kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules by `release`; the component
    k8s/components/kube-prometheus-stack sets it, and KEDA's Prometheus address, once for every ScaledObject."""
    for kind in ("ServiceMonitor", "PrometheusRule"):
        objs = of_kind(docs, kind)
        assert objs
        for obj in objs:
            assert obj["metadata"]["labels"].get("release") == "kube-prometheus-stack", obj["metadata"]["name"]
    addresses = {t["metadata"]["serverAddress"] for so in of_kind(docs, "ScaledObject") for t in so["spec"]["triggers"]}
    assert len(addresses) == 1 and ".monitoring.svc" in addresses.pop()
    (metrics,) = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "imgworker-metrics"]
    sources = [s["namespaceSelector"]["matchLabels"] for r in metrics["spec"]["ingress"] for s in r["from"]]
    assert {"kubernetes.io/metadata.name": "monitoring"} in sources


def test_batch_is_exported_and_counted_by_every_scaler(docs: list[dict[str, Any]]) -> None:
    """A `batch` job submitted while the CPU workers are scaled to zero must start a pod to coordinate it."""
    assert "batch" in imgworker_functions(None)
    families = GearmanCollector([]).families([ServerReport("a:4730", True, [FunctionStatus("batch", 1, 0, 0)])])
    waiting = {s.labels["function"]: s.value for f in families if f.name == "gearman_server_jobs_waiting"
               for s in f.samples}
    assert waiting == {"batch": 1}, "the no-worker alert reads gearman_server_jobs_waiting: batch must be there"
    for so in of_kind(docs, "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            matchers = re.findall(r'function\s*=~?\s*"([^"]*)"', trigger["metadata"]["query"])
            assert any(re.fullmatch(f"(?:{m})", "batch") for m in matchers), so["metadata"]["name"]


def test_scalers_have_hpa_behavior(docs: list[dict[str, Any]]) -> None:
    for so in of_kind(docs, "ScaledObject"):
        behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300, so["metadata"]["name"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0, so["metadata"]["name"]


def test_every_deployment_has_a_disruption_budget(docs: list[dict[str, Any]]) -> None:
    budgets = [p["spec"]["selector"]["matchLabels"] for p in of_kind(docs, "PodDisruptionBudget")]
    for dep in of_kind(docs, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in sel.items()) for sel in budgets), dep["metadata"]["name"]


def test_site_settings_are_in_one_place(docs: list[dict[str, Any]]) -> None:
    """Namespace, ServiceAccount (IRSA), job servers, bucket and region: set by the overlay, used by every pod."""
    (ns,) = of_kind(docs, "Namespace")
    namespace = ns["metadata"]["name"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") == namespace, (d["kind"], d["metadata"]["name"])
    (sa,) = of_kind(docs, "ServiceAccount")
    role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role)
    services = {s["metadata"]["name"] for s in of_kind(docs, "Service")}
    for name, pod in pods(docs):
        if name.startswith("gearmand"):
            continue
        assert pod["serviceAccountName"] == sa["metadata"]["name"], name
        (c,) = pod["containers"]
        env = config_env(docs, c)
        assert env["IMGWORKER_S3_BUCKETS"] and env["IMGWORKER_S3_REGION"], name
        servers = env["IMGWORKER_SERVERS"].split(",")
        assert {s.split(":")[0] for s in servers} == {s for s in services if s.startswith("gearmand")}, name


def test_staging_runs_on_one_node_and_production_spreads_its_job_servers() -> None:
    staging = [p for n, p in pods(render("staging")) if n.startswith("gearmand")]
    production = [p for n, p in pods(render("production")) if n.startswith("gearmand")]
    assert len(staging) == 1 and len(production) == 2
    (soft,) = staging
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in soft["affinity"]["podAntiAffinity"]
    for pod in production:
        assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def test_the_tested_keda_version_is_stated() -> None:
    """ScaledObjects with `fallback` scaled to 0 replicas need KEDA >= 2.19: each overlay and the docs say so."""
    for overlay in OVERLAYS:
        assert "KEDA >= 2.19" in (K8S / "overlays" / overlay / "kustomization.yaml").read_text(), overlay
    operations = (K8S.parent / "docs" / "operations.md").read_text()
    assert "**KEDA >= 2.19**" in operations and "KEDA >= 2.10" not in operations
