"""A cluster with one real node (kubelet, containerd, runc) and the project's images imported,
for the test modules that run InferenceDeployments and the operator's chart on it. Does I/O."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support import manifest

from kvscale.localstack import binaries
from kvscale.localstack import cluster as local

# The images' tag: the package's version, as scripts/build-images.sh tags them.
VERSION = importlib.metadata.version("kvscale")
# Containerfile's engine-twin target.
ENGINE_TWIN_IMAGE = f"ghcr.io/kvscale/engine-twin:{VERSION}"
# The node's own test image (scripts/node/webecho.c): an HTTP server on $PORT, default 8080.
WEBECHO_IMAGE = "kvscale.local/webecho:1"


def _progress(line: str) -> None:
    print(f"[real node] {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def cluster_with_images(
    state_dir: pathlib.Path,
    gpus: int,
    prefix: str,
    *,
    gpus_per_node: int | None = None,
    vllm: bool = False,
) -> Iterator[local.Cluster]:
    """A one-node kubelet cluster with `gpus` fake GPUs and the kvscale and engine-twin images
    (built by scripts/build-images.sh when this checkout's sources changed) in its containerd.
    `gpus_per_node` sets the cluster's `gpus_per_node` (what tests size pods by) with the same
    total: 4 GPUs as 2 x 2 make pods of 2 GPUs, 2 of which
    fit. `vllm` imports the vLLM CPU engine image too (3.6 GB: a minute or two)."""
    per_node = gpus_per_node or gpus
    if gpus % per_node:
        raise ValueError(f"gpus = {gpus} is not a multiple of gpus_per_node = {per_node}")
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (network namespace, cgroups, mounts)")
    try:
        bins = binaries.ensure()
        started = time.monotonic()
        archives = binaries.ensure_images().archives
        if vllm:
            archives.append(binaries.ensure_engine_image())
        _progress(f"images ready in {time.monotonic() - started:.1f}s: {archives}")
    except binaries.BinariesError as exc:
        pytest.fail(f"the control plane or the images cannot be built: {exc}", pytrace=False)
    settings = local.Settings(
        name=f"{prefix}{uuid.uuid4().hex[:6]}",
        state_dir=state_dir,
        nodes=gpus // per_node,
        gpus_per_node=per_node,
        runtime=local.KUBELET_RUNTIME,
    )
    handle = local.start(settings, bins=bins, progress=_progress)
    try:
        started = time.monotonic()
        local.load_images(handle, archives)
        _progress(f"images imported in {time.monotonic() - started:.1f}s")
        yield handle
    finally:
        local.stop(handle.state_dir, progress=_progress)


def module_cluster(
    prefix: str, gpus: int = 4, gpus_per_node: int | None = 2, *, vllm: bool = False
) -> Any:
    """A module-scoped `cluster` fixture on the real node (`cluster_with_images`: `gpus` fake
    GPUs, `gpus_per_node` and `vllm` as there), for a test module to take in place of the session's:
    `cluster = realnode.module_cluster("ch")`. The operator fixtures and `namespace` follow it.
    `prefix` (a few letters) names the cluster, so a leftover one says which module made it."""

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.Cluster]:
        state_dir = tmp_path_factory.mktemp(f"kvscale-real-{prefix}")
        with cluster_with_images(
            state_dir, gpus, prefix, gpus_per_node=gpus_per_node, vllm=vllm
        ) as handle:
            yield handle

    return cluster


MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"  # the twin's profile: Llama-3-8B on an H100
ENGINE_PORT = 8000


def twin_infd(name: str, *, drain_s: int, delay_s: int) -> dict[str, Any]:
    """An InferenceDeployment of engine twins (512 KV blocks of 16 tokens, so eight concurrent
    3,000-token prompts fill one), one fake GPU each, 1 to 3 replicas; `drain_s` is the
    engine's shutdown grace, `delay_s` the scale-down delay."""
    spec = {
        "model": {"name": MODEL},
        "engine": {
            "image": ENGINE_TWIN_IMAGE,
            "port": ENGINE_PORT,
            "blockSize": 16,
            "maxModelLen": 4096,
            "shutdownGraceSeconds": drain_s,
            "extraArgs": ["--num-gpu-blocks-override", "512"],
        },
        # CPU is a real cgroup limit: the twin needs 300m to answer its probes under load.
        "resources": {"gpusPerReplica": 1, "cpu": "300m", "memory": "512Mi"},
        "scaling": manifest.autoscaling(8, delay_s),
    }
    return manifest.inference_deployment(name, spec)


def tag_image(real: local.Cluster, source: str, target: str) -> None:
    """Another name for an image in the node's containerd (`ctr images tag`), as a push of a
    new tag to a registry would give one: a version bump a pod template can move to."""
    _ctr(real, "images", "tag", "--force", source, target)


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for status in pod["status"].get("containerStatuses") or []:
        if status["name"] == name:
            return dict(status)
    raise AssertionError(f"pod {pod['metadata']['name']} has no status for container {name}")


def _ctr(real: local.Cluster, *args: str) -> str:
    """`ctr` against the node's containerd, in the namespace kubelet's CRI uses; its stdout."""
    argv = ["ctr", "--address", str(real.node.socket), "-n", "k8s.io", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _container_id(pod: dict[str, Any], container: str) -> str:
    """containerd's id of a pod's container (its status names it with the runtime's scheme)."""
    return str(container_status(pod, container)["containerID"]).removeprefix("containerd://")


def task_pid(real: local.Cluster, pod: dict[str, Any], container: str) -> int:
    """The host pid of a pod's container's first process."""
    return container_pid(real, _container_id(pod, container))


def container_pid(real: local.Cluster, container_id: str) -> int:
    """The host pid of a container's first process, from the node's containerd."""
    listing = _ctr(real, "tasks", "ls")
    for line in listing.splitlines()[1:]:
        task, pid, _status = line.split()
        if task == container_id:
            return int(pid)
    raise AssertionError(f"no task {container_id} in:\n{listing}")


def container_pids(real: local.Cluster, pod: dict[str, Any], container: str) -> list[int]:
    """The host pids of every process of a pod's container, as containerd lists them."""
    listing = _ctr(real, "tasks", "ps", _container_id(pod, container))
    return [int(line.split()[0]) for line in listing.splitlines()[1:] if line.strip()]


class Partition:
    """The host cut off from one port of one pod: a netfilter rule in the pod's own network
    namespace drops every packet from the host's end of the node's veth (where the operator,
    a host process, reaches pods from) to `port`, on connections old and new. kubelet's probes
    come from the node's bridge, another address, so they still get through, as in a real
    cluster where the operator's path is cut and the kubelet still reaches its pod. Only that
    namespace's rules change; `heal` removes the rule. Does I/O."""

    def __init__(self, real: local.Cluster, pid: int, port: int) -> None:
        self._enter = ["nsenter", f"--net=/proc/{pid}/ns/net", "iptables", "-w"]
        self._rule = [
            "INPUT", "-s", real.node.addresses.host_ip, "-p", "tcp", "--dport", str(port),
            "-j", "DROP",
        ]  # fmt: skip
        self.dropped = 0
        """Packets the rule dropped, read at `heal`."""
        self._cut = False

    def start(self) -> None:
        subprocess.run([*self._enter, "-I", *self._rule], capture_output=True, check=True)
        self._cut = True

    def heal(self) -> None:
        """Remove the rule (idempotent), counting what it dropped first."""
        if not self._cut:
            return
        listing = subprocess.run(
            [*self._enter, "-L", "INPUT", "-n", "-v", "-x"], capture_output=True, text=True
        ).stdout
        for line in listing.splitlines():
            if "DROP" in line.split():
                self.dropped = int(line.split()[0])
        subprocess.run([*self._enter, "-D", *self._rule], capture_output=True, check=True)
        self._cut = False


def http_inside_the_node(
    real: local.Cluster, url: str, body: dict[str, Any] | None = None
) -> str | None:
    """GET `url`, or POST `body` as JSON, from inside the node's network namespace, where
    Service addresses route (kube-proxy's rules live there); the answer's body, or None when
    the request failed."""
    data = None if body is None else json.dumps(body).encode()
    script = (
        "import sys, urllib.request as u\n"
        f"r = u.Request({url!r}, data={data!r}, headers={{'Content-Type': 'application/json'}})\n"
        "sys.stdout.write(u.urlopen(r, timeout=10).read().decode())\n"
    )
    result = real.in_node(sys.executable, "-c", script)
    return result.stdout if result.returncode == 0 else None
