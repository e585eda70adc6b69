"""The replica count a new engine Deployment starts with. Pure.

One writer owns the Deployment's `spec.replicas` once it exists: the autoscale loop
(`kvscale_operator.autoscaler.autoscale`), which follows occupancy within [minReplicas,
maxReplicas], or
holds exactly `spec.replicas` while a person has set it (`kubectl scale infd`). The reconciler
writes the count only when it creates (or re-creates) the Deployment, with `initial` below,
so the two never write it over each other. In advisory mode (`spec.scaling.mode: Advisory`)
neither writes it: the count is the HPA's, KEDA's or a person's.

The count is never part of the rendered manifest: it is set by its own patch under its own
field manager (`kvscale-autoscaler`, `kube.Kube.scale_deployment`), so the reconciler's
server-side applies never reset it.
"""

from __future__ import annotations

from kvscale.api import models


def initial(spec: models.InferenceDeploymentSpec, last_desired: int | None) -> int | None:
    """The replica count for a Deployment the reconciler has just created; None: leave it.

    0. None in advisory mode (`spec.scaling.mode: Advisory`): the count belongs to whoever
       scales the Deployment (an HPA, KEDA, a person); kvscale never writes it, so it does not
       claim the field either (a new Deployment starts at Kubernetes' default, 1).
    1. `spec.replicas` when set: a person asked for exactly this number, so it is not clamped.
    2. A Deployment that had to be re-created (someone deleted it) gets back the count last
       written to status.desiredReplicas, inside the current bounds.
    3. Otherwise minReplicas, and at least 1: the autoscaler never keeps fewer than one
       pod (without a pod, no report could ask it to scale up again).
    """
    if spec.scaling.mode is models.ScalingMode.ADVISORY:
        return None
    if spec.replicas is not None:
        return spec.replicas
    low = max(1, spec.scaling.min_replicas)
    high = max(low, spec.scaling.max_replicas)
    if last_desired is None:
        return low
    return max(low, min(high, last_desired))
