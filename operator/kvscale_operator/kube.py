"""A thin async wrapper over lightkube for what the operator reads and writes. Does I/O.

Everything comes back as plain dicts, as the API server sends them, so the pure modules
never see a client type. Writes that can meet a 409 Conflict (a concurrent writer between
our read and our write) are retried after short backoffs, re-reading each time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import lightkube
import msgspec
from lightkube import AsyncClient, generic_resource
from lightkube.resources import apps_v1, core_v1, policy_v1
from lightkube.types import PatchType

from kvscale.api import models
from kvscale_operator import config

# Re-exported so that callers catch API errors without importing lightkube themselves.
ApiError = lightkube.ApiError

InferenceDeploymentResource = generic_resource.create_namespaced_resource(
    models.GROUP, models.VERSION, models.KIND, models.PLURAL
)

# The kinds the operator renders, by (apiVersion, kind).
RESOURCES: dict[tuple[str, str], Any] = {
    ("apps/v1", "Deployment"): apps_v1.Deployment,
    ("v1", "Service"): core_v1.Service,
    ("policy/v1", "PodDisruptionBudget"): policy_v1.PodDisruptionBudget,
}

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
StatusMutation = Callable[[dict[str, Any]], Mapping[str, Any] | None]


def is_conflict(error: BaseException) -> bool:
    """A 409 from the API server: someone else wrote first, or apply lost field ownership."""
    return isinstance(error, ApiError) and getattr(error.status, "code", None) == 409


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ApiError) and getattr(error.status, "code", None) == 404


def is_invalid(error: BaseException) -> bool:
    """A 422: the object the write would produce does not validate."""
    return isinstance(error, ApiError) and getattr(error.status, "code", None) == 422


def is_refused(error: BaseException) -> bool:
    """A 422, or a 400: the API server will not take this write as it is, however often it is
    sent (a 400 when it cannot read the body: a map key over YAML's 1,024 characters for an
    implicit key, in an apply patch)."""
    return isinstance(error, ApiError) and getattr(error.status, "code", None) in (400, 422)


def is_forbidden(error: BaseException) -> bool:
    """A 403: no permission, or the namespace is being deleted. Retrying soon will not help."""
    return isinstance(error, ApiError) and getattr(error.status, "code", None) == 403


async def retry_on_conflict(
    attempt: Callable[[], Awaitable[T]],
    backoffs: Sequence[float],
    *,
    sleep: Sleep = asyncio.sleep,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Runs `attempt` until it does not raise a conflict; after the last backoff, raises it.

    `attempt` must read what it needs afresh each time: a retry with the stale object would
    only conflict again.
    """
    for delay in backoffs:
        try:
            return await attempt()
        except ApiError as error:
            if not is_conflict(error):
                raise
            if on_retry is not None:
                on_retry()
            await sleep(delay)
    return await attempt()


def _plain(obj: Any) -> dict[str, Any]:
    result: dict[str, Any] = obj.to_dict()
    return result


@dataclasses.dataclass(frozen=True)
class Applied:
    """The outcome of one server-side apply."""

    obj: dict[str, Any]  # the object as the API server returned it
    created: bool  # it did not exist before
    changed: bool  # its resourceVersion moved (a no-op apply leaves it alone)


# Characters YAML does not take raw in a scalar, though JSON does: DEL and the C1 controls
# ("non-printable" to YAML 1.2), NEL and the Unicode line and paragraph separators (line breaks
# to YAML 1.1, which would fold them into spaces), the byte-order mark, U+FFFE and U+FFFF.
_NOT_RAW_IN_YAML = re.compile(r"[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def apply_body(manifest: Mapping[str, Any]) -> msgspec.Raw:
    """The body of a server-side apply: JSON, which is YAML, with every character YAML does not
    take raw written as a \\u escape.

    The API server reads an apply patch as YAML (application/apply-patch+yaml), and lightkube
    writes it as JSON with non-ASCII characters raw, which YAML refuses for the characters
    above: a spec with a C1 control character in a toleration key was admitted, and every
    apply of its Deployment failed with a 400, "yaml: control characters are not allowed"
    (chaos scenario 9). A pre-encoded body (msgspec.Raw, lightkube's own encoder) keeps the
    escapes.
    """
    text = json.dumps(dict(manifest), ensure_ascii=False, separators=(",", ":"))
    escaped = _NOT_RAW_IN_YAML.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
    return msgspec.Raw(escaped.encode())


class Kube:
    """The operator's API calls, with its field managers and conflict retries built in."""

    def __init__(
        self,
        client: AsyncClient,
        settings: config.Settings,
        *,
        sleep: Sleep = asyncio.sleep,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._sleep = sleep
        self._on_conflict = on_conflict

    async def _retry(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await retry_on_conflict(
            attempt, self._settings.conflict_backoffs, sleep=self._sleep, on_retry=self._on_conflict
        )

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """One of the rendered kinds, or None when it does not exist."""
        try:
            found = await self._client.get(
                RESOURCES[(api_version, kind)], name, namespace=namespace
            )
        except ApiError as error:
            if is_not_found(error):
                return None
            raise
        return _plain(found)

    async def apply(
        self, manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> Applied:
        """Server-side apply under the operator's field manager, taking over fields (force).

        `previous` is the object as read before (None: absent); it only tells created and
        changed apart from a no-op.
        """
        resource = RESOURCES[(manifest["apiVersion"], manifest["kind"])]
        metadata = manifest["metadata"]

        async def attempt() -> Any:
            return await self._client.patch(
                resource,
                metadata["name"],
                apply_body(manifest),  # lightkube sends a pre-encoded body as it is
                namespace=metadata["namespace"],
                patch_type=PatchType.APPLY,
                field_manager=self._settings.field_manager,
                force=True,
            )

        obj = _plain(await self._retry(attempt))
        before = (previous or {}).get("metadata", {}).get("resourceVersion")
        after = obj.get("metadata", {}).get("resourceVersion")
        return Applied(obj=obj, created=previous is None, changed=before != after)

    async def replace_spec(self, manifest: Mapping[str, Any]) -> None:
        """A JSON merge patch of the manifest's `spec`: maps merge, lists are replaced whole.

        The fallback when server-side apply cannot converge: apply merges list entries by
        key (a Service port by port number, a container by name), so an entry another manager
        added or renamed stays beside ours, and may even make the object invalid (two ports
        named "http"). Fields the manifest does not name (replicas) are left alone.
        """
        resource = RESOURCES[(manifest["apiVersion"], manifest["kind"])]
        metadata = manifest["metadata"]
        await self._client.patch(
            resource,
            metadata["name"],
            {"spec": manifest["spec"]},
            namespace=metadata["namespace"],
            patch_type=PatchType.MERGE,
            field_manager=self._settings.field_manager,
        )

    async def scale_deployment(
        self, namespace: str, name: str, replicas: int, *, expected: int | None = None
    ) -> None:
        """Sets the Deployment's replicas, under the scale field manager, which the rendered
        manifests never name.

        A patch of the Deployment itself, not of its scale subresource: the API server
        records the patch's ownership of spec.replicas, so a GitOps tool that applies the
        field gets a conflict naming this manager. (On Kubernetes 1.36 a /scale write to a
        field nobody owns yet — a Deployment created by server-side apply without replicas —
        is recorded nowhere, and the field stays free for anyone to take; docs/gitops.md.)

        With `expected` (the count the caller decided from) the write is a JSON patch that
        first tests that spec.replicas is still `expected`: if someone changed the count
        meanwhile, the API server refuses it (422) and nothing is written, so a decision is
        never applied over a change it did not see. (A resourceVersion precondition would
        also refuse it for every status update of the Deployment, which are frequent while
        pods start and stop.)
        """
        if expected is None:
            await self._client.patch(
                apps_v1.Deployment,
                name,
                {"spec": {"replicas": replicas}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=self._settings.scale_field_manager,
            )
            return
        # A Deployment always carries spec.replicas (0 included; the API server defaults it).
        # "add" sets a member whether or not it is there ("replace" needs it there).
        guarded = [
            {"op": "test", "path": "/spec/replicas", "value": expected},
            {"op": "add", "path": "/spec/replicas", "value": replicas},
        ]
        await self._client.patch(
            apps_v1.Deployment,
            name,
            guarded,
            namespace=namespace,
            patch_type=PatchType.JSON,
            field_manager=self._settings.scale_field_manager,
        )

    async def annotate_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        """Sets (or, with None, removes) annotations on a pod: a JSON merge patch."""
        await self._client.patch(
            core_v1.Pod,
            name,
            {"metadata": {"annotations": dict(annotations)}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager=self._settings.scale_field_manager,
        )

    async def get_inference_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = await self._client.get(InferenceDeploymentResource, name, namespace=namespace)
        except ApiError as error:
            if is_not_found(error):
                return None
            raise
        return _plain(found)

    async def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [
            _plain(pod)
            async for pod in self._client.list(core_v1.Pod, namespace=namespace, labels={**labels})
        ]

    async def update_status(
        self, namespace: str, name: str, mutate: StatusMutation
    ) -> dict[str, Any] | None:
        """Read-modify-write of an InferenceDeployment's status.

        `mutate` gets the object as read and returns the status fields to set (a merge
        patch; nothing or {} means no write). The write carries the resourceVersion it was
        computed from, so a concurrent writer makes it fail with 409 and it runs again on a
        fresh read instead of overwriting what the other wrote. Returns the object after the
        write, or None when it no longer exists.
        """

        async def attempt() -> dict[str, Any] | None:
            obj = await self.get_inference_deployment(namespace, name)
            if obj is None:
                return None
            fields = mutate(obj)
            if not fields:
                return obj
            body = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "status": dict(fields),
            }
            written = await self._client.patch(
                InferenceDeploymentResource.Status,
                name,
                body,
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=self._settings.field_manager,
            )
            return _plain(written)

        try:
            return await self._retry(attempt)
        except ApiError as error:
            if is_not_found(error):
                return None
            raise

    async def close(self) -> None:
        await self._client.close()
