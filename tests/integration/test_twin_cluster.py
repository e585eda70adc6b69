"""An InferenceDeployment on the engine-twin image becomes Ready on the local stack, with the
operator running, and its sidecar reports the twin's KV blocks like a vLLM engine's.

Applies `examples/twin-llama3-8b.yaml` (held at one replica), waits for Ready, then reads the
pod's sidecar `/v1/occupancy` idle and while requests fill the twin's cache.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import urllib.error
import urllib.request
from typing import Any, Protocol

import aiohttp
import pytest
import yaml
from tests.integration import realnode
from tests.integration.autoscale_story import Story
from tests.support import wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# On the real node (kubelet, containerd, runc; the images this checkout builds).
cluster = realnode.module_cluster("tc")


class Operator(Protocol):
    """The `operator` fixture (tests/integration/conftest.py): running for the test."""

    def log(self, since: int = 0) -> str: ...


ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "twin-llama3-8b.yaml"


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        found: dict[str, Any] = json.loads(response.read())
        return found


def _kubectl_json(cluster: local.Cluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return found


def _ready(cluster: local.Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    infd = _kubectl_json(cluster, "-n", namespace, "get", "infd", name)
    for condition in (infd.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            found: dict[str, Any] = condition
            return found
    return None


async def _fill(engine_url: str, model: str, count: int) -> None:
    """Long requests that hold many blocks for a few seconds each."""
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            body = {"model": model, "prompt": [7] * 3000, "max_tokens": 400}
            async with session.post(engine_url + "/v1/completions", json=body) as response:
                assert response.status == 200, await response.text()
                await response.read()

        await asyncio.gather(*(one() for _ in range(count)))


def test_a_twin_deployment_becomes_ready_and_its_sidecar_reports_the_twins_blocks(
    cluster: local.Cluster, operator: Operator, namespace: str
) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["scaling"].update(minReplicas=1, maxReplicas=1)
    name = manifest["metadata"]["name"]
    model = manifest["spec"]["model"]["name"]
    blocks = int(manifest["spec"]["engine"]["extraArgs"][1])
    block_size = manifest["spec"]["engine"]["blockSize"]
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))

    try:
        wait.eventually(
            lambda: _ready(cluster, namespace, name),
            f"{name} Ready",
            timeout_s=180,
            retry_on=(OSError, urllib.error.URLError, KeyError, ValueError),
        )
    except pytest.fail.Exception:
        print(Story(cluster, namespace, name).diagnostics())
        raise
    pods = _kubectl_json(
        cluster, "-n", namespace, "get", "pods", "-l", f"kvscale.dev/inference-deployment={name}"
    )["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 1, [p["status"] for p in pods]
    pod_ip = running[0]["status"]["podIP"]
    engine_url = f"http://{pod_ip}:{manifest['spec']['engine'].get('port', 8000)}"
    occupancy_url = f"http://{pod_ip}:9090/v1/occupancy"

    def healthy_report() -> dict[str, Any] | None:
        report = _get_json(occupancy_url)
        return report if report["health"] == "ok" else None

    idle = wait.eventually(
        healthy_report,
        "a healthy occupancy report",
        timeout_s=60,
        retry_on=(OSError, urllib.error.URLError, KeyError, ValueError),
    )
    assert idle["block_size"] == block_size
    assert idle["num_gpu_blocks"] == blocks
    assert idle["kv_capacity_tokens"] == (blocks - 1) * block_size
    assert idle["num_used_blocks"] == 0
    # The engine in the pod is the twin, answering vLLM's API.
    models = _get_json(engine_url + "/v1/models")
    assert [m["id"] for m in models["data"]] == [model]

    async def load_and_watch() -> list[dict[str, Any]]:
        load = asyncio.create_task(_fill(engine_url, model, count=12))
        seen = []
        while not load.done():
            seen.append(await asyncio.to_thread(_get_json, occupancy_url))
            await asyncio.sleep(0.25)
        await load
        return seen

    seen = asyncio.run(load_and_watch())
    busiest = max(seen, key=lambda r: r["num_used_blocks"] or 0)
    # 12 x 3400 tokens need about 2550 of the 4095 usable blocks.
    assert busiest["health"] == "ok"
    assert busiest["num_used_blocks"] > blocks // 4
    assert busiest["num_requests_running"] > 0
    assert busiest["usage_ratio"] == pytest.approx(busiest["num_used_blocks"] / (blocks - 1))
