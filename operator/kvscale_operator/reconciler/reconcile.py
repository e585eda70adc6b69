"""One reconcile pass for one InferenceDeployment, and the repair of drifted objects. Does I/O.

Free of kopf: it talks to the API through `Api` (which `kube.Kube` implements) and reports
through `Events`, so the handlers stay a thin shell and the flow is tested with fakes.

A pass: parse the spec (invalid -> a condition and an event, nothing applied); check what the
engine cannot run (-> Ready=False/EngineConfigInvalid, nothing applied, the running Deployment
left as it is); server-side apply the Deployment, Service and PDB; when the Deployment was
just created, set its first replica count (`replicas.initial`) through its scale
subresource; write the status. The count of an existing Deployment is the autoscale loop's
alone (`autoscale`). Every step is idempotent, so a resumed or repeated pass changes nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pydantic

from kvscale import problem
from kvscale.api import models
from kvscale_operator import kube
from kvscale_operator.reconciler import conditions, render, replicas, status

Clock = Callable[[], datetime.datetime]


class Events(Protocol):
    """Kubernetes Events about one InferenceDeployment."""

    def info(self, reason: str, message: str) -> None: ...

    def warn(self, reason: str, message: str) -> None: ...


class Api(Protocol):
    """The API calls a reconcile pass makes (implemented by `kube.Kube`)."""

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    async def apply(
        self, manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> kube.Applied: ...

    async def replace_spec(self, manifest: Mapping[str, Any]) -> None: ...

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None: ...

    async def get_inference_deployment(
        self, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    async def list_pods(
        self, namespace: str, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]: ...

    async def update_status(
        self, namespace: str, name: str, mutate: kube.StatusMutation
    ) -> dict[str, Any] | None: ...


def parse(body: Mapping[str, Any]) -> tuple[models.InferenceDeployment | None, str | None]:
    """The typed object, or None and what is wrong with it (naming the field)."""
    try:
        return models.InferenceDeployment.from_object(dict(body)), None
    except pydantic.ValidationError as error:
        # In the CR's own terms: "spec.engine.blockSize: <what is wrong>".
        return None, problem.describe(error, whole=models.KIND)


def _meta(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller (the owner reference with controller: true)."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return str(owner.get("uid"))
    return None


def foreign_controller(obj: Mapping[str, Any] | None, uid: str | None) -> str | None:
    """Why the operator must not take `obj` over (another controller has it), or None."""
    if obj is None:
        return None
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller") and owner.get("uid") != uid:
            name = (obj.get("metadata") or {}).get("name")
            return (
                f"{obj.get('kind', 'object')} {name} already exists and is controlled by "
                f"{owner.get('kind')} {owner.get('name')}; delete it or rename this "
                "InferenceDeployment"
            )
    return None


def _replica_count(obj: Mapping[str, Any] | None) -> int | None:
    value = ((obj or {}).get("spec") or {}).get("replicas")
    return int(value) if value is not None else None


def _last_desired(body: Mapping[str, Any]) -> int | None:
    value = (body.get("status") or {}).get("desiredReplicas")
    return int(value) if isinstance(value, int) else None


async def converge(
    api: Api, manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> kube.Applied:
    """Server-side apply, and when that leaves the object unlike the manifest (or invalid),
    replace the spec's lists whole and apply again to own the fields."""
    try:
        applied = await api.apply(manifest, previous)
    except kube.ApiError as error:
        if not kube.is_invalid(error) or previous is None:
            raise
    else:
        if not render.differences(manifest, applied.obj):
            return applied
    await api.replace_spec(manifest)
    return await api.apply(manifest, previous)


async def reconcile(api: Api, body: Mapping[str, Any], events: Events, now: Clock) -> list[str]:
    """One pass over the InferenceDeployment `body`; returns a line per object it changed."""
    namespace, name = _meta(body)
    infd, error = parse(body)
    if infd is None:
        events.warn("InvalidSpec", error or "the spec does not parse")
        await refresh_status(api, namespace, name, now)
        return []
    problems = render.problems(infd)
    if problems:
        events.warn("EngineConfigInvalid", "; ".join(problems))
        await refresh_status(api, namespace, name, now)
        return []

    changed: list[str] = []
    refused: list[str] = []
    deployment: dict[str, Any] | None = None
    deployment_created = False
    for manifest in render.manifests(infd):
        kind = manifest["kind"]
        previous = await api.get(manifest["apiVersion"], kind, namespace, name)
        refusal = foreign_controller(previous, infd.metadata.uid)
        if refusal is not None:
            events.warn("ResourceConflict", refusal)
            continue
        try:
            applied = await converge(api, manifest, previous)
        except kube.ApiError as error:
            if not kube.is_refused(error):
                raise
            # The API server validates what the CRD cannot say (a toleration with an empty key
            # needs operator Exists, a node selector's key must be a label key; a key of
            # 60,000 characters it cannot even read in an apply patch, a 400): the spec passed
            # admission but the object rendered from it does not. Retrying cannot help until
            # the spec changes, which reconciles again; say so where the user looks.
            refusal = f"the API server refused {kind} {name}: {error.status.message}"
            events.warn("EngineConfigInvalid", refusal)
            refused.append(refusal)
            continue
        if applied.created:
            changed.append(f"created {kind} {name}")
            events.info("Created", f"created {kind} {name}")
        elif applied.changed:
            changed.append(f"updated {kind} {name}")
            events.info("Updated", f"updated {kind} {name}")
        if kind == "Deployment":
            deployment, deployment_created = applied.obj, applied.created

    if deployment is not None and deployment_created:
        wanted = replicas.initial(infd.spec, _last_desired(body))
        if wanted is not None and wanted != _replica_count(deployment):
            await api.scale_deployment(namespace, name, wanted)
            changed.append(f"scaled Deployment {name} to {wanted}")
            events.info("Scaled", f"set Deployment {name} to {wanted} replicas")
    await refresh_status(api, namespace, name, now, refused=tuple(refused))
    return changed


async def refresh_status(
    api: Api, namespace: str, name: str, now: Clock, refused: tuple[str, ...] = ()
) -> None:
    """Recomputes the reconciler's status fields from the Deployment and pods; writes only
    when something changed. `refused`: what the API server refused in this reconcile pass,
    reported as problems of the engine config (a later pass without it recomputes them)."""
    deployment = await api.get("apps/v1", "Deployment", namespace, name)
    pods = await api.list_pods(namespace, render.selector_labels(name))

    def mutate(obj: dict[str, Any]) -> Mapping[str, Any] | None:
        infd, error = parse(obj)
        uid = (obj.get("metadata") or {}).get("uid")
        conflict = foreign_controller(deployment, uid)
        ours = deployment if conflict is None else None
        problems = tuple(render.problems(infd)) if infd is not None else ()
        if conflict is not None:
            problems = (conflict, *problems)
        problems = (*problems, *refused)
        inputs = conditions.Inputs(
            generation=(obj.get("metadata") or {}).get("generation"),
            spec_error=error,
            engine_problems=problems,
            deployment=conditions.deployment_view(ours) if ours is not None else None,
            pods=tuple(conditions.pod_view(pod) for pod in pods) if ours is not None else (),
        )
        previous = obj.get("status") or {}
        return status.changes(previous, status.compute(previous, name, inputs, now()))

    await api.update_status(namespace, name, mutate)


async def repair(
    api: Api,
    live: Mapping[str, Any],
    deleted: bool,
    events_for: Callable[[Mapping[str, Any]], Events],
    now: Clock,
) -> list[str]:
    """Puts back an object the operator owns after someone deleted or edited it.

    `live` is the object from a watch event (its last state when `deleted`). Objects whose
    InferenceDeployment is gone or going, or that belong to an earlier object of the same
    name, are left to the garbage collector. Returns a line per correction made.
    """
    metadata = live.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    owner = (metadata.get("labels") or {}).get(render.OWNER_LABEL)
    kind = str(live.get("kind") or "")
    if not owner:
        return []
    body = await api.get_inference_deployment(namespace, owner)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return []
    uid = (body.get("metadata") or {}).get("uid")
    if controller_uid(live) not in (uid, None):
        return []
    infd, _ = parse(body)
    if infd is None or render.problems(infd):
        return []  # the CR's own pass reports it; repairing would roll out a bad spec
    desired = render.manifest_for(infd, kind)
    if desired is None or desired["metadata"]["name"] != metadata.get("name"):
        return []

    events = events_for(body)
    fixed: list[str] = []
    if deleted:
        current = await api.get(desired["apiVersion"], kind, namespace, owner)
        if current is None:
            applied = await api.apply(desired, None)
            fixed.append(f"recreated {kind} {owner}")
            events.warn("DriftCorrected", f"{kind} {owner} was deleted; recreated it")
            if kind == "Deployment":
                wanted = replicas.initial(infd.spec, _last_desired(body))
                if wanted is not None and wanted != _replica_count(applied.obj):
                    await api.scale_deployment(namespace, owner, wanted)
    elif render.differences(desired, live):
        # Watch events lag behind: what drifted in this event may be fixed already (by an
        # earlier event's repair), so look again before applying and before telling anyone.
        current = await api.get(desired["apiVersion"], kind, namespace, owner)
        drifted = render.differences(desired, current) if current is not None else []
        if current is not None and drifted:
            applied = await converge(api, desired, current)
            if applied.changed:
                shown = ", ".join(drifted[:5]) + (" ..." if len(drifted) > 5 else "")
                fixed.append(f"restored {kind} {owner}: {shown}")
                events.warn("DriftCorrected", f"restored {shown} of {kind} {owner}")
    if kind == "Deployment":
        await refresh_status(api, namespace, owner, now)
    return fixed
