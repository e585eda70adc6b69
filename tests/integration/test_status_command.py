"""`kvscale status` against the real API server, with the operator running and an engine-twin
pod serving: the requests line comes from the pod's sidecar report, read through the API
server's pod proxy, and the JSON output carries the same numbers."""

from __future__ import annotations

import json
import pathlib
import subprocess
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pytest
import yaml

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
KVSCALE = ROOT / ".venv" / "bin" / "kvscale"
EXAMPLE = ROOT / "examples" / "twin-llama3-8b.yaml"
T = TypeVar("T")


class Operator(Protocol):
    """The `operator` fixture (tests/integration/conftest.py): running for the test."""

    def log(self, since: int = 0) -> str: ...


def eventually(probe: Callable[[], T | bool | None], what: str, timeout_s: float = 180.0) -> T:
    """Polls `probe` until it returns something other than None or False; fails with `what`
    and the last value after `timeout_s` (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        value = probe()
        if value is not None and value is not False:
            return value  # type: ignore[return-value]
        last = value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout_s:.0f}s; last: {last!r}")
        time.sleep(1.0)


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

    item = eventually(reporting, "a report read through the pod proxy and one ready replica")
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
