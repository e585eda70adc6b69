"""The part of an InferenceDeployment's status the reconciler writes. Pure.

Ownership of status fields (both writers go through the status subresource with a
read-modify-write guarded by resourceVersion, so neither loses the other's update, and each
field and condition type has exactly one writer):
- the reconciler: observedGeneration, replicas, readyReplicas, selector and the conditions
  listed in `conditions.OWNED_TYPES` (Ready);
- the autoscale loop: desiredReplicas, occupancy, lastScaleTime, scalingHistory and the
  conditions in `outcome.OWNED_TYPES` (ScalingActive, ScalingLimited, MetricsAvailable).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from kvscale_operator.reconciler import conditions, render

OWNED_FIELDS = (
    "observedGeneration",
    "replicas",
    "readyReplicas",
    "selector",
    "conditions",
)


def compute(
    previous: Mapping[str, Any],
    name: str,
    inputs: conditions.Inputs,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The reconciler's fields as they should be now; fields it cannot know are left out."""
    merged = conditions.merge(
        conditions.parse_all(previous.get("conditions")), conditions.evaluate(inputs), now
    )
    deployment = inputs.deployment
    fields: dict[str, Any] = {
        "observedGeneration": inputs.generation,
        "replicas": deployment.replicas if deployment else 0,
        "readyReplicas": deployment.ready_replicas if deployment else 0,
        # The scale subresource's labelSelectorPath: `kubectl scale` and an HPA read it.
        "selector": render.selector(name),
        "conditions": conditions.dump_all(merged),
    }
    return {key: value for key, value in fields.items() if value is not None}


def changes(previous: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields whose value differs from `previous`: a merge patch, empty when in sync."""
    return {key: value for key, value in fields.items() if previous.get(key) != value}
