"""The Helm chart's ServiceAccount and RBAC as the operator's credentials in integration tests.
Does I/O (helm, kubectl, files).

With `KVSCALE_OPERATOR_RBAC=chart` in the environment, the `operator_process` fixture
(conftest.py) runs the operator under the chart's ServiceAccount instead of the cluster's
admin: the chart's serviceaccount.yaml and rbac.yaml are rendered with helm and applied, a
token comes from `kubectl create token`, the operator gets a kubeconfig holding only that
token, and leader election is on (its Lease Role is part of the chart's rules). At the end of
the module the operator's log must hold no RBAC denial. tests/integration/test_helm_chart.py
runs the operator's integration flows this way; anyone can run the whole suite so:

    KVSCALE_OPERATOR_RBAC=chart .venv/bin/pytest tests/integration
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
from typing import Any

import yaml

from kvscale.localstack import cluster as local
from kvscale.localstack import tools

ENV = "KVSCALE_OPERATOR_RBAC"
CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "kvscale"
RELEASE = "kvscale"
NAMESPACE = "kvscale-system"
ACCOUNT = "kvscale"  # the chart's full name for release "kvscale"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
# How the API server words an authorization failure (a 403 from RBAC, not the 403 of a
# namespace being deleted): 'User "system:serviceaccount:ns:sa" cannot patch resource ...'.
_DENIAL = re.compile(r'User \\?"system:serviceaccount:[^"\\]+\\?" cannot [^",}]*')


def wanted() -> bool:
    """Whether the operator should run under the chart's RBAC; a value other than "chart" or
    nothing is refused, so a typo cannot silently run as admin."""
    value = os.environ.get(ENV, "")
    if value not in ("", "chart"):
        raise ValueError(f"{ENV}={value!r}: the only value is 'chart' (or unset: admin)")
    return value == "chart"


def render(helm: pathlib.Path) -> str:
    """The chart's ServiceAccount and RBAC objects (default values), as YAML."""
    found = subprocess.run(
        [
            str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", "1.36.3",
            "--show-only", "templates/serviceaccount.yaml",
            "--show-only", "templates/rbac.yaml",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return found.stdout


def token_kubeconfig(admin: pathlib.Path, token: str) -> str:
    """The admin kubeconfig's cluster with a user that has nothing but `token`."""
    config = yaml.safe_load(admin.read_text())
    cluster = config["clusters"][0]
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": ACCOUNT, "context": {"cluster": cluster["name"], "user": ACCOUNT}}],
        "current-context": ACCOUNT,
    }
    rendered: str = yaml.safe_dump(document, sort_keys=False)
    return rendered


def credentials(
    cluster: local.Cluster, directory: pathlib.Path
) -> tuple[pathlib.Path, tuple[str, ...]]:
    """Applies the chart's RBAC; returns a kubeconfig of its ServiceAccount and the operator
    arguments that go with the chart (leader election in the release's namespace)."""
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=render(tools.ensure("helm"))
    )
    token = cluster.kubectl(
        "create", "token", ACCOUNT, "--namespace", NAMESPACE, "--duration", "4h"
    ).stdout.strip()
    path = directory / "operator-service-account.kubeconfig"
    path.write_text(token_kubeconfig(cluster.kubeconfig, token))
    path.chmod(0o600)
    return path, ("--leader-elect", "--leader-elect-resource-namespace", NAMESPACE)


def revoke(cluster: local.Cluster) -> None:
    """Deletes what `credentials` applied. Helm refuses to install over a ServiceAccount or a
    role that carries no release annotations, so one test's credentials left in the session's
    cluster would fail test_helm_chart.py's install; the namespace (and the leader Lease in it)
    stays, as Helm's --create-namespace takes an existing one."""
    cluster.kubectl(
        "delete", "--ignore-not-found", "--wait=true", "-f", "-", input=render(tools.ensure("helm"))
    )


def denials(log: str) -> list[str]:
    """The RBAC denials in an operator log, one line each."""
    return [line for line in log.splitlines() if _DENIAL.search(line)]


def operator_pods(cluster: local.Cluster) -> list[dict[str, Any]]:
    """The chart's operator pods that are not being deleted."""
    found = cluster.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator", "-o", "json"
    )
    pods: list[dict[str, Any]] = json.loads(found.stdout)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def lease_holder(cluster: local.Cluster) -> str:
    """The identity holding the chart's leader Lease ("" when none or no Lease yet)."""
    found = cluster.kubectl(
        "get", "lease", "kvscale-operator", "-n", NAMESPACE, "-o", "json", check=False
    )
    if found.returncode != 0:
        return ""
    return str(json.loads(found.stdout)["spec"].get("holderIdentity") or "")
