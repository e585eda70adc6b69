"""InferenceDeployment -> Deployment, Service and PodDisruptionBudget manifests. Pure.

The manifests are plain dicts in the shape server-side apply takes: exactly the fields the
operator owns, nothing the API server defaults or another controller sets. In particular the
Deployment has no `spec.replicas`: the replica count belongs to another field manager (see
`replicas`), so an apply never resets it.

`differences` compares a rendered manifest with a live object, so drift is noticed without
applying on every watch event.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from kvscale.api import models
from kvscale_operator.reconciler import engine_args

ENGINE_CONTAINER = "engine"
SIDECAR_CONTAINER = "sidecar"
SPEC_HASH_ANNOTATION = "kvscale.dev/spec-hash"
OWNER_LABEL = "kvscale.dev/inference-deployment"
MANAGED_BY = ("app.kubernetes.io/managed-by", "kvscale")

# Seconds a terminating engine pod keeps serving before it is sent SIGTERM: long enough for the
# endpoints controller and load balancers to stop sending it new requests.
PRE_STOP_SLEEP_SECONDS = 5
# After the engine's own drain (`--shutdown-timeout`), time to free the device and exit before
# the kubelet's SIGKILL.
SHUTDOWN_MARGIN_SECONDS = 5
# vLLM needs 60-90 s to start on a CPU and longer to load large weights on a GPU: allow 10 min.
STARTUP_PERIOD_SECONDS = 5
STARTUP_FAILURE_THRESHOLD = 120

# The sidecar reads one small text endpoint a few times a second; these bounds are explicit so
# it never competes with the engine for CPU or memory.
SIDECAR_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "250m", "memory": "256Mi"},
}

_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL_VALUE = 63

Manifest = dict[str, Any]


def labels(name: str) -> dict[str, str]:
    """Labels on everything the operator makes for the InferenceDeployment `name`."""
    return {
        "app.kubernetes.io/name": "kvscale-engine",
        "app.kubernetes.io/instance": name,
        MANAGED_BY[0]: MANAGED_BY[1],
        OWNER_LABEL: name,
    }


def selector_labels(name: str) -> dict[str, str]:
    """The engine pods' selector: one label, so other labels can change without a new selector."""
    return {OWNER_LABEL: name}


def selector(name: str) -> str:
    """The selector as a string, as the scale subresource's labelSelectorPath wants it."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(name).items())


def owner_reference(infd: models.InferenceDeployment) -> dict[str, Any]:
    """Makes the object garbage-collected with the CR and marks the CR as its controller."""
    if not infd.metadata.uid:
        raise ValueError(f"metadata.uid of {infd.metadata.name!r} is missing: read the object back")
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "name": infd.metadata.name,
        "uid": infd.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(infd: models.InferenceDeployment) -> dict[str, Any]:
    return {
        "name": infd.metadata.name,
        "namespace": infd.metadata.namespace,
        "labels": labels(infd.metadata.name),
        "ownerReferences": [owner_reference(infd)],
    }


def problems(infd: models.InferenceDeployment) -> list[str]:
    """What stops the manifests from being applied or the engine from starting."""
    found: list[str] = []
    name = infd.metadata.name
    if len(name) > _MAX_LABEL_VALUE or not _DNS_1035_LABEL.match(name):
        found.append(
            f"metadata.name {name!r} cannot name the engine Service and label its pods: it must "
            "be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at "
            f"most {_MAX_LABEL_VALUE} characters)"
        )
    if infd.spec.engine.port == infd.spec.sidecar.port:
        found.append(
            f"spec.engine.port and spec.sidecar.port are both {infd.spec.engine.port}: the two "
            "containers share the pod's network and need different ports"
        )
    return found + engine_args.problems(infd.spec)


def _http_probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _downward(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


MODEL_CACHE_VOLUME = "model-cache"
SHM_VOLUME = "dshm"
# vLLM's workers talk through shared-memory ring buffers: 160 MiB for one CPU worker with
# vLLM 0.32, more with tensor parallelism, where containerd gives a container a 64 MiB /dev/shm
# and vLLM refuses to start ("Insufficient space in /dev/shm"). A memory-backed emptyDir, as
# vLLM's Kubernetes guide has it; what it holds counts against the engine's memory limit, and
# only what is used.
SHM_SIZE_LIMIT = "2Gi"


def _model_cache_volume(cache: models.ModelCache) -> dict[str, Any]:
    if cache.host_path is not None:
        # Directory, not DirectoryOrCreate: a missing cache is the user's mistake to see in
        # the pod's events, not an empty directory the engine then fails to find a model in.
        return {
            "name": MODEL_CACHE_VOLUME,
            "hostPath": {"path": cache.host_path, "type": "Directory"},
        }
    return {
        "name": MODEL_CACHE_VOLUME,
        "persistentVolumeClaim": {
            "claimName": cache.persistent_volume_claim,
            "readOnly": cache.read_only,
        },
    }


def _model_cache_env(cache: models.ModelCache) -> list[dict[str, Any]]:
    env = [{"name": "HF_HOME", "value": models.MODEL_CACHE_MOUNT_PATH}]
    if cache.read_only:
        # A read-only cache cannot take a download: the engine serves what it holds and fails
        # at once, naming the missing file, instead of trying the network first.
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    return env


def _engine_container(spec: models.InferenceDeploymentSpec) -> dict[str, Any]:
    resources = spec.resources
    amounts: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpus_per_replica > 0:
        amounts["nvidia.com/gpu"] = str(resources.gpus_per_replica)
    container: dict[str, Any] = {
        "name": ENGINE_CONTAINER,
        "image": spec.engine.image,
        "args": engine_args.render(spec),
        "env": [_downward("POD_IP", "status.podIP")],
        "ports": [{"name": "http", "containerPort": spec.engine.port, "protocol": "TCP"}],
        # Requests equal limits: an engine sized for its KV cache must not be overcommitted.
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "startupProbe": _http_probe(
            "/health", spec.engine.port, STARTUP_PERIOD_SECONDS, STARTUP_FAILURE_THRESHOLD
        ),
        "readinessProbe": _http_probe("/health", spec.engine.port, 5, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
    }
    cache = spec.model.cache
    if cache is not None:
        container["env"] += _model_cache_env(cache)
        container["volumeMounts"].append(
            {
                "name": MODEL_CACHE_VOLUME,
                "mountPath": models.MODEL_CACHE_MOUNT_PATH,
                "readOnly": cache.read_only,
            }
        )
    return container


# The sidecar's defaults for its rate windows (`kvscale sidecar --rate-window` and
# `--throughput-window`; a unit test keeps these equal to kvscale_sidecar.settings). A window
# must hold at least two polls, so a slow poll interval needs longer windows: they are
# rendered only then, so the common pod template does not change.
SIDECAR_RATE_WINDOW_SECONDS = 5.0
SIDECAR_THROUGHPUT_WINDOW_SECONDS = 15.0
POLLS_PER_WINDOW = 4


def _window_args(poll_interval: float) -> list[str]:
    """--rate-window / --throughput-window when the defaults hold fewer than two polls."""
    args = []
    needed = POLLS_PER_WINDOW * poll_interval
    for flag, default in (
        ("--rate-window", SIDECAR_RATE_WINDOW_SECONDS),
        ("--throughput-window", SIDECAR_THROUGHPUT_WINDOW_SECONDS),
    ):
        if default < 2 * poll_interval:
            args += [flag, engine_args.flag_number(needed)]
    return args


def _sidecar_container(spec: models.InferenceDeploymentSpec) -> dict[str, Any]:
    sidecar = spec.sidecar
    return {
        "name": SIDECAR_CONTAINER,
        "image": sidecar.image,
        "args": [
            "sidecar",
            "--engine-url",
            f"http://{engine_args.POD_IP}:{spec.engine.port}",
            "--listen",
            f"{engine_args.POD_IP}:{sidecar.port}",
            "--poll-interval",
            engine_args.flag_number(sidecar.poll_interval_seconds),
            *_window_args(sidecar.poll_interval_seconds),
            "--model",
            spec.model.served_name or spec.model.name,
        ],
        "env": [
            _downward("POD_IP", "status.podIP"),
            _downward("POD_NAME", "metadata.name"),
            _downward("POD_NAMESPACE", "metadata.namespace"),
        ],
        "ports": [{"name": "metrics", "containerPort": sidecar.port, "protocol": "TCP"}],
        "resources": {key: dict(value) for key, value in SIDECAR_RESOURCES.items()},
        # Ready only while the engine it watches reports ok, so a pod whose occupancy cannot
        # be read takes no traffic; alive as long as its own poll loop runs.
        "readinessProbe": _http_probe("/readyz", sidecar.port, 5, 3),
        "livenessProbe": _http_probe("/healthz", sidecar.port, 10, 3),
    }


def spec_hash(template: Mapping[str, Any]) -> str:
    """A short, stable digest of a pod template (keys sorted, so dict order does not matter)."""
    encoded = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def pod_template(infd: models.InferenceDeployment) -> dict[str, Any]:
    """Engine and sidecar in one pod, annotated with the hash of everything else in it."""
    spec = infd.spec
    pod_spec: dict[str, Any] = {
        "containers": [_engine_container(spec), _sidecar_container(spec)],
        # The grace period covers the preStop sleep, then the engine's drain of in-flight
        # requests (--shutdown-timeout = shutdownGraceSeconds), then its exit.
        "terminationGracePeriodSeconds": PRE_STOP_SLEEP_SECONDS
        + spec.engine.shutdown_grace_seconds
        + SHUTDOWN_MARGIN_SECONDS,
        # Service links put an env var per Service into every engine: noise, and a risk of
        # clashing with vLLM's own VLLM_* variables.
        "enableServiceLinks": False,
        "volumes": [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE_LIMIT}}
        ],
    }
    if spec.model.cache is not None:
        pod_spec["volumes"].append(_model_cache_volume(spec.model.cache))
    if spec.resources.node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod_spec["tolerations"] = [
            toleration.model_dump(by_alias=True, exclude_none=True)
            for toleration in spec.resources.tolerations
        ]
    template: dict[str, Any] = {
        "metadata": {
            "labels": labels(infd.metadata.name),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.sidecar.port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }
    template["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(template)
    return template


def deployment(infd: models.InferenceDeployment) -> Manifest:
    """The engine Deployment, without spec.replicas (owned by the scale field manager)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(infd),
        "spec": {
            "selector": {"matchLabels": selector_labels(infd.metadata.name)},
            # Roll one new pod in before an old one goes: serving capacity never dips during a
            # rollout. The price is one spare replica's worth of GPUs; when none is free the
            # new pod stays Pending and the ScalingLimited condition says so.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            "template": pod_template(infd),
        },
    }


def service(infd: models.InferenceDeployment) -> Manifest:
    """A ClusterIP Service for the engines' API and the sidecars' metrics."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(infd),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(infd.metadata.name),
            "ports": [
                {
                    "name": "http",
                    "port": infd.spec.engine.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                {
                    "name": "metrics",
                    "port": infd.spec.sidecar.port,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def pod_disruption_budget(infd: models.InferenceDeployment) -> Manifest:
    """At most one engine pod down to voluntary disruptions (drains) at a time.

    maxUnavailable rather than a minAvailable derived from the replica count: the count is
    the autoscaler's and changes all the time, and minAvailable = replicas would block every
    drain of a one-replica deployment forever. One at a time keeps drains moving and never
    takes more than one replica's KV capacity away at once. Pods that are not ready serve
    nothing, so they may always be evicted (otherwise a crash-looping pod blocks drains).
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(infd),
        "spec": {
            "selector": {"matchLabels": selector_labels(infd.metadata.name)},
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def manifests(infd: models.InferenceDeployment) -> list[Manifest]:
    """Everything the operator applies for one InferenceDeployment, in apply order."""
    return [deployment(infd), service(infd), pod_disruption_budget(infd)]


def manifest_for(infd: models.InferenceDeployment, kind: str) -> Manifest | None:
    """The rendered manifest of one kind ("Deployment", "Service", "PodDisruptionBudget")."""
    for manifest in manifests(infd):
        if manifest["kind"] == kind:
            return manifest
    return None


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where `live` does not hold what `desired` says; fields only `live` has are fine.

    Lists must match element by element (containers, ports and args are ordered). Numbers and
    their string forms are not reconciled: a quantity the API server rewrites ("0.5" ->
    "500m") shows up as a difference, which costs one no-op apply, never a wrong answer.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            child = f"{path}.{key}"
            if key not in live:
                found.append(child)
            else:
                found += differences(value, live[key], child)
        return found
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found += differences(want, have, f"{path}[{index}]")
        return found
    return [] if desired == live else [path]
