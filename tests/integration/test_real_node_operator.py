"""The operator as users run it: `helm install charts/kvscale` on the real node, two
leader-elected replicas from the built kvscale image under the chart's ServiceAccount, scaling
engine-twin pods.

One cluster with runtime "kubelet" for the module (GPUS fake GPUs), the images of
`scripts/build-images.sh` imported, the chart installed with its defaults (read-only root
filesystem, non-root user, the pods' ServiceAccount tokens projected by kubelet). In file order:

1. both replicas Ready, one holds the Lease, the other waits; the leader's metrics answer
   through the chart's metrics Service (kube-proxy);
2. the chart's RBAC seen by the real pod: with its own token, a request inside its role is
   allowed and one outside it is Forbidden;
3. the leader pod deleted mid-scale-up: the standby takes the Lease, the scale goes on to the
   count the load asks, and no scale action is taken that the load did not ask for.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration import chartrbac, realnode
from tests.integration.autoscale_story import Load, Story, wait_metrics_available, wait_ready
from tests.support import wait

from kvscale.localstack import cluster as local
from kvscale.localstack import tools

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kvscale"
RELEASE = chartrbac.RELEASE
NAMESPACE = chartrbac.NAMESPACE
APPS = "apps"
NAME = "twins"
MODEL = realnode.MODEL
ENGINE_PORT = realnode.ENGINE_PORT
METRICS_PORT = 8080  # the chart's operator.metricsPort
GPUS = 2
WAIT_S = 180.0  # generous: a busy 2-core machine; not a timing assertion


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.Cluster]:
    state_dir = tmp_path_factory.mktemp("kvscale-real-operator")
    with realnode.cluster_with_images(state_dir, GPUS, "ro") as handle:
        yield handle


@pytest.fixture(scope="module")
def release(real: local.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The chart installed with its default values (its CRD from crds/), uninstalled after."""
    try:
        helm = tools.ensure("helm")
    except tools.ToolError as error:
        pytest.fail(str(error), pytrace=False)
    home = tmp_path_factory.mktemp("helm")
    env = dict(real.env())
    for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[key] = str(home / key.lower())
    argv = [
        str(helm), "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--create-namespace", "--wait", "--timeout", "5m",
    ]  # fmt: skip
    installed = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if installed.returncode != 0:
        pods = chartrbac.operator_pods(real)
        pytest.fail(f"helm install failed:\n{installed.stdout}\n{installed.stderr}\n{pods}")
    real.kubectl("create", "namespace", APPS)
    yield
    subprocess.run(
        [str(helm), "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "2m"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def _leader(real: local.Cluster) -> dict[str, Any] | None:
    """The operator pod holding the Lease (its identity starts with the pod's name)."""
    holder = chartrbac.lease_holder(real)
    found = [
        p
        for p in chartrbac.operator_pods(real)
        if holder and holder.startswith(p["metadata"]["name"])
    ]
    return found[0] if found else None


def _logs(real: local.Cluster, pod: dict[str, Any]) -> str:
    name = pod["metadata"]["name"]
    return real.kubectl("logs", "-n", NAMESPACE, name, "-c", "operator", check=False).stdout


def _get_inside_the_node(real: local.Cluster, url: str) -> str | None:
    script = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
    result = real.in_node(sys.executable, "-c", script)
    return result.stdout if result.returncode == 0 else None


def test_two_replicas_from_the_built_image_elect_a_leader_and_serve_metrics(
    real: local.Cluster, release: None
) -> None:
    pods = wait.eventually(
        lambda: (
            (p := chartrbac.operator_pods(real)) and len(p) == 2 and all(_ready(x) for x in p) and p
        ),
        "two ready operator replicas",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["image"] == f"ghcr.io/kvscale/kvscale:{realnode.VERSION}"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert realnode.container_status(pod, "operator")["restartCount"] == 0
    leader = wait.eventually(
        lambda: _leader(real), "a replica holding the Lease", timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )  # fmt: skip
    (standby,) = [p for p in pods if p["metadata"]["uid"] != leader["metadata"]["uid"]]
    assert "waiting" in _logs(real, standby)

    # The leader's gauge through its own pod IP, and the chart's metrics Service answering.
    leader_metrics = wait.eventually(
        lambda: _get_inside_the_node(
            real, f"http://{leader['status']['podIP']}:{METRICS_PORT}/metrics"
        ),
        "the leader's /metrics",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    assert "kvscale_operator_leader 1.0" in leader_metrics
    service = json.loads(
        real.kubectl("get", "service", "-n", NAMESPACE, "-l",
                     "app.kubernetes.io/component=operator", "-o", "json").stdout
    )["items"]  # fmt: skip
    (metrics_service,) = service
    address = f"{metrics_service['spec']['clusterIP']}:{METRICS_PORT}"
    through_service = wait.eventually(
        lambda: _get_inside_the_node(real, f"http://{address}/metrics"),
        f"/metrics through the Service ({address})",
        timeout_s=WAIT_S,
        retry_on=wait.NOT_MADE_YET,
    )
    assert "kvscale_operator_leader" in through_service


# What the pod's own credentials may do: a Python one-liner in the operator's image, with the
# token and CA kubelet projected, against the `kubernetes` Service (as in-cluster config does).
_WITH_THE_PODS_TOKEN = """
import os, ssl, sys, urllib.request as u, urllib.error as e
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
host = os.environ["KUBERNETES_SERVICE_HOST"] + ":" + os.environ["KUBERNETES_SERVICE_PORT"]
request = u.Request("https://" + host + sys.argv[1], headers={"Authorization": "Bearer " + token})
try:
    print(u.urlopen(request, context=context, timeout=10).status)
except e.HTTPError as error:
    print(error.code)
"""


def test_the_pods_own_token_is_held_to_the_charts_rbac(real: local.Cluster, release: None) -> None:
    (pod, *_) = chartrbac.operator_pods(real)

    def status(path: str) -> int:
        found = real.kubectl(
            "exec", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "operator", "--",
            "python", "-c", _WITH_THE_PODS_TOKEN, path,
        )  # fmt: skip
        return int(found.stdout.strip())

    leases = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    # Inside its role: InferenceDeployments and Deployments everywhere, its own Lease.
    assert status("/apis/kvscale.dev/v1alpha1/inferencedeployments") == 200
    assert status("/apis/apps/v1/deployments") == 200
    assert status(f"{leases}/kvscale-operator") == 200
    # Outside it: Secrets, Nodes, other Leases.
    assert status("/api/v1/namespaces/kube-system/secrets") == 403
    assert status("/api/v1/secrets") == 403
    assert status("/api/v1/nodes") == 403
    assert status(leases) == 403


def test_the_leader_deleted_mid_scale_up_hands_over_without_a_spurious_scale(
    real: local.Cluster, release: None
) -> None:
    story = Story(real, APPS, NAME)
    real.kubectl(
        "apply",
        "-n",
        APPS,
        "-f",
        "-",
        input=json.dumps(realnode.twin_infd(NAME, drain_s=5, delay_s=600)),
    )
    wait_ready(story, 1)
    wait_metrics_available(story)
    leader = _leader(real)
    assert leader is not None
    load = Load({"model": MODEL, "prompt": [7] * 3000, "max_tokens": 400}, ENGINE_PORT, 8)
    load.targets = story.ready_ips()
    load.start()
    try:
        # Mid-scale-up: the first scale is written, its pods not yet Ready.
        wait.eventually(
            lambda: story.replicas()[0] > 1, "the first scale-up", timeout_s=WAIT_S,
            retry_on=wait.NOT_MADE_YET,
        )  # fmt: skip
        deleted_at = time.monotonic()
        real.kubectl("delete", "pod", "-n", NAMESPACE, leader["metadata"]["name"], "--wait=false")
        successor = wait.eventually(
            lambda: (p := _leader(real)) and p["metadata"]["uid"] != leader["metadata"]["uid"]
            and p,
            "another replica taking the Lease", timeout_s=WAIT_S, retry_on=wait.NOT_MADE_YET,
        )  # fmt: skip
        took_over_s = time.monotonic() - deleted_at
        story.scaled(3, "ScaledUp", timeout_s=WAIT_S)
        load.targets = wait_ready(story, 2)
        # Under steady load, the new leader holds the count: no action the load did not ask.
        before = story.replicas()
        history = len(story.infd()["status"].get("scalingHistory") or [])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert story.replicas() == before, f"scaled: {before} -> {story.replicas()}"
            time.sleep(1)
        assert len(story.infd()["status"].get("scalingHistory") or []) == history
    finally:
        load.stop()
    ups = story.events("ScaledUp")
    assert not story.events("ScaledDown")
    # At most two scale-ups in all (1 -> 2 -> 3, or 1 -> 3), whoever led.
    assert sum(event.get("count", 1) for event in ups) <= 2, ups
    assert load.failed == 0, f"{load.failed} requests failed"
    print(
        f"[real node operator] leader {leader['metadata']['name']} deleted; "
        f"{successor['metadata']['name']} led {took_over_s:.1f} s later; "
        f"{load.completed} completions, {load.failed} failed"
    )
    assert not chartrbac.denials(_logs(real, successor))
    real.kubectl("delete", "infd", NAME, "-n", APPS, "--wait=false")
