"""The node agent's stand-in for kubelet's service-account token volume: which pods get
credentials (those the API server gave a projected token volume) and the kubeconfig they
get (the token, CA and namespace files next to it)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from kvscale.localstack.nodeagent import account, podspec


def pod(volumes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": "kvscale-operator",
        "containers": [{"name": "operator", "image": "ghcr.io/kvscale/kvscale:0.1.0"}],
    }
    if volumes is not None:
        spec["volumes"] = volumes
    return {"metadata": {"name": "op-0", "namespace": "kvscale-system", "uid": "u1"}, "spec": spec}


# What the API server's ServiceAccount admission adds to a pod that did not opt out.
KUBE_API_ACCESS = {
    "name": "kube-api-access-x7k2p",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace"}]}},
        ],
    },
}


@pytest.mark.parametrize(
    ("volumes", "expected"),
    [
        ([KUBE_API_ACCESS], True),
        ([{"name": "cache", "emptyDir": {}}, KUBE_API_ACCESS], True),
        (None, False),  # automountServiceAccountToken: false -> no such volume
        ([{"name": "cache", "emptyDir": {}}], False),
        ([{"name": "p", "projected": {"sources": [{"configMap": {"name": "c"}}]}}], False),
        ("garbage", False),  # volumes are not run here: nothing to refuse the pod for
        ([{"projected": "garbage"}, 7], False),
    ],
)
def test_only_pods_with_a_projected_token_volume_get_credentials(
    volumes: Any, expected: bool
) -> None:
    parsed = podspec.parse_pod(pod(volumes))
    assert parsed.service_account_token is expected
    assert parsed.service_account_name == "kvscale-operator"


def test_the_kubeconfig_points_at_the_token_and_ca_files_and_the_namespace() -> None:
    directory = pathlib.Path("/state/pods/ns_op-0_u1/serviceaccount")
    config = yaml.safe_load(
        account.kubeconfig("https://127.0.0.1:6443", "kvscale-system", directory)
    )
    context = config["contexts"][0]["context"]
    assert config["current-context"] == config["contexts"][0]["name"]
    assert context["namespace"] == "kvscale-system"
    cluster = config["clusters"][0]["cluster"]
    assert cluster == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(directory / "ca.crt"),
    }
    # A token file, not the token: clients re-read it, as they re-read kubelet's rotated one.
    assert config["users"][0]["user"] == {"tokenFile": str(directory / "token")}
