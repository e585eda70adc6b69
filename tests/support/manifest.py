"""InferenceDeployments as `kubectl apply` takes them, built in one place. Pure.

Integration tests apply CRs to a real API server; they all want the same envelope, most want
a spec whose pods run but never become ready (no GPU, no vLLM), and the autoscaling stories want
the same scaling block. Each spec is parsed by the models before it
is returned, so a typo in a test fails there, naming the field, not minutes later at admission.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kvscale.api import models
from kvscale.localstack import node

TINY_MODEL = "kvscale/tiny-llama"

# The engine runs the node's webecho image, which serves on 8080, not on the engine port the
# probes ask; the sidecar is the CRD's default image.
_NEVER_READY_SPEC: dict[str, Any] = {
    "model": {"name": TINY_MODEL},
    "engine": {"image": node.TEST_IMAGE, "blockSize": 32, "shutdownGraceSeconds": 1},
    "sidecar": {"image": models.DEFAULT_SIDECAR_IMAGE},
    "resources": {"gpusPerReplica": 0, "cpu": "100m", "memory": "128Mi"},
}


def inference_deployment(
    name: str, spec: Mapping[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    """The whole object: apiVersion, kind, metadata (namespace only when given), the spec."""
    models.InferenceDeploymentSpec.model_validate(spec)
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": metadata,
        "spec": copy.deepcopy(dict(spec)),
    }


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` over a deep copy of `base`: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def never_ready_spec(**parts: Any) -> dict[str, Any]:
    """A spec whose pods the real node schedules and runs but which never become ready (the
    engine does not listen where its probes ask), with `parts` merged over it, e.g.
    `scaling={"maxReplicas": 4}`."""
    return merge(_NEVER_READY_SPEC, parts)


def autoscaling(stable_s: float, delay_s: float) -> dict[str, Any]:
    """The autoscaling stories' scaling: 1 to 3 replicas, a 4 s panic window, 1 s ticks, and
    short stable windows and scale-down delays so a story plays out in minutes."""
    return {
        "minReplicas": 1,
        "maxReplicas": 3,
        "stableWindowSeconds": stable_s,
        "panicWindowSeconds": 4,
        "scaleDownDelaySeconds": delay_s,
        "tickSeconds": 1,
    }
