"""`kvscale status` against the real API server, with the operator running and an engine-twin
pod serving: the requests line comes from the pod's sidecar report, read through the API
server's pod proxy, and the JSON output carries the same numbers."""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any, Protocol

import pytest
import yaml
from tests.integration import realnode
from tests.support import wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# On the real node (kubelet, containerd, runc; the images this checkout builds).
cluster = realnode.module_cluster("st")

ROOT = pathlib.Path(__file__).resolve().parents[2]
KVSCALE = ROOT / ".venv" / "bin" / "kvscale"
EXAMPLE = ROOT / "examples" / "twin-llama3-8b.yaml"


class Operator(Protocol):
    """The `operator` fixture (tests/integration/conftest.py): running for the test."""

    def log(self, since: int = 0) -> str: ...


def status(cluster: local.Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KVSCALE), "status", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_status_shows_the_live_report_of_a_serving_pod(
    cluster: local.Cluster, operator: Operator, namespace: str
) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["scaling"].update(minReplicas=1, maxReplicas=2)
    name = manifest["metadata"]["name"]
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))

    def reporting() -> dict[str, Any] | None:
        found = status(cluster, name, "-n", namespace, "-o", "json")
        assert found.returncode == 0, found.stderr
        (item,) = json.loads(found.stdout)["items"]
        # The report (read live through the pod proxy) and the ready count (from the CR's
        # status, which the operator writes when it sees the pod ready) arrive separately:
        # wait for both, in whichever order.
        ready = item["replicas"]["ready"] == 1
        return item if item["reports"]["reporting"] == 1 and ready else None

    item = wait.eventually(
        reporting, "a report read through the pod proxy and one ready replica", timeout_s=180
    )
    assert item["replicas"]["max"] == 2
    assert item["requests"] == {"waiting": 0, "running": 0}  # idle
    assert item["reports"]["missing"] == []
    text = status(cluster, "-n", namespace)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"{namespace}/{name}   model {manifest['spec']['model']['name']}"
    assert "0 waiting, 0 running" in text.stdout
    assert "(reports from 1 of 1 ready pods)" in text.stdout
    assert any(line.startswith("  conditions   ") for line in lines)
    # All namespaces: this one is among them.
    assert f"{namespace}/{name}" in status(cluster, "-A").stdout
