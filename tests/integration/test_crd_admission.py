"""The real API server enforces the generated CRD: validation, defaults, columns, scale.

Installs the checked-in CRD (`crds/`), then applies every example under `examples/` with the
project's kubectl, which sends fieldValidation=Strict, as users do.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
import yaml

from kvscale.api import crd, models

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))
VALID = ROOT / "examples" / "tiny-llama.yaml"
NAMESPACE = "kvscale-crd-admission"


class Kubectl(Protocol):
    """What this test needs of the `cluster` fixture."""

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture(scope="module")
def kube(cluster: Kubectl) -> Iterator[Kubectl]:
    """The session's cluster with the CRD installed and Established, and a namespace to use."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / crd.YAML_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    yield cluster
    # The CRD stays: later tests in the session may use it. What this module made goes.
    cluster.kubectl("delete", "infd", "--all", "-n", NAMESPACE, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _header(path: pathlib.Path) -> dict[str, str]:
    header = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("# ").partition(": ")
        if line.startswith("# expect-") and sep:
            header[key] = value.strip()
    assert {"expect-field", "expect-message"} <= header.keys(), (
        f"{path.name}: needs '# expect-field:' and '# expect-message:' header lines"
    )
    return header


def _get(kube: Kubectl, name: str) -> dict[str, Any]:
    result = kube.kubectl("get", "infd", name, "-n", NAMESPACE, "-o", "json")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_api_server_refuses_invalid_example(kube: Kubectl, path: pathlib.Path) -> None:
    header = _header(path)
    result = kube.kubectl("apply", "-n", NAMESPACE, "-f", str(path), check=False)
    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    assert header["expect-field"] in result.stderr, result.stderr
    assert header["expect-message"] in result.stderr, result.stderr
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    missing = kube.kubectl("get", "infd", name, "-n", NAMESPACE, check=False)
    assert missing.returncode != 0, missing.stdout
    assert "NotFound" in missing.stderr, missing.stderr


@pytest.fixture(scope="module")
def tiny_llama(kube: Kubectl) -> str:
    """The valid example, applied; its name."""
    result = kube.kubectl("apply", "-n", NAMESPACE, "-f", str(VALID))
    assert "created" in result.stdout or "configured" in result.stdout, result.stdout
    name: str = yaml.safe_load(VALID.read_text())["metadata"]["name"]
    return name


def test_server_fills_in_the_models_defaults(kube: Kubectl, tiny_llama: str) -> None:
    written = yaml.safe_load(VALID.read_text())["spec"]
    stored = _get(kube, tiny_llama)["spec"]
    # Not written in the example, filled in by the API server from the CRD.
    assert "targetOccupancy" not in written["scaling"]
    assert stored["scaling"]["targetOccupancy"] == 0.7
    assert "preemption" not in written["engine"]
    assert stored["engine"]["preemption"] == {"policy": "recompute"}
    # Everything the server stored is what the operator's models make of the example.
    expected = models.InferenceDeploymentSpec.model_validate(written)
    assert stored == expected.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_printer_columns(kube: Kubectl, tiny_llama: str) -> None:
    header = kube.kubectl("get", "infd", tiny_llama, "-n", NAMESPACE).stdout.splitlines()[0]
    assert header.split() == ["NAME", "READY", "REPLICAS", "DESIRED", "OCCUPANCY", "MODE", "AGE"]
    status = models.InferenceDeploymentStatus(
        replicas=2,
        desired_replicas=3,
        occupancy=0.42,
        selector=f"kvscale.dev/inference-deployment={tiny_llama}",
        conditions=[
            models.Condition(
                type=models.ConditionType.READY,
                status=models.ConditionStatus.TRUE,
                reason="EnginesReady",
                last_transition_time="2025-01-01T00:00:00Z",
            )
        ],
    )
    patch = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    kube.kubectl(
        "patch", "infd", tiny_llama, "-n", NAMESPACE, "--subresource=status", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip
    rows = kube.kubectl("get", "infd", tiny_llama, "-n", NAMESPACE).stdout.splitlines()
    assert rows[1].split()[:6] == [tiny_llama, "True", "2", "3", "0.42", "Active"]
    # The short name's category lists it too.
    assert tiny_llama in kube.kubectl("get", "kvscale", "-n", NAMESPACE).stdout


def test_status_conditions_are_unique_by_type(kube: Kubectl, tiny_llama: str) -> None:
    twice = [
        {"type": "Ready", "status": "True", "reason": "A"},
        {"type": "Ready", "status": "False", "reason": "B"},
    ]
    result = kube.kubectl(
        "patch", "infd", tiny_llama, "-n", NAMESPACE, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"conditions": twice}}), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "status.conditions[1]: Duplicate value" in result.stderr, result.stderr


def _apply_renamed(kube: Kubectl, name: str) -> None:
    document = yaml.safe_load(VALID.read_text())
    document["metadata"]["name"] = name
    kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(document))


def test_scale_subresource_sets_spec_replicas(kube: Kubectl) -> None:
    name = "tiny-llama-scaled"
    _apply_renamed(kube, name)
    assert "replicas" not in _get(kube, name)["spec"]
    kube.kubectl("scale", "infd", name, "-n", NAMESPACE, "--replicas", "3")
    assert _get(kube, name)["spec"]["replicas"] == 3
    scale = json.loads(
        kube.kubectl(
            "get", "--raw",
            f"/apis/{models.API_VERSION}/namespaces/{NAMESPACE}/{models.PLURAL}/{name}/scale",
        ).stdout
    )  # fmt: skip
    assert scale["spec"]["replicas"] == 3


def test_scale_subresource_is_bounded_like_the_model(kube: Kubectl) -> None:
    name = "tiny-llama-overscaled"
    _apply_renamed(kube, name)
    result = kube.kubectl(
        "scale", "infd", name, "-n", NAMESPACE, "--replicas", "10001", check=False
    )
    assert result.returncode != 0
    assert "spec.replicas" in result.stderr, result.stderr
    assert "should be less than or equal to 10000" in result.stderr, result.stderr
    assert "replicas" not in _get(kube, name)["spec"]
