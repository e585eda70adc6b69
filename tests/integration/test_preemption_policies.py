"""Each preemption policy runs on the local stack, through the operator, end to end.

`recompute` on real vLLM is covered by test_tiny_llama_serving.py. Here both policies run on the
engine twin, which models swap (KV offloading to CPU) as well as recompute: vLLM's CPU build
refuses `--kv-offloading-size` ("CPU Offloading is currently only supported on CUDA-alike and
XPU GPUs", docs/local-stack.md), so on these machines swap can only be exercised on the twin.
The pod must become Ready with the arguments the policy renders, and its sidecar must read the
engine like any other.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from tests.integration import realnode
from tests.integration.conftest import Operator
from tests.support import manifest, wait

from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# On the real node (kubelet, containerd, runc; the images this checkout builds).
cluster = realnode.module_cluster("pp")

TWIN_IMAGE = "ghcr.io/kvscale/engine-twin:0.1.0"


def _manifest(name: str, preemption: dict[str, Any]) -> dict[str, Any]:
    spec = {
        "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
        "engine": {
            "image": TWIN_IMAGE,
            "maxModelLen": 4096,
            "preemption": preemption,
            "extraArgs": ["--num-gpu-blocks-override", "1024"],
        },
        "resources": {"gpusPerReplica": 1, "cpu": "100m", "memory": "8Gi"},
        "scaling": {"minReplicas": 1, "maxReplicas": 1},
    }
    return manifest.inference_deployment(name, spec)


def _get(cluster: local.Cluster, namespace: str, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", "-n", namespace, *args, "-o", "json").stdout)


@pytest.mark.parametrize(
    ("policy", "expected_args"),
    [
        ({"policy": "recompute"}, []),
        (
            {"policy": "swap", "swapSpaceGiB": 4},
            ["--kv-offloading-size", "4", "--kv-offloading-backend", "native"],
        ),
    ],
    ids=["recompute", "swap"],
)
def test_each_preemption_policy_runs_on_the_local_stack(
    cluster: local.Cluster,
    operator: Operator,
    namespace: str,
    policy: dict[str, Any],
    expected_args: list[str],
) -> None:
    name = f"policy-{policy['policy']}"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_manifest(name, policy)))

    def ready() -> dict[str, Any] | None:
        infd = _get(cluster, namespace, "infd", name)
        for condition in infd.get("status", {}).get("conditions", []):
            if condition["type"] == "Ready" and condition["status"] == "True":
                return dict(infd)
        return None

    wait.eventually(ready, f"{name} to report Ready", timeout_s=180, retry_on=wait.NOT_MADE_YET)
    pods = _get(cluster, namespace, "pods", "-l", f"kvscale.dev/inference-deployment={name}")
    pod = pods["items"][0]
    args = next(c["args"] for c in pod["spec"]["containers"] if c["name"] == "engine")
    offloading = [a for a in args if a.startswith("--kv-offloading")]
    assert offloading == expected_args[0::2]
    for flag, value in zip(expected_args[0::2], expected_args[1::2], strict=True):
        assert args[args.index(flag) + 1] == value

    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:9090/v1/occupancy") as reply:
        report = json.load(reply)
    assert report["health"] == "ok", report
    assert report["num_gpu_blocks"] == 1024
