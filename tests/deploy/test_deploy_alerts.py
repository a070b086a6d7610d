"""The PrometheusRule's alerts, evaluated by Debian's `promtool test rules` on series shaped like ours.

Series carry the labels Prometheus Operator adds (namespace, pod) and the worker's prefork ``pid`` label
(multiprocess gauges, one series per process). Annotations are left out of the unit test (promtool compares them
too); the expressions, `for` durations and labels are what is tested.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from support.tools import needs_tool

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = needs_tool("promtool", "apt-get install prometheus", path="/usr/bin/promtool")

MI = 1024 * 1024


def rules() -> dict[str, Any]:
    for doc in yaml.safe_load_all((REPO / "k8s" / "base" / "monitoring.yaml").read_text()):
        if doc and doc.get("kind") == "PrometheusRule":
            groups = doc["spec"]["groups"]
            for group in groups:
                for rule in group["rules"]:
                    rule.pop("annotations", None)
            return {"groups": groups}
    raise AssertionError("no PrometheusRule")


def promtool(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec))
    return subprocess.run(
        [PROMTOOL, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def case(series: dict[str, str], alert: str, at: str, expected: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": e} for e in expected]}],
    }


def test_rules_are_valid(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    proc = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts(tmp_path: Path) -> None:
    limit = 'kube_pod_container_resource_limits{resource="memory", container="worker", namespace="img", pod="%s"}'
    rss = 'imgworker_resident_memory_bytes{namespace="img", pod="%s", pid="%d"}'
    tests = [
        # Memory: 3 processes x 480 MiB = 1440 of 1536 MiB (94%) fires, though no single process is over 32%.
        case(
            {
                limit % "big": f"{1536 * MI}x20",
                **{rss % ("big", pid): f"{480 * MI}x20" for pid in (1, 2, 3)},
                limit % "small": f"{1536 * MI}x20",
                **{rss % ("small", pid): f"{300 * MI}x20" for pid in (1, 2, 3)},
            },
            "ImgworkerMemoryNearLimit",
            "15m",
            [{"severity": "warning", "namespace": "img", "pod": "big"}],
        ),
        # No workers, per server: resize waits on a, whose workers are gone; b has 3 (counted in the sums).
        case(
            {
                'gearman_server_jobs_waiting{server="a:4730", function="resize"}': "5x20",
                'gearman_server_workers{server="a:4730", function="resize"}': "0x20",
                'gearman_server_jobs_waiting{server="b:4730", function="resize"}': "0x20",
                'gearman_server_workers{server="b:4730", function="resize"}': "3x20",
                'gearman_jobs_waiting{function="resize"}': "5x20",
                'gearman_workers_available{function="resize"}': "3x20",
            },
            "ImgworkerNoWorkers",
            "15m",
            [{"severity": "critical", "server": "a:4730", "function": "resize"}],
        ),
        # Exporter absent: the queue series stop (stale) after 5 minutes; 2 minutes later the alert fires.
        case(
            {'gearman_jobs_queued{function="resize"}': "3x4 stale", 'gearman_up{server="a:4730"}': "1x4 stale"},
            "ImgworkerExporterAbsent",
            "8m",
            [{"severity": "critical", "function": "resize"}],  # absent() keeps the matcher's label
        ),
        case(
            {'gearman_jobs_queued{function="resize"}': "0x20"}, "ImgworkerExporterAbsent", "15m", []
        ),
        # Stuck slot: pod "hung" holds a job and finished none in 10+ minutes; "busy" keeps finishing jobs;
        # "fresh" hangs on its very first job (no jobs_total series at all).
        case(
            {
                'imgworker_jobs_in_flight{namespace="img", pod="hung", pid="1"}': "1x30",
                'imgworker_jobs_total{namespace="img", pod="hung", pid="1", function="resize", outcome="OK"}': "7x30",
                'imgworker_jobs_in_flight{namespace="img", pod="busy", pid="1"}': "1x30",
                'imgworker_jobs_total{namespace="img", pod="busy", pid="1", function="resize", outcome="OK"}': "0+5x30",
                'imgworker_jobs_in_flight{namespace="img", pod="fresh", pid="1"}': "1x30",
            },
            "ImgworkerStuckSlot",
            "25m",
            [
                {"severity": "warning", "namespace": "img", "pod": "hung"},
                {"severity": "warning", "namespace": "img", "pod": "fresh"},
            ],
        ),
    ]
    proc = promtool(tmp_path, tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
