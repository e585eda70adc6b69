"""The operator against the real API server: what it makes, puts back, scales and reports.

The operator runs as a subprocess (`kvscale operator`, see conftest.py), against a cluster of
the module's own on the real node (kubelet, containerd, runc; 4 fake GPUs, pods of 2). The CRs
use `manifest.never_ready_spec`: the engine container runs the node's webecho image, which
serves on another port than the engine's, so nothing here needs vLLM and the engine pods never
become ready: these tests are about objects, ownership, replicas and conditions, not about
serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from typing import Any, Protocol

import pytest
from lightkube import AsyncClient
from tests.integration import realnode
from tests.support import manifest, wait

from kvscale.api import models
from kvscale.localstack import cluster as local
from kvscale_operator import config, kube, login
from kvscale_operator.reconciler import engine_args

pytestmark = pytest.mark.cluster

cluster = realnode.module_cluster("or")


class Operator(Protocol):
    """What these tests need of the `operator` fixture (tests/integration/conftest.py)."""

    def start(self) -> None: ...

    def stop(self) -> int: ...

    def log(self, since: int = 0) -> str: ...

    def log_size(self) -> int: ...


NAME = "llama"
OWNED_KINDS = ("deployment", "service", "poddisruptionbudget")


def resource(**spec: Any) -> dict[str, Any]:
    """The CR: the never-ready spec with `spec`'s parts merged over it."""
    return manifest.inference_deployment(NAME, manifest.never_ready_spec(**spec))


class Kube:
    """kubectl against the session's cluster, in one namespace, with JSON reads."""

    def __init__(self, cluster: local.Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def run(self, *args: str, check: bool = True, input: str | None = None) -> str:
        result = self.cluster.kubectl("-n", self.namespace, *args, check=check, input=input)
        return result.stdout

    def apply(self, obj: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str = NAME) -> dict[str, Any] | None:
        result = self.cluster.kubectl(
            "-n", self.namespace, "get", kind, name, "-o", "json", "--show-managed-fields",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise subprocess.CalledProcessError(result.returncode, "kubectl get", result.stderr)
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def must(self, kind: str, name: str = NAME) -> dict[str, Any]:
        found = self.get(kind, name)
        assert found is not None, f"{kind}/{name} is missing"
        return found

    def items(self, kind: str, selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            self.run("get", kind, "-l", selector, "-o", "json")
        )["items"]
        return found

    def condition(self, kind: str) -> dict[str, Any] | None:
        infd = self.get("infd")
        for item in ((infd or {}).get("status") or {}).get("conditions") or []:
            if item["type"] == kind:
                found: dict[str, Any] = item
                return found
        return None

    def events(self, reason: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            self.run("get", "events", "--field-selector", f"reason={reason}", "-o", "json")
        )["items"]
        return [event for event in found if event["involvedObject"]["kind"] == models.KIND]


@pytest.fixture
def k8s(cluster: local.Cluster, namespace: str, operator: Operator) -> Kube:
    """kubectl in the test's namespace, with the operator running."""
    return Kube(cluster, namespace)


def wait_for_objects(k8s: Kube) -> dict[str, dict[str, Any]]:
    return {
        kind: wait.eventually(lambda kind=kind: k8s.get(kind), f"the {kind} {NAME}", timeout_s=90)  # type: ignore[misc]
        for kind in OWNED_KINDS
    }


def managers_of_replicas(deployment: dict[str, Any]) -> set[str]:
    """Field managers that own spec.replicas. Writes through /scale are recorded under the scale
    manager on some API server versions and not at all on others (1.36 records none): either
    way the operator's own manager must never own it, or its applies would reset it."""
    return {
        entry["manager"]
        for entry in deployment["metadata"].get("managedFields", [])
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
    }


def test_an_applied_cr_gets_its_objects_owned_by_it_with_the_rendered_args(k8s: Kube) -> None:
    k8s.apply(resource(scaling={"minReplicas": 2, "maxReplicas": 3}))
    objects = wait_for_objects(k8s)
    infd = k8s.must("infd")
    for kind, obj in objects.items():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == infd["metadata"]["uid"], kind
        assert owner["kind"] == models.KIND
        assert owner["controller"] is True
        assert owner["blockOwnerDeletion"] is True
        assert obj["metadata"]["labels"]["kvscale.dev/inference-deployment"] == NAME
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kvscale"

    spec = models.InferenceDeployment.from_object(infd).spec
    containers = objects["deployment"]["spec"]["template"]["spec"]["containers"]
    engine = next(item for item in containers if item["name"] == "engine")
    assert engine["args"] == engine_args.render(spec)
    assert "--host" in engine["args"]

    # Replicas: minReplicas, set through the scale subresource, never by the operator's apply.
    deployment = wait.eventually(
        lambda: (d := k8s.get("deployment")) and d["spec"]["replicas"] == 2 and d,
        "the Deployment at minReplicas",
        timeout_s=90,
    )
    assert managers_of_replicas(deployment) <= {config.SCALE_FIELD_MANAGER}

    # Both writers' fields: the reconciler's (Ready, selector) and the autoscaler's.
    status = wait.eventually(
        lambda: (
            (s := k8s.must("infd").get("status"))
            and {"Ready", "ScalingLimited"} <= {item["type"] for item in s.get("conditions", [])}
            and "desiredReplicas" in s
            and s
        ),
        "the CR's status",
        timeout_s=90,
    )
    assert status["selector"] == "kvscale.dev/inference-deployment=llama"
    assert status["desiredReplicas"] == 2
    assert status["observedGeneration"] == infd["metadata"]["generation"]
    created = wait.eventually(
        lambda: k8s.events("Created"), "Created events on the CR", timeout_s=90
    )
    assert {event["message"] for event in created} >= {
        f"created Deployment {NAME}",
        f"created Service {NAME}",
        f"created PodDisruptionBudget {NAME}",
    }


def test_a_model_cache_is_mounted_by_the_kubelet_as_the_engine_hf_home(
    k8s: Kube, tmp_path: Any
) -> None:
    # A hostPath on the node (the node's kubelet shares this host's filesystem): the kubelet
    # must find the directory (type Directory) and mount it read-only before the engine runs.
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    k8s.apply(resource(model={"cache": {"hostPath": str(models_dir)}}))
    wait_for_objects(k8s)

    def engine_running() -> dict[str, Any] | None:
        for pod in k8s.items("pods", "kvscale.dev/inference-deployment=llama"):
            for status in pod["status"].get("containerStatuses") or []:
                if status["name"] == "engine" and "running" in status["state"]:
                    found: dict[str, Any] = pod
                    return found
        return None

    pod = wait.eventually(engine_running, "the engine container running", timeout_s=90)
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["model-cache"]["hostPath"] == {"path": str(models_dir), "type": "Directory"}
    # Every engine has a memory-backed /dev/shm for vLLM's workers (containerd's is 64 MiB).
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    [engine] = [c for c in pod["spec"]["containers"] if c["name"] == "engine"]
    mounts = {mount["name"]: mount for mount in engine["volumeMounts"]}
    assert mounts["model-cache"] == {
        "name": "model-cache",
        "mountPath": models.MODEL_CACHE_MOUNT_PATH,
        "readOnly": True,
    }
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    assert {"name": "HF_HOME", "value": models.MODEL_CACHE_MOUNT_PATH} in engine["env"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in engine["env"]


def test_a_deleted_deployment_service_or_pdb_comes_back(k8s: Kube) -> None:
    k8s.apply(resource())
    objects = wait_for_objects(k8s)
    for kind, obj in objects.items():
        old_uid = obj["metadata"]["uid"]
        k8s.run("delete", kind, NAME, "--wait=false")
        wait.eventually(
            lambda kind=kind, old_uid=old_uid: (  # type: ignore[misc]
                (new := k8s.get(kind)) is not None and new["metadata"]["uid"] != old_uid
            ),
            f"the {kind} to be recreated",
            timeout_s=90,
        )
    drift = wait.eventually(
        lambda: k8s.events("DriftCorrected"), "a DriftCorrected event", timeout_s=90
    )
    assert any("was deleted; recreated it" in event["message"] for event in drift)


def test_an_edited_owned_field_is_restored_and_replicas_are_left_alone(k8s: Kube) -> None:
    k8s.apply(resource())
    wait_for_objects(k8s)
    rendered = k8s.must("deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    k8s.run("scale", "deployment", NAME, "--replicas", "2")
    k8s.run(
        "patch",
        "deployment",
        NAME,
        "--type",
        "json",
        "-p",
        json.dumps(
            [
                {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--x"},
                {
                    "op": "replace",
                    "path": "/metadata/labels/app.kubernetes.io~1instance",
                    "value": "edited",
                },
            ]
        ),
    )
    restored = wait.eventually(
        lambda: (
            (d := k8s.get("deployment"))
            and d["spec"]["template"]["spec"]["containers"][0]["args"] == rendered
            and d["metadata"]["labels"]["app.kubernetes.io/instance"] == NAME
            and d
        ),
        "the edited args and label to be restored",
        timeout_s=90,
    )
    assert restored["spec"]["replicas"] == 2  # not the operator's field
    edit = [{"op": "replace", "path": "/spec/ports/0/port", "value": 1}]
    k8s.run("patch", "service", NAME, "--type", "json", "-p", json.dumps(edit))
    wait.eventually(
        lambda: (s := k8s.get("service")) and s["spec"]["ports"][0]["port"] == 8000,
        "the Service's port to be restored",
        timeout_s=90,
    )
    drift = wait.eventually(
        lambda: k8s.events("DriftCorrected"), "a DriftCorrected event", timeout_s=90
    )
    assert any("restored" in event["message"] for event in drift)
    assert k8s.must("deployment")["spec"]["replicas"] == 2


def test_kubectl_scale_infd_sets_the_deployment_replicas(k8s: Kube) -> None:
    k8s.apply(resource())
    wait_for_objects(k8s)
    k8s.run("scale", "infd", NAME, "--replicas", "3")
    deployment = wait.eventually(
        lambda: (d := k8s.get("deployment")) and d["spec"]["replicas"] == 3 and d,
        "the Deployment scaled to 3",
        timeout_s=90,
    )
    assert managers_of_replicas(deployment) <= {config.SCALE_FIELD_MANAGER}
    wait.eventually(
        lambda: (k8s.must("infd").get("status") or {}).get("desiredReplicas") == 3,
        "status.desiredReplicas 3",
        timeout_s=90,
    )
    # The scale subresource reads the selector the operator writes into status.
    path = f"/apis/{models.API_VERSION}/namespaces/{k8s.namespace}/{models.PLURAL}/{NAME}/scale"
    scale = json.loads(k8s.run("get", "--raw", path))
    assert scale["status"]["selector"] == "kvscale.dev/inference-deployment=llama"
    assert scale["spec"]["replicas"] == 3


def test_more_replicas_than_free_gpus_leave_pods_pending_and_the_cr_says_why(
    k8s: Kube, cluster: local.Cluster
) -> None:
    # Each replica takes a whole node's GPUs, and there is one replica more than nodes.
    k8s.apply(
        resource(
            replicas=cluster.nodes + 1,
            resources={"gpusPerReplica": cluster.gpus_per_node},
        )
    )
    limited = wait.eventually(
        lambda: (c := k8s.condition("ScalingLimited")) and c["status"] == "True" and c,
        "ScalingLimited=True",
        timeout_s=90,
    )
    assert limited["reason"] == "PodsUnschedulable"
    assert f"of {cluster.nodes + 1} replicas pending: " in limited["message"]
    assert "Insufficient nvidia.com/gpu" in limited["message"]
    pending = [
        pod
        for pod in k8s.items("pods", "kvscale.dev/inference-deployment=llama")
        if pod["status"].get("phase") == "Pending"
    ]
    assert pending


def settled(k8s: Kube) -> dict[str, tuple[str, int | None]]:
    """(resourceVersion, generation) of each owned object."""
    found = {}
    for kind in OWNED_KINDS:
        metadata = k8s.must(kind)["metadata"]
        found[kind] = (metadata["resourceVersion"], metadata.get("generation"))
    return found


def test_an_operator_restart_makes_no_duplicates_and_no_changes(
    k8s: Kube, operator: Operator
) -> None:
    k8s.apply(resource())
    wait_for_objects(k8s)
    wait.eventually(
        lambda: (
            (d := k8s.get("deployment"))
            and d["status"].get("observedGeneration") == d["metadata"]["generation"]
            and d["status"].get("replicas") == 1
        ),
        "the Deployment to settle at one replica",
        timeout_s=90,
    )
    wait.eventually(lambda: k8s.condition("Ready"), "the Ready condition", timeout_s=90)
    before = settled(k8s)
    generation = k8s.must("infd")["metadata"]["generation"]

    operator.stop()
    mark = operator.log_size()
    operator.start()
    wait.eventually(
        lambda: (
            f"{k8s.namespace}/{NAME}: reconciled generation {generation}, 0 change(s)"
            in operator.log(mark)
        ),
        "the restarted operator's resume pass",
        timeout_s=90,
    )
    # Give the watch handlers' first listing time to act, had it anything to do.
    time.sleep(5)
    assert settled(k8s) == before
    selector = "kvscale.dev/inference-deployment=llama"
    for kind in OWNED_KINDS:
        assert len(k8s.items(kind, selector)) == 1, kind
    assert len(k8s.items("replicasets", selector)) == 1
    assert "DriftCorrected" not in operator.log(mark)


def test_deleting_the_cr_garbage_collects_its_objects(k8s: Kube) -> None:
    k8s.apply(resource())
    wait_for_objects(k8s)
    k8s.run("delete", "infd", NAME, "--wait=false")
    for kind in OWNED_KINDS:
        wait.eventually(
            lambda kind=kind: k8s.get(kind) is None,  # type: ignore[misc]
            f"the {kind} to be collected",
            timeout_s=90,
        )
    wait.eventually(
        lambda: k8s.items("pods", "kvscale.dev/inference-deployment=llama") == [],
        "the engine pods to be collected",
        timeout_s=90,
    )


def test_an_engine_config_problem_is_a_condition_with_a_clear_message(k8s: Kube) -> None:
    k8s.apply(resource(engine={"extraArgs": ["--swap-space", "4", "--block-size=64"]}))
    ready = wait.eventually(
        lambda: (c := k8s.condition("Ready")) and c["reason"] == "EngineConfigInvalid" and c,
        "Ready=False with reason EngineConfigInvalid",
        timeout_s=90,
    )
    assert ready["status"] == "False"
    assert "spec.engine.extraArgs[0] '--swap-space': vLLM V1 removed it" in ready["message"]
    assert "spec.engine.extraArgs[2] '--block-size=64' duplicates --block-size" in ready["message"]
    assert k8s.get("deployment") is None
    assert wait.eventually(
        lambda: k8s.events("EngineConfigInvalid"), "an EngineConfigInvalid event", timeout_s=90
    )
    # Fixing the spec rolls it out.
    k8s.run("patch", "infd", NAME, "--type", "merge", "-p", '{"spec":{"engine":{"extraArgs":[]}}}')
    wait.eventually(
        lambda: k8s.get("deployment"), "the Deployment once the spec is fixed", timeout_s=90
    )
    wait.eventually(
        lambda: (c := k8s.condition("Ready")) and c["reason"] != "EngineConfigInvalid",
        "the EngineConfigInvalid condition to clear",
        timeout_s=90,
    )


def test_a_status_write_that_meets_a_concurrent_writer_is_retried(
    k8s: Kube, cluster: local.Cluster
) -> None:
    k8s.apply(resource())
    wait.eventually(lambda: k8s.condition("Ready"), "the operator's first status", timeout_s=90)
    seen: list[str] = []
    conflicts: list[int] = []

    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(obj["metadata"]["resourceVersion"])
        if len(seen) == 1:
            # Another writer lands between this read and the write below.
            k8s.run("annotate", "infd", NAME, f"test/concurrent-writer={time.time()}")
        return {"occupancy": 0.25}

    async def write() -> dict[str, Any] | None:
        settings = config.Settings(kubeconfig=cluster.kubeconfig)
        client = AsyncClient(config=login.load(settings, os.environ))
        api = kube.Kube(client, settings, on_conflict=lambda: conflicts.append(1))
        try:
            return await api.update_status(k8s.namespace, NAME, mutate)
        finally:
            await api.close()

    written = asyncio.run(write())
    assert conflicts, "the first write should have met a 409 Conflict"
    assert len(seen) == len(conflicts) + 1
    assert seen[0] != seen[1]  # the retry read the object afresh
    assert written is not None
    assert written["status"]["occupancy"] == 0.25
    # The operator's fields survived: the write patched only the one field.
    assert {item["type"] for item in written["status"]["conditions"]} >= {"Ready"}
