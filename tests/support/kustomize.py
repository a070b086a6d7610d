"""k8s/ rendered as a cluster gets it: ``kubectl kustomize`` (or the kustomize binary) of an overlay."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from support.tools import missing

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    # Neither is packaged by Debian (bookworm), PyPI or npm: kubectl comes with the cloud SDKs, kustomize from
    # its releases. Without one the overlays cannot be rendered: fail in CI, skip elsewhere (support/tools.py).
    missing("kubectl (or kustomize)", "install kubectl from your Kubernetes distribution")


@functools.cache
def _render(directory: str) -> str:
    proc = subprocess.run([*kustomize_command(), directory], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize {directory}: {proc.stderr}"
    return proc.stdout


def render(overlay: str | Path) -> list[dict[str, Any]]:
    """The objects of ``k8s/overlays/<overlay>`` (or of any kustomization directory), a fresh copy each call."""
    directory = overlay if isinstance(overlay, Path) else K8S / "overlays" / overlay
    return [d for d in yaml.safe_load_all(_render(str(directory))) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def config_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps, then env (which wins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= find(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return env
