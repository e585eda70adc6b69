"""Pod JSON from the API server becomes the agent's typed spec; bad fields are named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kvscale.localstack.nodeagent import podspec

POD: dict[str, Any] = {
    "metadata": {
        "name": "engine-0",
        "namespace": "llm",
        "uid": "1111-2222",
        "labels": {"app": "engine"},
        "annotations": {"note": "x"},
    },
    "spec": {
        "nodeName": "local-node-0",
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 45,
        "readinessGates": [{"conditionType": "example.com/gate"}],
        "initContainers": [
            {"name": "setup", "image": "kvscale.local/testbox:1", "command": ["true"]},
            {"name": "proxy", "image": "kvscale.local/testbox:1", "restartPolicy": "Always"},
        ],
        "containers": [
            {
                "name": "engine",
                "image": "vllm/vllm-openai:v0.32.0",
                "args": ["--host", "$(POD_IP)", "--port", "8000"],
                "ports": [{"name": "http", "containerPort": 8000}, {"containerPort": 9000}],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MODE", "value": "fast"},
                    {"name": "EMPTY"},
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "t", "optional": True}},
                    },
                    {
                        "name": "CPU",
                        "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}},
                    },
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
                "readinessProbe": {
                    "httpGet": {"path": "/health", "port": "http"},
                    "periodSeconds": 2,
                    "failureThreshold": 5,
                },
                "livenessProbe": {"tcpSocket": {"port": 8000}, "initialDelaySeconds": 30},
                "startupProbe": {"exec": {"command": ["cat", "/tmp/ok"]}, "timeoutSeconds": 3},
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
            },
            {
                "name": "sidecar",
                "image": "ghcr.io/kvscale/kvscale:0.1.0",
                "readinessProbe": {"grpc": {"port": 9090}},
                "lifecycle": {
                    "preStop": {
                        "httpGet": {
                            "path": "drain",
                            "port": 9090,
                            "httpHeaders": [{"name": "X-Why", "value": "stop"}],
                        }
                    }
                },
            },
        ],
    },
    "status": {"phase": "Running", "podIP": "127.1.0.4"},
}


def test_a_full_pod() -> None:
    pod = podspec.parse_pod(POD)
    assert (pod.namespace, pod.name, pod.uid, pod.node_name) == (
        "llm",
        "engine-0",
        "1111-2222",
        "local-node-0",
    )
    assert pod.key == "llm/engine-0"
    assert pod.grace_period_seconds() == 45
    assert pod.readiness_gates == ("example.com/gate",)
    assert (pod.phase, pod.pod_ip, pod.deleting, pod.terminal) == (
        "Running",
        "127.1.0.4",
        False,
        False,
    )
    setup, proxy = pod.init_containers
    assert setup.command == ("true",)
    assert setup.restart_policy is None
    assert proxy.restart_policy == "Always"
    engine, sidecar = pod.containers
    assert engine.args == ("--host", "$(POD_IP)", "--port", "8000")
    assert engine.command is None
    assert engine.ports == {"http": 8000}
    assert engine.port_number("http") == 8000
    assert engine.port_number("8000") == 8000
    assert engine.port_number(7) == 7
    assert engine.port_number("nope") is None
    assert engine.env == (
        podspec.EnvVar("POD_IP", source=podspec.FieldRef("status.podIP")),
        podspec.EnvVar("MODE", "fast"),
        podspec.EnvVar("EMPTY", ""),
        podspec.EnvVar("TOKEN", source=podspec.KeyRef("Secret", "s", "t", optional=True)),
        podspec.EnvVar("CPU", source=podspec.ResourceFieldRef("limits.cpu")),
    )
    assert engine.env_from == (podspec.EnvFrom("ConfigMap", "settings", prefix="APP_"),)
    assert engine.readiness_probe == podspec.Probe(
        action=podspec.HttpGet(port="http", path="/health"), period_seconds=2, failure_threshold=5
    )
    assert engine.liveness_probe == podspec.Probe(
        action=podspec.TcpSocket(port=8000), initial_delay_seconds=30
    )
    assert engine.startup_probe == podspec.Probe(
        action=podspec.Exec(command=("cat", "/tmp/ok")), timeout_seconds=3
    )
    assert engine.pre_stop == podspec.Sleep(seconds=5)
    assert sidecar.readiness_probe is not None
    assert sidecar.readiness_probe.action == podspec.Unsupported(kind="grpc")
    assert sidecar.pre_stop == podspec.HttpGet(
        port=9090, path="drain", headers=(("X-Why", "stop"),)
    )


def test_defaults() -> None:
    pod = podspec.parse_pod(
        {
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )
    assert pod.namespace == "default"
    assert pod.restart_policy == "Always"
    assert pod.termination_grace_period_seconds == 30
    assert pod.init_containers == ()
    assert pod.phase is None
    assert pod.pod_ip is None
    assert pod.containers[0] == podspec.Container(name="c", image="i")


def test_a_deletion_takes_its_own_grace_period() -> None:
    raw = copy.deepcopy(POD)
    raw["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    raw["metadata"]["deletionGracePeriodSeconds"] = 7
    pod = podspec.parse_pod(raw)
    assert pod.deleting
    assert pod.grace_period_seconds() == 7


def _with(path: list[str | int], value: object) -> dict[str, Any]:
    raw = copy.deepcopy(POD)
    target: Any = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["spec", "restartPolicy"], "Sometimes", "spec.restartPolicy: must be one of"),
        (["spec", "containers"], [], "spec.containers: must have at least one container"),
        (["spec", "containers", 0, "image"], None, r"spec.containers\[0\].image: is required"),
        (["spec", "containers", 0, "args"], "--x", r"spec.containers\[0\].args: must be a list"),
        (
            ["spec", "containers", 0, "readinessProbe", "periodSeconds"],
            0,
            r"spec.containers\[0\].readinessProbe.periodSeconds: must be at least 1",
        ),
        (
            ["spec", "containers", 0, "livenessProbe"],
            {"periodSeconds": 3},
            r"spec.containers\[0\].livenessProbe: needs one of httpGet",
        ),
        (
            ["spec", "containers", 0, "ports", 0, "containerPort"],
            70000,
            r"spec.containers\[0\].ports\[0\].containerPort: must be between 1 and 65535",
        ),
        (
            ["spec", "containers", 0, "env", 0, "valueFrom"],
            {"somethingElse": {}},
            r"spec.containers\[0\].env\[0\].valueFrom: needs one of fieldRef",
        ),
        (
            ["spec", "initContainers", 1, "restartPolicy"],
            "Sometimes",
            r"spec.initContainers\[1\].restartPolicy: must be one of",
        ),
        (["spec", "terminationGracePeriodSeconds"], "30", "must be an integer"),
        (["metadata", "uid"], None, "metadata.uid: is required"),
        (["metadata", "labels"], ["a"], "metadata.labels: must be an object"),
    ],
)
def test_bad_fields_are_named(path: list[str | int], value: object, message: str) -> None:
    with pytest.raises(podspec.SpecError, match=message):
        podspec.parse_pod(_with(path, value))
