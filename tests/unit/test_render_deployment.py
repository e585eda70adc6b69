"""The engine Deployment rendered from an InferenceDeployment."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from kvscale.api import models
from kvscale_operator.reconciler import engine_args, render
from kvscale_sidecar import settings as sidecar_settings

UID = "0b9e5c1e-1111-4222-8333-444455556666"


def infd(name: str = "llama", namespace: str = "team-a", **spec: Any) -> models.InferenceDeployment:
    body: dict[str, Any] = {"model": {"name": "org/model"}}
    body.update(spec)
    return models.InferenceDeployment.from_object(
        {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": UID, "generation": 3},
            "spec": body,
        }
    )


def container(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    found = [item for item in containers if item["name"] == name]
    assert len(found) == 1
    result: dict[str, Any] = found[0]
    return result


EXPECTED_LABELS = {
    "app.kubernetes.io/name": "kvscale-engine",
    "app.kubernetes.io/instance": "llama",
    "app.kubernetes.io/managed-by": "kvscale",
    "kvscale.dev/inference-deployment": "llama",
}


def test_deployment_is_named_like_the_cr_and_owned_by_it() -> None:
    manifest = render.deployment(infd())
    assert manifest["apiVersion"] == "apps/v1"
    assert manifest["kind"] == "Deployment"
    assert manifest["metadata"]["name"] == "llama"
    assert manifest["metadata"]["namespace"] == "team-a"
    assert manifest["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kvscale.dev/v1alpha1",
            "kind": "InferenceDeployment",
            "name": "llama",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_labels_are_on_the_deployment_and_its_pods_and_the_selector_is_one_label() -> None:
    manifest = render.deployment(infd())
    assert manifest["metadata"]["labels"] == EXPECTED_LABELS
    assert manifest["spec"]["template"]["metadata"]["labels"] == EXPECTED_LABELS
    assert manifest["spec"]["selector"] == {
        "matchLabels": {"kvscale.dev/inference-deployment": "llama"}
    }
    assert render.selector("llama") == "kvscale.dev/inference-deployment=llama"


def test_replicas_are_never_rendered() -> None:
    manifest = render.deployment(infd(replicas=3, scaling={"minReplicas": 2, "maxReplicas": 5}))
    assert "replicas" not in manifest["spec"]


def test_owner_reference_needs_the_uid_the_api_server_assigned() -> None:
    bare = models.InferenceDeployment.from_object(
        {"metadata": {"name": "x"}, "spec": {"model": {"name": "m"}}}
    )
    with pytest.raises(ValueError, match=r"metadata\.uid of 'x' is missing"):
        render.deployment(bare)


def test_engine_container_runs_the_rendered_vllm_args_on_the_pod_ip() -> None:
    cr = infd(engine={"image": "vllm/vllm-openai:v0.32.0", "port": 8100})
    engine = container(render.deployment(cr), "engine")
    assert engine["image"] == "vllm/vllm-openai:v0.32.0"
    assert engine["args"] == engine_args.render(cr.spec)
    assert "command" not in engine  # the image's entry point runs the server
    assert engine["env"] == [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    assert engine["ports"] == [{"name": "http", "containerPort": 8100, "protocol": "TCP"}]
    assert engine["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8100}
    assert engine["startupProbe"]["httpGet"] == {"path": "/health", "port": 8100}
    startup = engine["startupProbe"]
    # vLLM needs 60-90 s to start on a CPU: the startup probe allows several minutes.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert engine["lifecycle"] == {"preStop": {"sleep": {"seconds": render.PRE_STOP_SLEEP_SECONDS}}}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            {"gpusPerReplica": 2, "cpu": "4", "memory": "16Gi"},
            {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
        ),
        ({"gpusPerReplica": 0, "cpu": "500m", "memory": "2Gi"}, {"cpu": "500m", "memory": "2Gi"}),
    ],
)
def test_engine_resources_requests_equal_limits_and_gpus_only_when_asked(
    resources: dict[str, Any], expected: dict[str, str]
) -> None:
    spec: dict[str, Any] = {"resources": resources, "engine": {"blockSize": 32}}
    engine = container(render.deployment(infd(**spec)), "engine")
    assert engine["resources"] == {"requests": expected, "limits": expected}


def test_sidecar_reads_the_engine_on_the_pod_ip_and_listens_there() -> None:
    cr = infd(engine={"port": 8001}, sidecar={"port": 9191, "pollIntervalSeconds": 0.5})
    sidecar = container(render.deployment(cr), "sidecar")
    assert sidecar["image"] == models.DEFAULT_SIDECAR_IMAGE
    assert sidecar["args"] == [
        "sidecar",
        "--engine-url",
        "http://$(POD_IP):8001",
        "--listen",
        "$(POD_IP):9191",
        "--poll-interval",
        "0.5",
        "--model",
        cr.spec.model.served_name or cr.spec.model.name,
    ]
    assert [item["name"] for item in sidecar["env"]] == ["POD_IP", "POD_NAME", "POD_NAMESPACE"]
    assert [item["valueFrom"]["fieldRef"]["fieldPath"] for item in sidecar["env"]] == [
        "status.podIP",
        "metadata.name",
        "metadata.namespace",
    ]
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": 9191, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9191}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9191}
    assert set(sidecar["resources"]) == {"requests", "limits"}


def test_grace_period_gives_the_engine_its_full_drain_after_pre_stop() -> None:
    cr = infd(engine={"shutdownGraceSeconds": 90})
    pod = render.deployment(cr)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == (
        render.PRE_STOP_SLEEP_SECONDS + 90 + render.SHUTDOWN_MARGIN_SECONDS
    )
    args = container(render.deployment(cr), "engine")["args"]
    assert args[args.index("--shutdown-timeout") + 1] == "90"


def test_node_selector_and_tolerations_are_passed_to_the_pods() -> None:
    cr = infd(
        resources={
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "value": "yes", "tolerationSeconds": 30, "effect": "NoExecute"},
            ],
        }
    )
    pod = render.deployment(cr)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "spot",
            "operator": "Equal",
            "value": "yes",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
    ]


def test_no_node_selector_or_tolerations_when_none_are_asked_for() -> None:
    pod = render.deployment(infd())["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod


SHM = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def test_a_host_path_cache_is_mounted_read_only_as_hf_home_and_the_engine_runs_offline() -> None:
    cr = infd(model={"name": "org/model", "cache": {"hostPath": "/var/lib/kvscale/models"}})
    pod = render.deployment(cr)["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        SHM,
        {
            "name": "model-cache",
            "hostPath": {"path": "/var/lib/kvscale/models", "type": "Directory"},
        },
    ]
    engine = container(render.deployment(cr), render.ENGINE_CONTAINER)
    assert engine["volumeMounts"] == [
        SHM_MOUNT,
        {"name": "model-cache", "mountPath": "/var/cache/huggingface", "readOnly": True},
    ]
    assert engine["env"][1:] == [
        {"name": "HF_HOME", "value": "/var/cache/huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
    ]
    sidecar = container(render.deployment(cr), render.SIDECAR_CONTAINER)
    assert "volumeMounts" not in sidecar


def test_a_writable_claim_lets_the_engine_download_into_it() -> None:
    cache = {"persistentVolumeClaim": "llama-weights", "readOnly": False}
    cr = infd(model={"name": "org/model", "cache": cache})
    pod = render.deployment(cr)["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        SHM,
        {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": "llama-weights", "readOnly": False},
        },
    ]
    engine = container(render.deployment(cr), render.ENGINE_CONTAINER)
    assert engine["volumeMounts"][1]["readOnly"] is False
    assert {"name": "HF_HOME", "value": "/var/cache/huggingface"} in engine["env"]
    assert all(item["name"] != "HF_HUB_OFFLINE" for item in engine["env"])


def test_without_a_cache_the_engine_gets_only_its_shared_memory_volume() -> None:
    # vLLM's workers need more /dev/shm than containerd's 64 MiB: every engine gets a
    # memory-backed one (found on the real kubelet, where vLLM refused to start without it).
    pod = render.deployment(infd())["spec"]["template"]["spec"]
    assert pod["volumes"] == [SHM]
    engine = container(render.deployment(infd()), render.ENGINE_CONTAINER)
    assert engine["volumeMounts"] == [SHM_MOUNT]
    assert [item["name"] for item in engine["env"]] == ["POD_IP"]
    sidecar = container(render.deployment(infd()), render.SIDECAR_CONTAINER)
    assert "volumeMounts" not in sidecar


def test_pod_annotations_carry_a_spec_hash_and_prometheus_hints() -> None:
    annotations = render.deployment(infd())["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    assert len(annotations[render.SPEC_HASH_ANNOTATION]) == 16


def spec_hash(cr: models.InferenceDeployment) -> str:
    annotations = render.deployment(cr)["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations[render.SPEC_HASH_ANNOTATION]
    return value


@pytest.mark.parametrize(
    "change",
    [
        {"engine": {"maxNumSeqs": 64}},
        {"engine": {"extraArgs": ["--enforce-eager"]}},
        {"resources": {"memory": "16Gi"}},
        {"sidecar": {"image": "ghcr.io/kvscale/kvscale:0.2.0"}},
        {"model": {"name": "org/model", "cache": {"persistentVolumeClaim": "weights"}}},
    ],
)
def test_spec_hash_changes_with_the_pod_template(change: dict[str, Any]) -> None:
    assert spec_hash(infd(**change)) != spec_hash(infd())


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 4},
        {"scaling": {"minReplicas": 2, "maxReplicas": 8, "targetOccupancy": 0.5}},
    ],
)
def test_spec_hash_ignores_what_is_not_in_the_pod(change: dict[str, Any]) -> None:
    assert spec_hash(infd(**change)) == spec_hash(infd())


def test_rendering_is_deterministic() -> None:
    assert render.manifests(infd()) == render.manifests(infd())


def test_rollout_never_lowers_serving_capacity() -> None:
    strategy = render.deployment(infd())["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


@pytest.mark.parametrize(
    ("poll", "windows"),
    [
        (0.25, []),  # the default: the sidecar's own windows hold 20 and 60 polls
        (2.5, []),  # 5 s still holds two polls
        (3.0, ["--rate-window", "12"]),
        (10.0, ["--rate-window", "40", "--throughput-window", "40"]),
        (60.0, ["--rate-window", "240", "--throughput-window", "240"]),
    ],
)
def test_a_slow_poll_gets_rate_windows_the_sidecar_accepts(poll: float, windows: list[str]) -> None:
    cr = infd(sidecar={"pollIntervalSeconds": poll})
    args = container(render.deployment(cr), "sidecar")["args"]
    at = args.index("--poll-interval") + 2
    assert args[at : at + len(windows)] == windows
    assert args[at + len(windows)] == "--model"
    # The sidecar's own parser takes the rendered arguments (its cross-checks included).
    parser = argparse.ArgumentParser()
    sidecar_settings.add_arguments(parser)
    parsed = parser.parse_args(args[1:])
    made = sidecar_settings.from_args(parsed, env={"POD_NAME": "p"}, hostname="h")
    assert made.rate_window >= 2 * made.poll_interval
    assert made.throughput_window >= 2 * made.poll_interval


def test_the_operator_knows_the_sidecar_window_defaults() -> None:
    assert render.SIDECAR_RATE_WINDOW_SECONDS == sidecar_settings.DEFAULT_RATE_WINDOW
    assert render.SIDECAR_THROUGHPUT_WINDOW_SECONDS == sidecar_settings.DEFAULT_THROUGHPUT_WINDOW
