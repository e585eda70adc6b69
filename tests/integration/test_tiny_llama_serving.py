"""End to end with every real part: `kubectl apply -f examples/tiny-llama.yaml` gives a model
that answers.

The real API server, controller manager and scheduler; the operator as its own process; a real
node (kubelet, containerd, runc) running the pod from built images: real vLLM (the vLLM CPU
engine image, engine_env/Containerfile) serving the tiny model from a hostPath model cache
(spec.model.cache, mounted read-only as the Hugging Face cache), and the kvscale sidecar (the
kvscale image) reading it. The test talks to the pod the way a gateway would, by pod IP.
"""

from __future__ import annotations

import json
import pathlib
import urllib.request
from typing import Any

import pytest
import yaml
from tests.integration import realnode
from tests.integration.conftest import Operator
from tests.support import wait

from kvscale.localstack import cluster as local
from kvscale.localstack import engine_env

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny-llama.yaml"
# vLLM's CPU build needs 50-120 s to start here; more when other engines compete for 2 cores.
ENGINE_START_TIMEOUT_S = 420.0

# Two fake GPUs: the example's one pod takes one.
cluster = realnode.module_cluster("tl", 2, None, vllm=True)


def _get(cluster: local.Cluster, namespace: str, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", "-n", namespace, *args, "-o", "json").stdout)


def _http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _condition(infd: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in infd.get("status", {}).get("conditions", []):
        if condition["type"] == kind:
            return dict(condition)
    return None


def test_the_example_serves_the_tiny_model_on_real_vllm(
    cluster: local.Cluster,
    operator: Operator,
    namespace: str,
    model_cache: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    example = engine_env.on_local_node(yaml.safe_load(EXAMPLE.read_text()))
    assert example["spec"]["model"]["cache"] == {"hostPath": str(model_cache)}
    name = example["metadata"]["name"]
    applied = tmp_path / "tiny-llama.yaml"
    applied.write_text(yaml.safe_dump(example))
    cluster.kubectl("apply", "-n", namespace, "-f", str(applied))

    def ready() -> dict[str, Any] | None:
        infd = _get(cluster, namespace, "infd", name)
        condition = _condition(infd, "Ready")
        return infd if condition is not None and condition["status"] == "True" else None

    try:
        infd = wait.eventually(
            ready,
            f"{name} to report Ready",
            timeout_s=ENGINE_START_TIMEOUT_S,
            retry_on=wait.NOT_MADE_YET,
        )
    except AssertionError:
        selector = f"kvscale.dev/inference-deployment={name}"
        described = cluster.kubectl(
            "describe", "pods", "-n", namespace, "-l", selector, check=False
        )
        logs = cluster.kubectl(
            "logs", "-n", namespace, "-l", selector, "-c", "engine", "--tail", "60", check=False
        )
        print(
            f"{described.stdout}{described.stderr}\n--- engine log ---\n{logs.stdout}{logs.stderr}"
        )
        raise
    assert infd["status"]["readyReplicas"] == 1
    assert infd["status"]["observedGeneration"] == infd["metadata"]["generation"]

    pods = _get(cluster, namespace, "pods", "-l", f"kvscale.dev/inference-deployment={name}")
    assert len(pods["items"]) == 1
    pod = pods["items"][0]
    assert pod["spec"]["nodeName"].startswith("local-node-")
    assert {c["name"]: c["ready"] for c in pod["status"]["containerStatuses"]} == {
        "engine": True,
        "sidecar": True,
    }
    assert realnode.container_status(pod, "engine")["image"] == engine_env.VLLM_CPU_IMAGE
    engine_pid = realnode.task_pid(cluster, pod, "engine")
    ip = pod["status"]["podIP"]
    engine_port = infd["spec"]["engine"]["port"]
    model = infd["spec"]["model"].get("servedName") or infd["spec"]["model"]["name"]

    # The model answers a completion at the pod's own address, as a gateway would call it.
    answer = _http_json(
        f"http://{ip}:{engine_port}/v1/completions",
        {"model": model, "prompt": "The KV cache is", "max_tokens": 8, "ignore_eos": True},
    )
    assert answer["model"] == model
    assert answer["usage"]["completion_tokens"] == 8
    assert isinstance(answer["choices"][0]["text"], str)

    # The sidecar beside it reads the same engine: its block count is the one the CR asked for.
    report = _http_json(f"http://{ip}:{infd['spec']['sidecar']['port']}/v1/occupancy")
    assert report["health"] == "ok", report
    args = pod["spec"]["containers"][0]["args"]
    assert report["num_gpu_blocks"] == int(args[args.index("--num-gpu-blocks-override") + 1])
    assert report["block_size"] == infd["spec"]["engine"]["blockSize"]

    # kubectl shows the printer columns a user reads.
    table = cluster.kubectl("get", "infd", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "REPLICAS", "DESIRED", "OCCUPANCY", "MODE", "AGE"]
    row = table[1].split()
    assert row[:4] == [name, "True", "1", "1"]

    # Deleting the CR takes the Deployment, its pod and the engine processes with it.
    cluster.kubectl("delete", "infd", name, "-n", namespace, "--wait=true", "--timeout=120s")

    def gone() -> bool:
        left = _get(cluster, namespace, "pods", "-l", f"kvscale.dev/inference-deployment={name}")
        return not left["items"] and not pathlib.Path(f"/proc/{engine_pid}").exists()

    wait.eventually(
        gone,
        "the engine pod to be garbage-collected and its vLLM process to exit",
        timeout_s=180,
        retry_on=wait.NOT_MADE_YET,
    )
