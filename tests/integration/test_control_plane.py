"""The local control plane is a real Kubernetes: version, controllers, scheduler, GC and RBAC.

Everything goes through the project's kubectl against the session's `cluster`, which has no
node (runtime "none"): the scheduling test registers a Node by hand and pins its pod to it, and the
Deployment's pods are kept off any node so nothing tries to run them.
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.support import wait

from kvscale.localstack import binaries
from kvscale.localstack import cluster as local

pytestmark = pytest.mark.cluster


# Generous: the machine may be busy with a build or engines; these are not timing assertions.
WAIT_S = 90.0


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


@pytest.fixture
def namespace(cluster: local.Cluster) -> Iterator[str]:
    name = f"cp-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)

    # Pods and service accounts need the namespace's `default` service account first.
    def default_account() -> bool | None:
        found = cluster.kubectl("get", "sa", "default", "-n", name, check=False)
        return True if found.returncode == 0 else None

    wait.eventually(default_account, f"service account default in {name}", timeout_s=WAIT_S)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_api_server_reports_the_built_version(cluster: local.Cluster) -> None:
    version = _json(cluster.kubectl("version", "-o", "json"))["serverVersion"]

    assert version["gitVersion"] == binaries.KUBE_VERSION
    major, minor, _ = binaries.KUBE_VERSION.removeprefix("v").split(".")
    assert (version["major"], version["minor"]) == (major, minor)


def test_deployment_gets_a_replicaset_and_pods(cluster: local.Cluster, namespace: str) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    # No node has this label: the pods stay Pending, nothing tries to run them.
                    "nodeSelector": {"kvscale.dev/test-no-such-node": "true"},
                    "containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    uid = _json(cluster.kubectl("get", "deployment", "web", "-n", namespace, "-o", "json"))[
        "metadata"
    ]["uid"]

    def replica_set() -> dict[str, Any] | None:
        items = _json(cluster.kubectl("get", "rs", "-n", namespace, "-l", "app=web", "-o", "json"))
        return items["items"][0] if items["items"] else None

    rs = wait.eventually(replica_set, "the Deployment's ReplicaSet", timeout_s=WAIT_S)
    assert [o["uid"] for o in rs["metadata"]["ownerReferences"]] == [uid]

    def pods() -> list[dict[str, Any]] | None:
        items = _json(
            cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json")
        )
        return items["items"] if len(items["items"]) == 2 else None

    owners = {
        p["metadata"]["ownerReferences"][0]["uid"]
        for p in wait.eventually(pods, "2 pods", timeout_s=WAIT_S)
    }
    assert owners == {rs["metadata"]["uid"]}


def test_scheduler_binds_a_pod_to_a_node(cluster: local.Cluster, namespace: str) -> None:
    node_name = f"cp-test-node-{uuid.uuid4().hex[:8]}"
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node_name, "labels": {"kubernetes.io/hostname": node_name}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "10"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Test"}],
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pinned", "namespace": namespace},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node_name},
            # A hand-made Node has no kubelet heartbeat; the control plane taints it as such.
            "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        assert "nodeName" not in pod["spec"]
        cluster.kubectl(
            "wait",
            "--for=condition=PodScheduled",
            "pod/pinned",
            "-n",
            namespace,
            f"--timeout={WAIT_S:.0f}s",
        )
        bound = _json(cluster.kubectl("get", "pod", "pinned", "-n", namespace, "-o", "json"))
        assert bound["spec"]["nodeName"] == node_name
    finally:
        # No kubelet confirms the deletion of a pod on this node: force it.
        cluster.kubectl(
            "delete", "pod", "pinned", "-n", namespace, "--grace-period=0", "--force", check=False
        )
        cluster.kubectl("delete", "node", node_name, "--wait=false", check=False)


def test_garbage_collector_deletes_dependents(cluster: local.Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = _json(cluster.kubectl("get", "cm", "owner", "-n", namespace, "-o", "json"))["metadata"][
        "uid"
    ]
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(dependent))

    cluster.kubectl("delete", "cm", "owner", "-n", namespace, "--cascade=background")

    cluster.kubectl(
        "wait", "--for=delete", "cm/dependent", "-n", namespace, f"--timeout={WAIT_S:.0f}s"
    )
    gone = cluster.kubectl("get", "cm", "dependent", "-n", namespace, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr


def test_rbac_forbids_an_unprivileged_service_account(
    cluster: local.Cluster, namespace: str, tmp_path: pathlib.Path
) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    ca = cluster.files.pem("ca.crt").read_bytes()
    token_kubeconfig = tmp_path / "nobody.kubeconfig"
    token_kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority-data": base64.b64encode(ca).decode(),
                        },
                    }
                ],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [{"name": "nobody", "context": {"cluster": "local", "user": "nobody"}}],
                "current-context": "nobody",
            }
        )
    )
    env = {**cluster.env(), "KUBECONFIG": str(token_kubeconfig)}

    whoami = local.run_kubectl(env, ["auth", "whoami", "-o", "json"])
    listed = local.run_kubectl(env, ["get", "secrets", "-n", namespace], check=False)

    # Authenticated (the token is valid) yet not authorised: that is RBAC at work.
    assert _json(whoami)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:nobody"
    )
    assert listed.returncode != 0
    assert "Forbidden" in listed.stderr
    assert cluster.kubectl("get", "secrets", "-n", namespace).returncode == 0


def test_a_component_that_fails_to_start_is_reported_and_nothing_is_left(
    tmp_path: pathlib.Path,
) -> None:
    real = binaries.find()
    assert real is not None, "needs the built control plane (make control-plane)"
    fake = tmp_path / "bin"
    fake.mkdir()
    for component in binaries.COMPONENTS:
        (fake / component).symlink_to(real.path(component))
    (fake / "kube-apiserver").unlink()
    (fake / "kube-apiserver").write_text(
        "#!/bin/sh\necho 'fake apiserver: refusing to start' >&2\nexit 3\n"
    )
    (fake / "kube-apiserver").chmod(0o755)
    state_dir = tmp_path / "state"
    settings = local.Settings(name="broken", state_dir=state_dir, runtime=local.NO_RUNTIME)

    with pytest.raises(local.StartError) as caught:
        local.start(settings, bins=binaries.Binaries(fake))

    assert caught.value.component == "kube-apiserver"
    assert "fake apiserver: refusing to start" in str(caught.value)
    assert local.load(state_dir) is None
    etcd_log = state_dir / "logs" / "etcd.log"
    assert etcd_log.exists(), "etcd was started first"
    assert _live_pids_with_argument(f"--initial-cluster-token=kvscale-{settings.name}") == []


def _live_pids_with_argument(argument: str) -> list[int]:
    """Processes (not zombies) with `argument` in their command line."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if argument.encode() in argv and stat[stat.rindex(")") + 2] not in "ZX":
            found.append(int(entry.name))
    return found
