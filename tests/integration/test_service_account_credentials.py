"""The node agent hands each pod its ServiceAccount's credentials, as kubelet's projected token
volume does: a token bound to the pod, the CA and the namespace, and KUBECONFIG pointing at
them; a pod that opts out gets none."""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support import wait

from kvscale.localstack import cluster as local

pytestmark = pytest.mark.cluster

NAMESPACE = "sa-credentials"


@pytest.fixture(scope="module")
def namespace(cluster: local.Cluster) -> Iterator[str]:
    cluster.kubectl("create", "namespace", NAMESPACE)
    wait.eventually(
        lambda: (
            cluster.kubectl(
                "get", "serviceaccount", "default", "-n", NAMESPACE, check=False
            ).returncode
            == 0
        ),
        "the namespace's default ServiceAccount",
        timeout_s=90,
    )
    yield NAMESPACE
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def pod(name: str, automount: bool) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "automountServiceAccountToken": automount,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "box", "image": "kvscale.local/testbox:1"}],
            },
        }
    )


def running(cluster: local.Cluster, name: str) -> dict[str, Any] | None:
    found = json.loads(cluster.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json").stdout)
    return found if found.get("status", {}).get("phase") == "Running" else None


def directory(cluster: local.Cluster, obj: dict[str, Any]) -> pathlib.Path:
    metadata = obj["metadata"]
    name = f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}"
    return cluster.files.node_agent_dir / "pods" / name / "serviceaccount"


def test_a_pod_gets_a_token_of_its_service_account_bound_to_it(
    cluster: local.Cluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-f", "-", input=pod("with-token", automount=True))
    obj = wait.eventually(lambda: running(cluster, "with-token"), "the pod to run", timeout_s=90)
    files = directory(cluster, obj)
    token = (files / "token").read_text()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:default"
    assert claims["kubernetes.io"]["pod"] == {"name": "with-token", "uid": obj["metadata"]["uid"]}
    assert (files / "namespace").read_text() == namespace
    assert "BEGIN CERTIFICATE" in (files / "ca.crt").read_text()
    # The kubeconfig the containers get as KUBECONFIG works, as that account.
    whoami = subprocess.run(
        [str(cluster.env()["PATH"].split(":")[0] + "/kubectl"), "auth", "whoami", "-o", "json"],
        capture_output=True, text=True, check=True, timeout=60,
        env={"KUBECONFIG": str(files / "kubeconfig"), "PATH": cluster.env()["PATH"]},
    )  # fmt: skip
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:default"
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["with-token"]


def test_a_pod_that_opts_out_gets_no_credentials(cluster: local.Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pod("no-token", automount=False))
    obj = wait.eventually(lambda: running(cluster, "no-token"), "the pod to run", timeout_s=90)
    assert not directory(cluster, obj).exists()
