"""The real node: kubelet, containerd, runc, CNI and kube-proxy in the stack's own namespace.

One cluster with runtime "kubelet" for the module (its own, beside the session's control-plane
cluster). Pods run the test image `kvscale.local/webecho:1` (scripts/node/webecho.c), imported
into the node's containerd like the pause image; nothing is pulled.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.integration import realnode
from tests.support import wait

from kvscale.localstack import binaries, namespace, node
from kvscale.localstack import cluster as local

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

WAIT_S = 120.0  # generous: a busy 2-core machine; not a timing assertion
GPUS = 2


def _progress(line: str) -> None:
    print(f"[real node] {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.Cluster]:
    """A cluster with one real node and GPUS fake GPUs; torn down (and checked) at the end."""
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (network namespace, cgroups, mounts)")
    try:
        bins = binaries.ensure()
    except binaries.BinariesError as exc:
        pytest.fail(f"the control plane cannot be built: {exc}", pytrace=False)
    settings = local.Settings(
        name=f"rn{uuid.uuid4().hex[:6]}",
        state_dir=tmp_path_factory.mktemp("kvscale-real-node"),
        nodes=1,
        gpus_per_node=GPUS,
        runtime=local.KUBELET_RUNTIME,
    )
    handle = local.start(settings, bins=bins, progress=_progress)
    _progress(f"started in {handle.timings['total']:.1f}s: {dict(handle.timings)}")
    plan = handle.node
    try:
        yield handle
    finally:
        local.stop(handle.state_dir, progress=_progress)
    # `down` leaves nothing of the node behind.
    assert not (namespace.NETNS_DIR / plan.netns).exists()
    assert not pathlib.Path(f"/sys/class/net/{plan.veth_host}").exists()
    assert not any((h / plan.cgroup_root.lstrip("/")).exists() for h in namespace.hierarchies())
    assert not plan.root.exists()
    assert not plan.run_dir.exists()
    mounts = pathlib.Path("/proc/self/mountinfo").read_text()
    assert str(handle.state_dir) not in mounts
    # Nor entries in the host directories that the CNI library and kubelet write regardless.
    if node.CNI_CACHE_DIR.is_dir():
        assert not [e for e in node.CNI_CACHE_DIR.iterdir() if e.name.startswith(plan.netns)]
    if node.CONTAINER_LOG_LINKS.is_dir():
        links = [os.readlink(e) for e in node.CONTAINER_LOG_LINKS.iterdir() if e.is_symlink()]
        assert not [target for target in links if target.startswith(str(handle.state_dir))]


def _get(real: local.Cluster, *args: str) -> Any:
    return json.loads(real.kubectl("get", *args, "-o", "json").stdout)


def _apply(real: local.Cluster, document: dict[str, Any]) -> None:
    real.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))


def _pod(name: str, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "web",
        "image": node.TEST_IMAGE,
        "imagePullPolicy": "Never",
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080},
            "periodSeconds": 1,
        },
    }
    if gpus:
        container["resources"] = {"limits": {node.GPU_RESOURCE: str(gpus)}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
    }


def _ready(real: local.Cluster, name: str) -> dict[str, Any] | None:
    pod: dict[str, Any] = _get(real, "pod", name)
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return pod if ready else None


@pytest.fixture(scope="module")
def web(real: local.Cluster) -> dict[str, Any]:
    """A running webecho pod, Ready by its readiness probe."""
    _apply(real, _pod("web"))
    return wait.eventually(
        lambda: _ready(real, "web"), "pod web Ready", timeout_s=WAIT_S, retry_on=wait.NOT_MADE_YET
    )


def test_node_registers_ready_with_fake_gpus(real: local.Cluster) -> None:
    document = _get(real, "node", real.node.node_name)
    conditions = {c["type"]: c["status"] for c in document["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert document["status"]["allocatable"][node.GPU_RESOURCE] == str(GPUS)
    assert document["status"]["nodeInfo"]["kubeletVersion"] == binaries.KUBE_VERSION
    assert document["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    addresses = {a["type"]: a["address"] for a in document["status"]["addresses"]}
    assert addresses["InternalIP"] == real.node.addresses.node_ip


def test_pod_runs_and_is_reachable_from_the_host_by_its_ip(
    real: local.Cluster, web: dict[str, Any]
) -> None:
    ip = web["status"]["podIP"]
    assert ip.startswith(real.node.addresses.pod_cidr.rsplit(".", 1)[0] + ".")
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=10) as response:
        assert response.read().decode() == "hello from web\n"


def test_kubectl_logs_shows_the_containers_stdout_and_the_probe(
    real: local.Cluster, web: dict[str, Any]
) -> None:
    def logged() -> str | None:
        text = real.kubectl("logs", "web").stdout
        return text if "request: GET /healthz" in text else None

    text = wait.eventually(
        logged,
        "the readiness probe's requests in the pod's log",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    assert text.startswith("webecho listening on 8080\n")


def test_kubectl_exec_runs_a_command_in_the_container(
    real: local.Cluster, web: dict[str, Any]
) -> None:
    result = real.kubectl("exec", "web", "--", "/webecho", "say", "inside", "the", "pod")
    assert result.stdout == "inside the pod\n"


def test_cluster_ip_service_answers_inside_the_node_namespace(
    real: local.Cluster, web: dict[str, Any]
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    _apply(real, service)
    cluster_ip = _get(real, "service", "web")["spec"]["clusterIP"]
    fetch = (
        "import urllib.request as u; "
        f"print(u.urlopen('http://{cluster_ip}:80/', timeout=5).read().decode(), end='')"
    )

    def answered() -> str | None:
        result = real.in_node(sys.executable, "-c", fetch)
        return result.stdout if result.returncode == 0 else None

    assert (
        wait.eventually(
            answered,
            f"Service web ({cluster_ip}) answering",
            timeout_s=WAIT_S,
            retry_on=wait.NOT_MADE_YET,
        )
        == "hello from web\n"
    )
    # The Service range exists only inside the node's namespace.
    host_routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    assert real.service_cidr not in host_routes


def test_kubernetes_service_reaches_the_api_server_as_in_cluster_config_does(
    real: local.Cluster,
) -> None:
    # What a pod's in-cluster client does: HTTPS to the `kubernetes` Service's ClusterIP on
    # 443, checking the server's certificate against the cluster CA by that IP. Anonymous
    # requests are refused by the API server (401): an answer from it is what counts here.
    slice_ = _get(real, "endpointslice", "kubernetes")
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    cluster_ip = _get(real, "service", "kubernetes")["spec"]["clusterIP"]
    ca = real.files.pem("ca.crt")
    fetch = (
        "import ssl, urllib.request as u, urllib.error as e\n"
        f"c = ssl.create_default_context(cafile={str(ca)!r})\n"
        "try:\n"
        f"    u.urlopen('https://{cluster_ip}:443/version', context=c, timeout=5)\n"
        "    print('answered 200')\n"
        "except e.HTTPError as x:\n"
        "    print('answered', x.code)\n"
    )

    def answered() -> str | None:
        result = real.in_node(sys.executable, "-c", fetch)
        return result.stdout.strip() if result.returncode == 0 else None

    said = wait.eventually(
        answered,
        f"the kubernetes Service ({cluster_ip}:443) answering over verified TLS",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    assert said in {"answered 200", "answered 401", "answered 403"}


def _retagged(archive: pathlib.Path, name: str, into: pathlib.Path) -> pathlib.Path:
    """A copy of an OCI layout tar whose one image is named `name` (as a build would name it)."""
    out = into / "retagged.tar"
    with tarfile.open(archive) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name == "index.json" and data is not None:
                index = json.load(data)
                index["manifests"][0]["annotations"]["io.containerd.image.name"] = name
                raw = json.dumps(index).encode()
                member.size = len(raw)
                target.addfile(member, io.BytesIO(raw))
            else:
                target.addfile(member, data)
    return out


def test_an_image_built_here_loads_into_the_node_and_runs(
    real: local.Cluster, tmp_path: pathlib.Path
) -> None:
    # What a user does with an image built on this machine (no registry): `kvscale cluster
    # load-image ARCHIVE`, then a pod that names it with imagePullPolicy Never.
    name = "kvscale.local/loaded:1"
    archive = _retagged(binaries.ensure_node().root / "images" / "webecho.tar", name, tmp_path)
    local.load_images(real, [archive])
    pod = _pod("loaded")
    pod["spec"]["containers"][0]["image"] = name
    _apply(real, pod)
    ready = wait.eventually(
        lambda: _ready(real, "loaded"),
        "pod loaded Ready",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    assert ready["status"]["containerStatuses"][0]["image"] == name
    with pytest.raises(local.ClusterError, match="not found"):
        local.load_images(real, [tmp_path / "absent.tar"])


def test_pod_asking_more_gpus_than_exist_stays_pending_with_the_schedulers_reason(
    real: local.Cluster,
) -> None:
    _apply(real, _pod("greedy", gpus=GPUS + 1))

    def unschedulable() -> dict[str, Any] | None:
        pod = _get(real, "pod", "greedy")
        for condition in pod.get("status", {}).get("conditions", []):
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                return dict(condition)
        return None

    condition = wait.eventually(
        unschedulable, "pod greedy unschedulable", timeout_s=WAIT_S, retry_on=wait.NOT_MADE_YET
    )
    assert condition["reason"] == "Unschedulable"
    assert f"Insufficient {node.GPU_RESOURCE}" in condition["message"]
    assert _get(real, "pod", "greedy")["status"]["phase"] == "Pending"
    real.kubectl("delete", "pod", "greedy", "--wait=false")


def test_kill_9_of_the_containers_process_makes_kubelet_restart_it(
    real: local.Cluster,
) -> None:
    _apply(real, _pod("victim"))
    pod = wait.eventually(
        lambda: _ready(real, "victim"),
        "pod victim Ready",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0
    container_id = status["containerID"].removeprefix("containerd://")
    os.kill(realnode.container_pid(real, container_id), signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        ready = _ready(real, "victim")
        if ready is None:
            return None
        current = ready["status"]["containerStatuses"][0]
        return current if current["restartCount"] >= 1 else None

    current = wait.eventually(
        restarted,
        "kubelet restarting the killed container",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    assert current["restartCount"] == 1
    assert current["lastState"]["terminated"]["exitCode"] == 137
    real.kubectl("delete", "pod", "victim", "--wait=false")
