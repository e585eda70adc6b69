"""How many engine replicas the reconciler asks for. Pure.

The Deployment's `spec.replicas` is never part of the rendered manifest: it is set through
the scale subresource under its own field manager (`kvscale-autoscaler`), the one the
autoscaler uses too, so the reconciler's server-side applies never reset it. Until the
autoscaler runs, this is the whole policy; once it runs, it changes the Deployment's count
and the reconciler keeps whatever it finds (second rule below).
"""

from __future__ import annotations

from kvscale.api import models


def desired(
    spec: models.InferenceDeploymentSpec,
    current: int | None,
    last_desired: int | None,
) -> int:
    """The replica count for the engine Deployment.

    1. `spec.replicas` when set (`kubectl scale infd NAME --replicas N`): a person asked for
       exactly this number, so it is not clamped.
    2. Otherwise the count the Deployment has (`current`; None when it was just created),
       kept inside [minReplicas, maxReplicas] so changed bounds take effect.
    3. A Deployment that had to be recreated (deleted by someone) gets back the count last
       written to status.desiredReplicas, and a new one starts at minReplicas.
    """
    if spec.replicas is not None:
        return spec.replicas
    low, high = spec.scaling.min_replicas, spec.scaling.max_replicas
    base = current if current is not None else last_desired
    if base is None:
        return low
    return max(low, min(high, base))
