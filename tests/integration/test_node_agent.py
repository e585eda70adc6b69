"""The node agent against the real control plane: pods run, probe, restart, stop and survive it.

The session's `cluster` (tests/conftest.py) provides etcd, kube-apiserver, the controllers and the
scheduler. This module runs its own `kvscale node-agent` process beside the cluster's, with one
node of its own (tainted, so only these tests' pods land there), one fake GPU, a short crash-loop
backoff and its own loopback range, so it can kill and restart the agent freely. Pods use the
`kvscale.local/testbox` image. Waits are deadlines for something to happen, not timing
assertions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import pathlib
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.support import wait

from kvscale.localstack import cluster as local
from kvscale.localstack.nodeagent import process

pytestmark = pytest.mark.cluster

WAIT_S = 90.0
TESTBOX = "kvscale.local/testbox:1"
TAINT_KEY = "kvscale.dev/node-agent-test"
Json = dict[str, Any]


@dataclasses.dataclass
class Agent:
    """This module's `kvscale node-agent` process: one node, restartable."""

    cluster: local.Cluster
    node: str
    pod_cidr: str
    state_dir: pathlib.Path
    log_path: pathlib.Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, "the agent is running already"
        argv = [
            sys.executable, "-m", "kvscale.cli", "node-agent",
            "--kubeconfig", str(self.cluster.kubeconfig),
            "--nodes", "1",
            "--gpus-per-node", "1",
            "--node-prefix", self.node.rsplit("-", 1)[0],
            "--pod-cidr", self.pod_cidr,
            "--state-dir", str(self.state_dir),
            "--crashloop-backoff-initial", "1",
            "--crashloop-backoff-max", "4",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.cluster.env()
            )
        wait.eventually(
            lambda: self.node_ready() is True, f"node {self.node} Ready", timeout_s=WAIT_S
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        running, self.process = self.process, None
        if running is None:
            return 0
        running.send_signal(sig)
        try:
            return running.wait(timeout=60)
        except subprocess.TimeoutExpired:
            running.kill()
            running.wait()
            pytest.fail(f"the node agent did not stop within 60 s:\n{self.log()}")

    def node_ready(self) -> bool | None:
        found = self.cluster.kubectl("get", "node", self.node, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        conditions = json.loads(found.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def agent(cluster: local.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    base = tmp_path_factory.mktemp("node-agent")
    port = cluster.ports.apiserver
    # 127.3.0.0/16 is never a cluster's pod range (those start at 127.4.0.0); the API server's
    # port keeps concurrent sessions apart.
    running = Agent(
        cluster=cluster,
        node=f"agent-test-{port}-0",
        pod_cidr=f"127.3.{port % 256}.0/24",
        state_dir=base / "state",
        log_path=base / "agent.log",
    )
    running.start()
    cluster.kubectl("taint", "node", running.node, f"{TAINT_KEY}=true:NoSchedule", "--overwrite")
    try:
        yield running
    finally:
        code = running.stop()
        leftovers = sorted(p.name for p in running.state_dir.glob("pods/*/*.pid"))
        cluster.kubectl("delete", "node", running.node, "--wait=false", check=False)
        assert code == 0, f"the node agent exited with {code}:\n{running.log()}"
        assert leftovers == [], f"process records left after shutdown: {leftovers}"


@pytest.fixture
def namespace(cluster: local.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "na-" + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _agent_log_on_failure(agent: Agent, request: pytest.FixtureRequest) -> Iterator[None]:
    """When a test fails, what the agent logged during it goes to the terminal."""
    start = agent.log_path.stat().st_size if agent.log_path.exists() else 0
    failed = request.session.testsfailed
    yield
    terminal = sys.__stderr__
    if request.session.testsfailed > failed and terminal is not None:
        terminal.write(f"\n--- node agent log during {request.node.name}:\n")
        terminal.write(agent.log()[start:])


def _pod_spec(agent: Agent, *containers: Json, **extra: Any) -> Json:
    return {
        "nodeSelector": {"kubernetes.io/hostname": agent.node},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 5,
        "containers": list(containers),
        **extra,
    }


def _box(*args: str, name: str = "box", **extra: Any) -> Json:
    return {
        "name": name,
        "image": TESTBOX,
        "args": ["--port", "8080", *args],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        **extra,
    }


def _apply(cluster: local.Cluster, namespace: str, *objects: Json) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def _pod(name: str, spec: Json) -> Json:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _get(cluster: local.Cluster, namespace: str, kind: str, name: str) -> Json | None:
    found = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        if "NotFound" in found.stderr:
            return None
        raise AssertionError(found.stderr)
    result: Json = json.loads(found.stdout)
    return result


def _pod_status(cluster: local.Cluster, namespace: str, name: str) -> Json:
    pod = _get(cluster, namespace, "pod", name)
    assert pod is not None, f"pod {namespace}/{name} is gone"
    status: Json = pod.get("status", {})
    return status


def _condition(status: Json, kind: str) -> Json:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def _container(status: Json, name: str = "box") -> Json:
    return next((c for c in status.get("containerStatuses", []) if c["name"] == name), {})


def _pid(container: Json) -> int:
    return int(container["containerID"].removeprefix("local://"))


def test_a_deployments_pods_run_and_become_ready_with_their_own_pod_ips(
    cluster: local.Cluster, agent: Agent, namespace: str
) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"greeting": "hello"},
    }
    box = _box("--ready-after", "1", readinessProbe={
        "httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1,
    })  # fmt: skip
    box["env"] += [
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
        },
        {"name": "URL", "value": "http://$(POD_IP):8080"},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]  # fmt: skip
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": _pod_spec(agent, box)},
        },
    }
    _apply(cluster, namespace, config_map, deployment)

    def all_ready() -> bool:
        found = _get(cluster, namespace, "deployment", "web")
        return bool(found and found.get("status", {}).get("readyReplicas") == 2)

    wait.eventually(all_ready, "2 ready replicas", timeout_s=WAIT_S)
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    addresses = [pod["status"]["podIP"] for pod in pods]
    assert len(set(addresses)) == 2
    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running"
        assert status["hostIP"] == "127.0.0.1"
        assert status["podIPs"] == [{"ip": status["podIP"]}]
        assert ipaddress.IPv4Address(status["podIP"]) in ipaddress.IPv4Network(agent.pod_cidr)
        assert _condition(status, "Ready")["status"] == "True"
        container = _container(status)
        assert container["ready"]
        assert container["started"]
        assert "running" in container["state"]
        # The process sees the downward API, ConfigMap values and $(VAR) expansion.
        with urllib.request.urlopen(f"http://{status['podIP']}:8080/env", timeout=10) as reply:
            env = json.loads(reply.read())
        assert env["POD_IP"] == status["podIP"]
        assert env["URL"] == f"http://{status['podIP']}:8080"
        assert env["GREETING"] == "hello"
        assert env["NODE"] == agent.node
        assert env["HOSTNAME"] == pod["metadata"]["name"]
        # The agent's own credentials never reach a pod: KUBECONFIG is the pod's service
        # account (its projected token volume, written under the pod's state directory).
        pod_dir = (
            f"{pod['metadata']['namespace']}_{pod['metadata']['name']}_{pod['metadata']['uid']}"
        )
        assert env["KUBECONFIG"].endswith(f"/pods/{pod_dir}/serviceaccount/kubeconfig")


def test_the_readiness_probe_gates_ready(
    cluster: local.Cluster, agent: Agent, namespace: str
) -> None:
    box = _box("--ready-after", "8", readinessProbe={
        "httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "successThreshold": 2,
    })  # fmt: skip
    _apply(cluster, namespace, _pod("slow", _pod_spec(agent, box)))

    def running_unready() -> Json | None:
        status = _pod_status(cluster, namespace, "slow")
        if status.get("phase") == "Running":
            return status
        return None

    first = wait.eventually(running_unready, "the pod running", timeout_s=WAIT_S)
    assert _condition(first, "Ready")["status"] == "False"
    assert _condition(first, "ContainersReady")["reason"] == "ContainersNotReady"
    assert _container(first)["ready"] is False
    ready = wait.eventually(
        lambda: (
            _condition(_pod_status(cluster, namespace, "slow"), "Ready").get("status") == "True"
        ),
        "Ready",
        timeout_s=WAIT_S,
    )
    assert ready


def test_a_crashing_container_restarts_with_growing_backoff(
    cluster: local.Cluster, agent: Agent, namespace: str
) -> None:
    _apply(
        cluster,
        namespace,
        _pod("crash", _pod_spec(agent, _box("--exit-after", "0.3", "--exit-code", "3"))),
    )
    seen_backoff: list[Json] = []

    def restarted_thrice() -> bool:
        status = _pod_status(cluster, namespace, "crash")
        container = _container(status)
        waiting = container.get("state", {}).get("waiting", {})
        if waiting.get("reason") == "CrashLoopBackOff":
            seen_backoff.append(container)
        return container.get("restartCount", 0) >= 3 and bool(seen_backoff)

    wait.eventually(restarted_thrice, "three restarts and a CrashLoopBackOff", timeout_s=WAIT_S)
    container = seen_backoff[-1]
    assert container["lastState"]["terminated"]["exitCode"] == 3
    assert container["lastState"]["terminated"]["reason"] == "Error"
    assert "back-off" in container["state"]["waiting"]["message"]
    assert _pod_status(cluster, namespace, "crash")["phase"] == "Running"


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (4, "Failed")])
def test_a_pod_that_does_not_restart_ends_succeeded_or_failed(
    cluster: local.Cluster, agent: Agent, namespace: str, code: int, phase: str
) -> None:
    spec = _pod_spec(
        agent,
        _box("--exit-after", "0.2", "--exit-code", str(code)),
        restartPolicy="Never",
        initContainers=[{"name": "setup", "image": TESTBOX, "command": ["sh", "-c", "exit 0"]}],
    )
    _apply(cluster, namespace, _pod("once", spec))
    status = wait.eventually(
        lambda: (s := _pod_status(cluster, namespace, "once")).get("phase") == phase and s,
        f"phase {phase}",
        timeout_s=WAIT_S,
    )
    assert _container(status)["state"]["terminated"]["exitCode"] == code
    init = status["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert _condition(status, "Initialized")["status"] == "True"
    assert _condition(status, "Ready")["reason"] == "PodCompleted"


def test_deletion_runs_prestop_then_sigterm_then_sigkill_and_removes_the_pod(
    cluster: local.Cluster, agent: Agent, namespace: str, tmp_path: pathlib.Path
) -> None:
    events = tmp_path / "events"
    box = _box(
        "--ignore-sigterm", "--spawn-child", "--record", str(events),
        lifecycle={"preStop": {"httpGet": {"path": "/prestop", "port": "http"}}},
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    )  # fmt: skip
    _apply(
        cluster, namespace, _pod("stubborn", _pod_spec(agent, box, terminationGracePeriodSeconds=3))
    )
    status = wait.eventually(
        lambda: (
            (s := _pod_status(cluster, namespace, "stubborn"))
            and _condition(s, "Ready").get("status") == "True"
            and s
        ),
        "the pod Ready",
        timeout_s=WAIT_S,
    )
    pid = _pid(_container(status))
    cluster.kubectl("delete", "pod", "stubborn", "-n", namespace, "--wait=false")
    wait.eventually(
        lambda: _get(cluster, namespace, "pod", "stubborn") is None,
        "the pod gone",
        timeout_s=WAIT_S,
    )
    lines = events.read_text().splitlines()
    assert lines.index("prestop") < lines.index("sigterm")
    assert "exiting" not in lines  # it ignored SIGTERM, so SIGKILL ended it
    child = next(int(line.split()[1]) for line in lines if line.startswith("child "))
    assert process.start_ticks(pid) is None
    assert process.start_ticks(child) is None  # its child went with the process group


def test_a_force_deleted_pods_processes_are_stopped(
    cluster: local.Cluster, agent: Agent, namespace: str
) -> None:
    _apply(cluster, namespace, _pod("forced", _pod_spec(agent, _box("--spawn-child"))))
    status = wait.eventually(
        lambda: (s := _pod_status(cluster, namespace, "forced")).get("phase") == "Running" and s,
        "the pod running",
        timeout_s=WAIT_S,
    )
    pid = _pid(_container(status))
    cluster.kubectl("delete", "pod", "forced", "-n", namespace, "--grace-period=0", "--force")
    wait.eventually(
        lambda: process.start_ticks(pid) is None, "its process stopped", timeout_s=WAIT_S
    )


def test_more_gpus_than_the_node_has_leave_the_pod_pending_unschedulable(
    cluster: local.Cluster, agent: Agent, namespace: str
) -> None:
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    _apply(
        cluster,
        namespace,
        _pod("first", _pod_spec(agent, _box(resources=gpu))),
        _pod("second", _pod_spec(agent, _box(resources=gpu))),
    )

    def one_runs_one_waits() -> list[Json] | None:
        statuses = [_pod_status(cluster, namespace, name) for name in ("first", "second")]
        phases = sorted(str(s.get("phase")) for s in statuses)
        blocked = [
            s for s in statuses if _condition(s, "PodScheduled").get("reason") == "Unschedulable"
        ]
        return statuses if phases == ["Pending", "Running"] and blocked else None

    statuses = wait.eventually(
        one_runs_one_waits, "one pod running on the GPU, the other unschedulable", timeout_s=WAIT_S
    )
    waiting = next(s for s in statuses if s["phase"] == "Pending")
    assert "Insufficient nvidia.com/gpu" in _condition(waiting, "PodScheduled")["message"]
    assert "podIP" not in waiting


def test_an_unknown_image_waits_in_err_image_pull(
    cluster: local.Cluster, agent: Agent, namespace: str
) -> None:
    container = {"name": "web", "image": "nginx:1.27"}
    _apply(cluster, namespace, _pod("nginx", _pod_spec(agent, container)))

    def pulled() -> Json | None:
        state = _container(_pod_status(cluster, namespace, "nginx"), "web").get("state", {})
        waiting: Json | None = state.get("waiting")
        return waiting if waiting and waiting.get("reason") == "ErrImagePull" else None

    waiting = wait.eventually(pulled, "ErrImagePull", timeout_s=WAIT_S)
    assert "nginx:1.27" in waiting["message"]
    assert _pod_status(cluster, namespace, "nginx")["phase"] == "Pending"


def test_an_agent_restart_adopts_live_pods_and_leaves_no_orphans(
    cluster: local.Cluster, agent: Agent, namespace: str
) -> None:
    probe = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}
    _apply(
        cluster,
        namespace,
        _pod("kept", _pod_spec(agent, _box(readinessProbe=probe))),
        _pod("dropped", _pod_spec(agent, _box("--spawn-child"))),
    )

    def both_running() -> dict[str, Json] | None:
        statuses = {name: _pod_status(cluster, namespace, name) for name in ("kept", "dropped")}
        if all(_condition(s, "Ready").get("status") == "True" for s in statuses.values()):
            return statuses
        return None

    before = wait.eventually(both_running, "both pods Ready", timeout_s=WAIT_S)
    kept_pid, dropped_pid = _pid(_container(before["kept"])), _pid(_container(before["dropped"]))

    # The agent dies without cleaning up; meanwhile one pod object goes away for good.
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    cluster.kubectl("delete", "pod", "dropped", "-n", namespace, "--grace-period=0", "--force")
    assert process.start_ticks(dropped_pid) is not None  # still running: nobody stopped it
    agent.start()

    wait.eventually(
        lambda: process.start_ticks(dropped_pid) is None, "the orphan stopped", timeout_s=WAIT_S
    )
    assert process.start_ticks(kept_pid) is not None  # adopted, not restarted
    after = wait.eventually(
        lambda: (
            (s := _pod_status(cluster, namespace, "kept"))
            and _condition(s, "Ready").get("status") == "True"
            and s
        ),
        "the kept pod Ready",
        timeout_s=WAIT_S,
    )
    container = _container(after)
    assert (_pid(container), container["restartCount"]) == (kept_pid, 0)
    assert after["podIP"] == before["kept"]["podIP"]

    # A clean stop ends the processes; the next start restarts them per policy.
    assert agent.stop() == 0
    assert process.start_ticks(kept_pid) is None
    assert agent.node_ready() is False
    agent.start()
    restarted = wait.eventually(
        lambda: (
            (s := _pod_status(cluster, namespace, "kept"))
            and _container(s).get("restartCount") == 1
            and _condition(s, "Ready").get("status") == "True"
            and s
        ),
        "the kept pod restarted and Ready",
        timeout_s=WAIT_S,
    )
    assert restarted["podIP"] == before["kept"]["podIP"]
    with contextlib.suppress(ProcessLookupError):
        assert _pid(_container(restarted)) != kept_pid
