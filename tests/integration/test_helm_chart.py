"""The Helm chart on the real API server: lint, server-side dry runs, install, upgrade,
uninstall, and the operator working under exactly the chart's RBAC.

- `helm lint --strict` is clean; values that cannot work fail rendering with a message.
- `helm template` output is accepted by the API server (`kubectl apply --dry-run=server`) for
  the default values and with every optional feature on. The monitoring objects are checked
  against the Prometheus Operator's real CRDs (v0.85.0, fetched from its Go module by
  scripts/fetch-prometheus-operator-crds.sh), installed into the module's cluster first.
- `helm install` on the real node (kubelet, containerd, runc; a cluster of the module's own
  with the images this checkout builds): the operator pods run the built
  ghcr.io/kvscale/kvscale image, kubelet projects each its ServiceAccount's token, the replicas
  elect a leader, and the leader serves an InferenceDeployment (`manifest.never_ready_spec`:
  the engine runs the node's webecho image, so nothing needs vLLM): Deployment, Service and PDB
  appear and the status is written. `kvscale status` shows it.
- `helm upgrade` with a changed value rolls the operator; the new leader keeps reconciling.
- `helm uninstall` removes the operator and its RBAC but keeps the CRD (Helm never deletes
  what `crds/` installed) and the InferenceDeployments with their engines, unmanaged.
- RBAC: requests outside the chart's role are forbidden; the operator's reconcile (and, with
  vLLM, autoscale) integration tests pass with the operator under the chart's ServiceAccount
  and no RBAC denial in its log (chartrbac.py, KVSCALE_OPERATOR_RBAC=chart).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.integration import chartrbac, realnode
from tests.integration.autoscale_story import is_ready
from tests.support import manifest, wait

from kvscale.api import crd
from kvscale.localstack import cluster as local
from kvscale.localstack import tools

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kvscale"
KVSCALE = ROOT / ".venv" / "bin" / "kvscale"
RELEASE = chartrbac.RELEASE
NAMESPACE = chartrbac.NAMESPACE
ACCOUNT = chartrbac.ACCOUNT
KUBE_VERSION = "1.36.3"
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
APPS = "chart-apps"  # where the test's InferenceDeployment lives
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # where kubelet projects it
# `helm template` flags that make the chart see the Prometheus Operator's CRDs.
MONITORING_API_VERSIONS = [
    arg
    for kind in MONITORING_KINDS
    for arg in ("--api-versions", f"monitoring.coreos.com/v1/{kind}")
]


def tool(name: str) -> pathlib.Path:
    try:
        return tools.ensure(name)
    except tools.ToolError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def helm_bin() -> pathlib.Path:
    return tool("helm")


def run_helm(
    helm: pathlib.Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    found = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, env=env, timeout=600
    )
    if check and found.returncode != 0:
        pytest.fail(f"helm {' '.join(args[:2])} failed:\n{found.stdout}\n{found.stderr}")
    return found


def template(
    helm: pathlib.Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, *args, check=check,
    )  # fmt: skip


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# The chart on the real node (2 fake GPUs are enough: its InferenceDeployment asks for none).
cluster = realnode.module_cluster("hc", 2, None)


# -- lint and rendering (no cluster) ----------------------------------------------------------


def test_helm_lint_is_clean(helm_bin: pathlib.Path) -> None:
    found = run_helm(
        helm_bin, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, check=False
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "[WARNING]" not in found.stdout
    assert "[ERROR]" not in found.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in found.stdout


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("networkPolicy.enabled=true",),
            "networkPolicy.namespaces: list the namespaces of the engine pods to protect",
        ),
        (
            ("operator.leaderElection.leaseDuration=10",),
            "operator.leaderElection.leaseDuration must be greater than renewDeadline",
        ),
        (
            ("serviceAccount.create=false",),
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ],
)
def test_values_that_cannot_work_fail_with_a_message(
    helm_bin: pathlib.Path, sets: tuple[str, ...], message: str
) -> None:
    found = template(helm_bin, *(arg for item in sets for arg in ("--set", item)), check=False)
    assert found.returncode != 0
    assert message in found.stderr


def test_the_operator_runs_hardened_with_leader_election(helm_bin: pathlib.Path) -> None:
    rendered = {doc["kind"]: doc for doc in documents(template(helm_bin).stdout)}
    deployment = rendered["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert "--leader-elect" in container["args"]
    assert "--leader-elect-resource-namespace=$(POD_NAMESPACE)" in container["args"]
    assert pod["serviceAccountName"] == ACCOUNT
    assert rendered["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def test_rbac_names_only_what_the_operator_uses(helm_bin: pathlib.Path) -> None:
    rendered = documents(template(helm_bin).stdout)
    rules = [
        (tuple(rule["apiGroups"]), resource, verb, tuple(rule.get("resourceNames", ())))
        for doc in rendered
        if doc["kind"] in ("ClusterRole", "Role")
        for rule in doc["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]
    verbs = {verb for _, _, verb, _ in rules}
    resources = {resource for _, resource, _, _ in rules}
    assert "*" not in verbs
    assert "*" not in resources
    assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & verbs
    assert not {"secrets", "configmaps", "nodes", "customresourcedefinitions"} & resources
    lease_writes = {(verb, names) for _, res, verb, names in rules if res == "leases"}
    assert lease_writes == {
        ("create", ()),
        ("get", ("kvscale-operator",)),
        ("update", ("kvscale-operator",)),
    }


def test_watching_listed_namespaces_grants_nothing_cluster_wide(helm_bin: pathlib.Path) -> None:
    rendered = documents(
        template(helm_bin, "--set", "operator.watchNamespaces={team-a,team-b}").stdout
    )
    kinds = [doc["kind"] for doc in rendered]
    assert "ClusterRole" not in kinds
    assert "ClusterRoleBinding" not in kinds
    roles = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"])
        for doc in rendered
        if doc["kind"] == "Role"
    }
    assert roles == {
        ("team-a", RELEASE), ("team-b", RELEASE), (NAMESPACE, f"{RELEASE}-leader-election"),
    }  # fmt: skip
    (deployment,) = (doc for doc in rendered if doc["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args


def test_monitoring_objects_need_the_prometheus_operator(helm_bin: pathlib.Path) -> None:
    """Without monitoring.coreos.com/v1 the chart renders none of them, even when enabled."""
    kinds = {doc["kind"] for doc in documents(template(helm_bin).stdout)}
    assert not kinds & set(MONITORING_KINDS)
    api_versions = MONITORING_API_VERSIONS
    kinds = {doc["kind"] for doc in documents(template(helm_bin, *api_versions).stdout)}
    assert set(MONITORING_KINDS) <= kinds


def test_long_release_names_give_names_of_at_most_63_characters(helm_bin: pathlib.Path) -> None:
    long = "a-very-long-release-name-that-goes-on-and-on-and-on-for-ever-and-ever"
    found = run_helm(
        helm_bin, "template", long[:53], str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION,
    )  # fmt: skip
    for doc in documents(found.stdout):
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]


# -- the real API server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm_env(cluster: local.Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm against the module's cluster, with its own config, cache and data folders."""
    home = tmp_path_factory.mktemp("helm")
    env = dict(cluster.env())
    for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[key] = str(home / key.lower())
    return env


def dry_run(cluster: local.Cluster, rendered: str) -> str:
    found = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--field-manager=helm-chart-test",
        "-f", "-", input=rendered, check=False,
    )  # fmt: skip
    assert found.returncode == 0, f"the API server refused the chart:\n{found.stderr}"
    return found.stdout


@pytest.mark.cluster
def test_the_default_values_render_objects_the_api_server_accepts(
    cluster: local.Cluster, helm_bin: pathlib.Path
) -> None:
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    rendered = template(helm_bin, "--include-crds").stdout
    out = dry_run(cluster, rendered)
    for doc in documents(rendered):
        assert f"{doc['kind'].lower()}" in out.lower()


@pytest.mark.cluster
def test_every_optional_feature_renders_objects_the_api_server_accepts(
    cluster: local.Cluster, helm_bin: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    crds = pathlib.Path(tool("prometheus-operator-crds"))
    for path in sorted(crds.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for plural in ("servicemonitors", "podmonitors", "prometheusrules"):
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com",
            "--timeout=60s",
        )  # fmt: skip
    for namespace in (NAMESPACE, "team-a", "team-b", "monitoring"):
        cluster.kubectl("create", "namespace", namespace, check=False)
    values = tmp_path / "everything.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "operator": {"watchNamespaces": ["team-a", "team-b"], "verbose": True,
                             "extraEnv": [{"name": "TZ", "value": "UTC"}],
                             "podAnnotations": {"example.com/a": "b"}},
                "serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}},
                "podMonitor": {"labels": {"release": "kube-prometheus-stack"}},
                "prometheusRule": {"labels": {"release": "kube-prometheus-stack"},
                                   "additionalAlertLabels": {"team": "ml-platform"}},
                "networkPolicy": {
                    "enabled": True,
                    "additionalSidecarPeers": [{"ipBlock": {"cidr": "127.0.0.0/8"}}],
                },
                "serviceAccount": {"annotations": {"example.com/role": "kvscale"}},
            }
        )
    )  # fmt: skip
    api_versions = MONITORING_API_VERSIONS
    rendered = template(helm_bin, "--include-crds", "-f", str(values), *api_versions).stdout
    kinds = {doc["kind"] for doc in documents(rendered)}
    assert {*MONITORING_KINDS, "NetworkPolicy", "Role", "RoleBinding"} <= kinds
    out = dry_run(cluster, rendered)
    assert "prometheusrule.monitoring.coreos.com/kvscale serverside-applied" in out
    assert "networkpolicy.networking.k8s.io/kvscale-engine-sidecars serverside-applied" in out


# -- install, upgrade, uninstall ------------------------------------------------------------


def pod_log(cluster: local.Cluster, pod: dict[str, Any], container: str = "operator") -> str:
    """A container's log, as `kubectl logs` gives it ("" while there is none)."""
    found = cluster.kubectl(
        "logs", "-n", pod["metadata"]["namespace"], pod["metadata"]["name"], "-c", container,
        check=False,
    )  # fmt: skip
    return found.stdout if found.returncode == 0 else ""


def infd(name: str) -> str:
    return json.dumps(manifest.inference_deployment(name, manifest.never_ready_spec(), APPS))


def exists(cluster: local.Cluster, kind: str, name: str, namespace: str = APPS) -> bool:
    return cluster.kubectl("get", kind, name, "-n", namespace, check=False).returncode == 0


@pytest.fixture(scope="module")
def release(
    cluster: local.Cluster, helm_bin: pathlib.Path, helm_env: dict[str, str]
) -> Iterator[None]:
    """The module's cluster without the CRD (so the install is what creates it); everything the
    install story made is removed at the end, the CRD excepted (as Helm leaves it)."""
    cluster.kubectl(
        "delete", "crd", crd.CRD_NAME, "--ignore-not-found", "--wait=true", timeout_s=180
    )
    cluster.kubectl("create", "namespace", APPS, check=False)
    try:
        yield
    finally:
        run_helm(
            helm_bin, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", env=helm_env, check=False
        )
        cluster.kubectl("delete", "infd", "--all", "-n", APPS, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", APPS, "--wait=false", check=False)


@pytest.mark.cluster
def test_an_operator_started_before_its_crd_exists_says_so(
    cluster: local.Cluster, release: None
) -> None:
    """kopf discovers what it serves once, at start (it may not watch CRDs: least privilege),
    so the operator refuses to start without the CRD rather than serve nothing."""
    found = subprocess.run(
        [str(KVSCALE), "operator", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert found.returncode == 1
    assert f"the {crd.CRD_NAME} CRD is not installed" in found.stderr


@pytest.mark.cluster
def test_install_runs_the_operator_which_serves_an_inference_deployment(
    cluster: local.Cluster, helm_bin: pathlib.Path, helm_env: dict[str, str], release: None
) -> None:
    found = run_helm(
        helm_bin, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--wait", "--timeout", "5m", env=helm_env,
    )  # fmt: skip
    assert "STATUS: deployed" in found.stdout
    # Helm created the CRD from crds/.
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")
    pods = wait.eventually(
        lambda: (
            len([p for p in chartrbac.operator_pods(cluster) if is_ready(p)]) == 2
            and chartrbac.operator_pods(cluster)
        ),
        "two ready operator replicas",
        timeout_s=120,
        retry_on=wait.NOT_MADE_YET,
    )
    holder = wait.eventually(
        lambda: chartrbac.lease_holder(cluster),
        "a replica to take the Lease",
        timeout_s=120,
        retry_on=wait.NOT_MADE_YET,
    )
    assert any(holder.startswith(pod["metadata"]["name"]) for pod in pods), holder

    cluster.kubectl("apply", "-f", "-", input=infd("served"))
    for kind in ("deployment", "service", "poddisruptionbudget"):
        wait.eventually(
            lambda kind=kind: exists(cluster, kind, "served"),  # type: ignore[misc]
            f"the {kind} of the CR",
            timeout_s=120,
            retry_on=wait.NOT_MADE_YET,
        )

    def reconciled() -> dict[str, Any] | None:
        found = cluster.kubectl("get", "infd", "served", "-n", APPS, "-o", "json")
        status: dict[str, Any] = json.loads(found.stdout).get("status") or {}
        return (
            status if status.get("observedGeneration") == 1 and status.get("conditions") else None
        )

    status = wait.eventually(
        reconciled, "the leader to write the CR's status", timeout_s=120, retry_on=wait.NOT_MADE_YET
    )
    assert {condition["type"] for condition in status["conditions"]} >= {"Ready"}
    leader = next(
        pod
        for pod in chartrbac.operator_pods(cluster)
        if holder.startswith(pod["metadata"]["name"])
    )
    log = wait.eventually(
        lambda: "served: reconciled" in pod_log(cluster, leader) and pod_log(cluster, leader),
        "the leader's log line",
        timeout_s=120,
        retry_on=wait.NOT_MADE_YET,
    )
    assert not chartrbac.denials(log)
    (standby,) = (
        p
        for p in chartrbac.operator_pods(cluster)
        if p["metadata"]["uid"] != leader["metadata"]["uid"]
    )
    assert "waiting" in pod_log(cluster, standby)
    assert "reconciled" not in pod_log(cluster, standby)


@pytest.mark.cluster
def test_the_operator_pods_act_as_the_charts_service_account(
    cluster: local.Cluster, release: None
) -> None:
    """kubelet projected into each operator pod a token of the chart's ServiceAccount, bound to
    the pod (read inside the pod, where the operator's client reads it)."""
    for pod in chartrbac.operator_pods(cluster):
        metadata = pod["metadata"]
        token = cluster.kubectl(
            "exec", "-n", NAMESPACE, metadata["name"], "-c", "operator", "--",
            "python", "-c", f"print(open('{TOKEN_PATH}').read())",
        ).stdout.strip()  # fmt: skip
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["sub"] == chartrbac.USER
        assert claims["kubernetes.io"]["pod"]["name"] == metadata["name"]


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("verb", "resource", "subresource", "namespace", "allowed"),
    [
        # What the operator does.
        ("patch", "deployments.apps", "", APPS, True),
        ("patch", "inferencedeployments.kvscale.dev", "status", APPS, True),
        ("patch", "pods", "", APPS, True),
        ("create", "events", "", APPS, True),
        ("update", "leases.coordination.k8s.io/kvscale-operator", "", NAMESPACE, True),
        # What it never does.
        ("delete", "deployments.apps", "", APPS, False),
        ("delete", "inferencedeployments.kvscale.dev", "", APPS, False),
        ("update", "inferencedeployments.kvscale.dev", "", APPS, False),
        ("create", "pods", "", APPS, False),
        ("create", "pods", "eviction", APPS, False),
        ("get", "pods", "log", APPS, False),
        ("get", "secrets", "", APPS, False),
        ("list", "configmaps", "", APPS, False),
        ("update", "deployments.apps", "", APPS, False),
        ("patch", "deployments.apps", "scale", APPS, False),  # replicas: an apply (rbac.yaml)
        ("list", "customresourcedefinitions.apiextensions.k8s.io", "", "", False),
        ("update", "leases.coordination.k8s.io/someone-elses", "", NAMESPACE, False),
        ("update", "leases.coordination.k8s.io/kvscale-operator", "", APPS, False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", "", False),
    ],
)
def test_the_service_account_may_do_what_the_operator_does_and_nothing_else(
    cluster: local.Cluster,
    release: None,
    verb: str,
    resource: str,
    subresource: str,
    namespace: str,
    allowed: bool,
) -> None:
    where = ("--namespace", namespace) if namespace else ()
    sub = (f"--subresource={subresource}",) if subresource else ()
    found = cluster.kubectl(
        "auth", "can-i", verb, resource, *sub, *where, f"--as={chartrbac.USER}", check=False
    )
    assert found.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, found.stderr)


@pytest.mark.cluster
def test_a_request_outside_the_role_is_forbidden_by_the_api_server(
    cluster: local.Cluster, release: None, tmp_path: pathlib.Path
) -> None:
    """Not only `can-i`: a real request with the ServiceAccount's token gets 403 Forbidden."""
    token = cluster.kubectl("create", "token", ACCOUNT, "-n", NAMESPACE).stdout.strip()
    kubeconfig = tmp_path / "sa.kubeconfig"
    kubeconfig.write_text(chartrbac.token_kubeconfig(cluster.kubeconfig, token))
    found = cluster.kubectl(
        "--kubeconfig", str(kubeconfig), "get", "secrets", "-n", APPS, check=False
    )
    assert found.returncode != 0
    assert f'User "{chartrbac.USER}" cannot list resource "secrets"' in found.stderr
    allowed = cluster.kubectl("--kubeconfig", str(kubeconfig), "get", "infd", "-n", APPS)
    assert "served" in allowed.stdout


@pytest.mark.cluster
def test_kvscale_status_shows_the_served_deployment(cluster: local.Cluster, release: None) -> None:
    found = subprocess.run(
        [str(KVSCALE), "status", "-n", APPS, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(f"{APPS}/served   model kvscale/tiny-llama\n")
    assert "  replicas     0 ready / 1 desired / 4 max" in found.stdout
    assert "Ready=False" in found.stdout  # its engines never become ready
    as_json = subprocess.run(
        [str(KVSCALE), "status", "served", "-n", APPS, "-o", "json",
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    (item,) = json.loads(as_json.stdout)["items"]
    assert (item["namespace"], item["name"], item["replicas"]["max"]) == (APPS, "served", 4)
    missing = subprocess.run(
        [str(KVSCALE), "status", "nope", "-n", APPS, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stderr


@pytest.mark.cluster
def test_upgrade_changes_a_value_and_rolls_the_operator(
    cluster: local.Cluster, helm_bin: pathlib.Path, helm_env: dict[str, str], release: None
) -> None:
    before = {pod["metadata"]["name"] for pod in chartrbac.operator_pods(cluster)}
    assert len(before) == 2, "the install test must have run first"
    run_helm(
        helm_bin, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
        "--set", "operator.leaderElection.leaseDuration=20", "--wait", "--timeout", "5m",
        env=helm_env,
    )  # fmt: skip
    deployment = json.loads(
        cluster.kubectl("get", "deployment", RELEASE, "-n", NAMESPACE, "-o", "json").stdout
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect-lease-duration=20" in args

    def rolled() -> set[str] | None:
        pods = chartrbac.operator_pods(cluster)
        names = {pod["metadata"]["name"] for pod in pods}
        return names if len(pods) == 2 and all(map(is_ready, pods)) and not names & before else None

    after = wait.eventually(
        rolled, "two new ready operator replicas", timeout_s=240, retry_on=wait.NOT_MADE_YET
    )

    def new_leader() -> dict[str, Any] | None:
        # Read holder and duration together: on a loaded machine a new leader can restart (its
        # liveness probe) and release the Lease (duration 1, no holder) between two reads.
        found = cluster.kubectl(
            "get", "lease", "kvscale-operator", "-n", NAMESPACE, "-o", "json", check=False
        )
        if found.returncode != 0:
            return None
        spec: dict[str, Any] = json.loads(found.stdout)["spec"]
        holder = str(spec.get("holderIdentity") or "")
        return spec if holder and any(holder.startswith(n) for n in after) else None

    spec = wait.eventually(
        new_leader, "a new replica to lead", timeout_s=120, retry_on=wait.NOT_MADE_YET
    )
    holder = spec["holderIdentity"]
    assert spec["leaseDurationSeconds"] == 20
    # The new leader reconciles: an edit of the CR reaches its Deployment.
    cluster.kubectl(
        "patch", "infd", "served", "-n", APPS, "--type=merge",
        "-p", json.dumps({"spec": {"engine": {"maxNumSeqs": 64}}}),
    )  # fmt: skip

    def applied() -> bool:
        found = cluster.kubectl("get", "deployment", "served", "-n", APPS, "-o", "json")
        args = json.loads(found.stdout)["spec"]["template"]["spec"]["containers"][0]["args"]
        return bool(args[args.index("--max-num-seqs") + 1] == "64")

    wait.eventually(
        applied,
        f"the new leader ({holder}) to apply the edit",
        timeout_s=120,
        retry_on=wait.NOT_MADE_YET,
    )
    revision = run_helm(helm_bin, "history", RELEASE, "-n", NAMESPACE, "-o", "json", env=helm_env)
    assert [entry["revision"] for entry in json.loads(revision.stdout)] == [1, 2]


@pytest.mark.cluster
def test_uninstall_removes_the_operator_and_keeps_the_crd_and_the_inference_deployments(
    cluster: local.Cluster, helm_bin: pathlib.Path, helm_env: dict[str, str], release: None
) -> None:
    assert exists(cluster, "infd", "served"), "the install test must have run first"
    run_helm(helm_bin, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", env=helm_env)
    wait.eventually(
        lambda: not chartrbac.operator_pods(cluster),
        "the operator pods to go",
        timeout_s=120,
        retry_on=wait.NOT_MADE_YET,
    )
    for kind, name in (
        ("deployment", RELEASE), ("serviceaccount", ACCOUNT), ("service", f"{RELEASE}-metrics"),
        ("role", f"{RELEASE}-leader-election"),
    ):  # fmt: skip
        assert not exists(cluster, kind, name, NAMESPACE), kind
    assert not exists(cluster, "clusterrole", RELEASE, "")
    # Helm never deletes CRDs from crds/: the CRD, the CR and its engine objects stay.
    cluster.kubectl("get", "crd", crd.CRD_NAME)
    for kind in ("infd", "deployment", "service", "poddisruptionbudget"):
        assert exists(cluster, kind, "served"), kind
    # ... unmanaged: no operator runs. The Lease is the operator's, not the release's: it
    # stays, naming the last leader, whom nobody renews (a reinstall takes it over).
    assert not chartrbac.operator_pods(cluster)
    assert exists(cluster, "lease", "kvscale-operator", NAMESPACE)


# -- the operator's own flows under the chart's RBAC ---------------------------------------


def nested_pytest(*modules: str) -> subprocess.CompletedProcess[str]:
    """The given integration modules in a pytest of their own (own cluster), with every
    operator under the chart's ServiceAccount (chartrbac)."""
    env = dict(os.environ, **{chartrbac.ENV: "chart"})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=1500",
         *(str(ROOT / "tests" / "integration" / module) for module in modules)],
        capture_output=True, text=True, check=False, env=env, cwd=ROOT, timeout=1800,
    )  # fmt: skip


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_reconcile_and_gitops_flows_pass_under_the_charts_rbac() -> None:
    found = nested_pytest("test_operator_reconcile.py", "test_gitops_ownership.py")
    assert found.returncode == 0, found.stdout[-20000:] + found.stderr[-2000:]
    assert " passed" in found.stdout


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_autoscale_flow_on_engine_twins_passes_under_the_charts_rbac() -> None:
    """Scaling up and down, deletion costs, status, Events: the autoscaler's writes."""
    found = nested_pytest("test_autoscale_twin.py")
    assert found.returncode == 0, found.stdout[-20000:] + found.stderr[-2000:]
    assert " passed" in found.stdout


# The same operator requests as the twin flow above (the operator does not know which engine
# runs); `make test` runs that flow on vLLM under cluster-admin (test_autoscale_e2e), and this
# only `make extended` (about 5.5 minutes).
@pytest.mark.cluster
@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_the_autoscale_flow_on_vllm_passes_under_the_charts_rbac() -> None:
    found = nested_pytest("test_autoscale_e2e.py")
    assert found.returncode == 0, found.stdout[-20000:] + found.stderr[-2000:]
    assert " passed" in found.stdout
