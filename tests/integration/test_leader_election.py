"""Two operator replicas with leader election against the real API server: only the holder of
the Lease reconciles; a clean stop hands over at once; a replica that loses the Lease stops.

Short timings (lease 4 s, renew deadline 3 s, retry 0.5 s) keep the hand-overs quick; the
protocol is the same at the chart's defaults (15/10/2 s). On the real node (a cluster of the
module's own); the CRs' pods never become ready (`manifest.never_ready_spec`), since only who
reconciles matters here.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest
from tests.integration import realnode
from tests.support import manifest, wait

from kvscale.api import crd
from kvscale.localstack import cluster as local

pytestmark = pytest.mark.cluster

cluster = realnode.module_cluster("le")

ROOT = pathlib.Path(__file__).resolve().parents[2]
LEASE_NAMESPACE = "kvscale-election"
LEASE = "kvscale-operator"
TIMING = (
    "--leader-elect",
    "--leader-elect-resource-namespace", LEASE_NAMESPACE,
    "--leader-elect-lease-duration", "4",
    "--leader-elect-renew-deadline", "3",
    "--leader-elect-retry-period", "0.5",
)  # fmt: skip


class Operator(Protocol):
    """What these tests need of an operator process (tests/integration/conftest.py)."""

    process: subprocess.Popen[bytes] | None

    def start(self) -> None: ...

    def stop(self) -> int: ...

    def log(self, since: int = 0) -> str: ...


def holder(cluster: local.Cluster) -> str:
    found = cluster.kubectl("get", "lease", LEASE, "-n", LEASE_NAMESPACE, "-o", "json", check=False)
    if found.returncode != 0:
        return ""
    return str(json.loads(found.stdout)["spec"].get("holderIdentity") or "")


def leader_of(replicas: list[Operator]) -> Operator:
    """The replica whose log says it took the Lease most recently and that still runs."""
    for replica in replicas:
        if replica.process is None:
            continue
        lines = replica.log().splitlines()
        took = [line for line in lines if "now holds lease" in line]
        lost = [line for line in lines if "lost leadership" in line or "released lease" in line]
        if took and (not lost or lines.index(took[-1]) > lines.index(lost[-1])):
            return replica
    raise ValueError("no replica holds the lease yet")


def cr(name: str) -> str:
    return json.dumps(manifest.inference_deployment(name, manifest.never_ready_spec()))


@pytest.fixture
def replicas(
    cluster: local.Cluster, operator_factory: Callable[..., Operator]
) -> Iterator[list[Operator]]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / crd.YAML_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")
    cluster.kubectl("create", "namespace", LEASE_NAMESPACE, check=False)
    cluster.kubectl("delete", "lease", LEASE, "-n", LEASE_NAMESPACE, "--ignore-not-found")
    running = [operator_factory(f"replica-{i}", *TIMING) for i in range(2)]
    try:
        for replica in running:
            replica.start()
        yield running
    finally:
        for replica in running:
            replica.stop()
        for i, replica in enumerate(running):
            print(f"--- replica {i} log:\n{replica.log()}")
        # The namespace stays: one being deleted refuses the next test's Lease.
        cluster.kubectl("delete", "lease", LEASE, "-n", LEASE_NAMESPACE, "--ignore-not-found")


def deployment_exists(cluster: local.Cluster, namespace: str, name: str) -> bool:
    found = cluster.kubectl("get", "deployment", name, "-n", namespace, check=False)
    return found.returncode == 0


def healthy(replica: Operator) -> bool:
    """Both replicas answer their probes, the standby included."""
    port = replica.log().split("liveness on port ")[1].split(")")[0]
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            if answer.status != 200:
                return False
    return True


def test_only_the_leader_reconciles_and_a_clean_stop_hands_over(
    cluster: local.Cluster, replicas: list[Operator]
) -> None:
    wait.eventually(
        lambda: holder(cluster), "a replica to take the lease", timeout_s=60, retry_on=(ValueError,)
    )
    first = wait.eventually(
        lambda: leader_of(replicas), "the leader's log line", timeout_s=60, retry_on=(ValueError,)
    )
    standby = next(replica for replica in replicas if replica is not first)
    assert holder(cluster).startswith(first.log().split("leader election: ")[1].split(" ")[0])
    assert "waiting" in wait.eventually(
        lambda: "waiting" in standby.log() and standby.log(),
        "the standby to wait",
        timeout_s=60,
        retry_on=(ValueError,),
    )
    assert all(healthy(replica) for replica in replicas)

    namespace = "election-a"
    cluster.kubectl("create", "namespace", namespace)
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cr("one"))
        wait.eventually(
            lambda: deployment_exists(cluster, namespace, "one"),
            "the leader's reconcile",
            timeout_s=60,
            retry_on=(ValueError,),
        )
        wait.eventually(
            lambda: f"{namespace}/one: reconciled" in first.log(),
            "the leader's log",
            timeout_s=60,
            retry_on=(ValueError,),
        )
        assert "reconciled" not in standby.log(), "the standby must not act"

        # A clean stop releases the Lease: the standby takes it at its next retry.
        assert first.stop() == 0
        assert "released lease" in first.log()
        wait.eventually(
            lambda: leader_of(replicas) is standby,
            "the standby to take over",
            timeout_s=60,
            retry_on=(ValueError,),
        )
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cr("two"))
        wait.eventually(
            lambda: deployment_exists(cluster, namespace, "two"),
            "the new leader's work",
            timeout_s=60,
            retry_on=(ValueError,),
        )
        wait.eventually(
            lambda: f"{namespace}/two: reconciled" in standby.log(),
            "its log line",
            timeout_s=60,
            retry_on=(ValueError,),
        )
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_leader_that_loses_the_lease_stops_with_an_error(
    cluster: local.Cluster, replicas: list[Operator]
) -> None:
    wait.eventually(
        lambda: holder(cluster), "a replica to take the lease", timeout_s=60, retry_on=(ValueError,)
    )
    first = wait.eventually(
        lambda: leader_of(replicas), "the leader's log line", timeout_s=60, retry_on=(ValueError,)
    )
    standby = next(replica for replica in replicas if replica is not first)
    # Someone else writes itself into the Lease (a partitioned peer, a manual edit).
    cluster.kubectl(
        "patch", "lease", LEASE, "-n", LEASE_NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 4}}),
    )  # fmt: skip
    process = first.process
    assert process is not None
    code = process.wait(timeout=60)
    first.process = None
    assert code == 1, first.log()
    assert "lost leadership: the lease is now held by intruder" in first.log()
    # The intruder never renews: after its duration the standby takes over.
    wait.eventually(
        lambda: leader_of(replicas) is standby,
        "the standby to take the expired lease",
        timeout_s=60,
        retry_on=(ValueError,),
    )
    assert holder(cluster) != "intruder"


def test_leader_election_needs_the_lease_namespace() -> None:
    found = subprocess.run(
        [str(ROOT / ".venv/bin/kvscale"), "operator", "--leader-elect"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert found.returncode == 2
    assert "--leader-elect-resource-namespace: is required with --leader-elect" in found.stderr
