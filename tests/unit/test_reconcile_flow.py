"""One reconcile pass and the repair of drifted objects, against an in-memory API."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf
import pytest
from lightkube.models import meta_v1

from kvscale_operator import config, handlers, kube, metrics
from kvscale_operator.reconciler import reconcile, render

NOW = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
UID = "11111111-2222-4333-8444-555555555555"


def clock() -> datetime.datetime:
    return NOW


class FakeApi:
    """Objects by (kind, namespace, name); server-side apply merges and bumps resourceVersion
    only when the content changes, and a created Deployment gets the default 1 replica."""

    def __init__(self, infd: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 0
        self.applies: list[str] = []
        self.replaced: list[str] = []
        self.scales: list[int] = []
        self.pods: list[dict[str, Any]] = []
        self.put(infd)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.version)
        key = (stored["kind"], stored["metadata"]["namespace"], stored["metadata"]["name"])
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def find(self, kind: str, name: str = "llama") -> dict[str, Any] | None:
        found = self.objects.get((kind, "ns", name))
        return copy.deepcopy(found) if found is not None else None

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return self.find(kind, name)

    async def apply(
        self, manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> kube.Applied:
        self.applies.append(manifest["kind"])
        metadata = manifest["metadata"]
        existing = self.find(manifest["kind"], metadata["name"])
        merged = copy.deepcopy(dict(manifest))
        if existing is None:
            if manifest["kind"] == "Deployment":
                merged["spec"]["replicas"] = 1
            obj = self.put(merged)
        else:
            replicas = existing.get("spec", {}).get("replicas")
            if replicas is not None:
                merged["spec"]["replicas"] = replicas
            merged["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            if "status" in existing:
                merged["status"] = existing["status"]
            obj = existing if merged == existing else self.put(merged)
        return kube.Applied(
            obj=obj,
            created=previous is None,
            changed=(previous or {}).get("metadata", {}).get("resourceVersion")
            != obj["metadata"]["resourceVersion"],
        )

    async def replace_spec(self, manifest: Mapping[str, Any]) -> None:
        self.replaced.append(manifest["kind"])
        existing = self.find(manifest["kind"], manifest["metadata"]["name"])
        assert existing is not None
        existing["spec"].update(copy.deepcopy(manifest["spec"]))
        self.put(existing)

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.scales.append(replicas)
        deployment = self.find("Deployment", name)
        assert deployment is not None
        deployment["spec"]["replicas"] = replicas
        self.put(deployment)

    async def get_inference_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.find("InferenceDeployment", name)

    async def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    async def update_status(
        self, namespace: str, name: str, mutate: kube.StatusMutation
    ) -> dict[str, Any] | None:
        obj = self.find("InferenceDeployment", name)
        if obj is None:
            return None
        fields = mutate(obj)
        if fields:
            obj.setdefault("status", {}).update(fields)
            obj = self.put(obj)
        return obj

    def status(self) -> dict[str, Any]:
        obj = self.find("InferenceDeployment")
        assert obj is not None
        result: dict[str, Any] = obj.get("status") or {}
        return result

    def condition(self, kind: str) -> dict[str, Any]:
        (found,) = [item for item in self.status()["conditions"] if item["type"] == kind]
        result: dict[str, Any] = found
        return result


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def info(self, reason: str, message: str) -> None:
        self.posted.append(("Normal", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.posted.append(("Warning", reason, message))


def cr(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"name": "org/model"}}
    body.update(spec)
    return {
        "apiVersion": "kvscale.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "llama", "namespace": "ns", "uid": UID, "generation": 1},
        "spec": body,
    }


def run(api: FakeApi, events: Events | None = None) -> list[str]:
    body = api.find("InferenceDeployment")
    assert body is not None
    return asyncio.run(reconcile.reconcile(api, body, events or Events(), clock))


def test_a_new_cr_gets_its_objects_min_replicas_and_a_status() -> None:
    api = FakeApi(cr(scaling={"minReplicas": 2, "maxReplicas": 4}))
    events = Events()
    changed = run(api, events)
    assert changed == [
        "created Deployment llama",
        "created Service llama",
        "created PodDisruptionBudget llama",
        "scaled Deployment llama to 2",
    ]
    assert [reason for _, reason, _ in events.posted] == ["Created"] * 3 + ["Scaled"]
    assert api.scales == [2]
    deployment = api.find("Deployment")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    status = api.status()
    assert status["observedGeneration"] == 1
    assert status["selector"] == "kvscale.dev/inference-deployment=llama"
    assert api.condition("Ready")["reason"] == "NoReplicasReady"


def test_a_second_pass_changes_nothing() -> None:
    api = FakeApi(cr())
    run(api)
    before = copy.deepcopy(api.objects)
    events = Events()
    assert run(api, events) == []
    assert events.posted == []
    assert api.objects == before


def test_the_replicas_of_an_existing_deployment_are_left_to_the_autoscale_loop() -> None:
    # spec.replicas (kubectl scale infd) and changed bounds reach the Deployment through the
    # autoscale loop, the one writer of an existing Deployment's count (test_autoscale_loop).
    api = FakeApi(cr())
    run(api)
    body = api.find("InferenceDeployment")
    assert body is not None
    body["spec"]["replicas"] = 3
    body["spec"]["scaling"] = {"minReplicas": 2, "maxReplicas": 4}
    body["metadata"]["generation"] = 2
    api.put(body)
    assert run(api) == []
    deployment = api.find("Deployment")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1
    assert "desiredReplicas" not in api.status()


def test_replicas_set_by_someone_else_are_kept_without_spec_replicas() -> None:
    api = FakeApi(cr())
    run(api)
    asyncio.run(api.scale_deployment("ns", "llama", 3))  # e.g. the autoscaler
    assert run(api) == []
    assert api.scales == [3]


def test_an_invalid_spec_applies_nothing_and_says_which_field() -> None:
    api = FakeApi(cr(engine={"blockSize": 17}))
    events = Events()
    assert run(api, events) == []
    assert api.applies == []
    (posted,) = events.posted
    assert posted[:2] == ("Warning", "InvalidSpec")
    assert "spec.engine.blockSize" in posted[2]
    ready = api.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.engine.blockSize" in ready["message"]


def test_an_engine_config_problem_applies_nothing_and_leaves_the_running_deployment() -> None:
    api = FakeApi(cr())
    run(api)
    running = api.find("Deployment")
    body = api.find("InferenceDeployment")
    assert body is not None
    body["spec"]["engine"] = {"extraArgs": ["--swap-space", "4"]}
    api.put(body)
    api.applies.clear()
    events = Events()
    assert run(api, events) == []
    assert api.applies == []
    assert api.find("Deployment") == running
    assert events.posted[0][:2] == ("Warning", "EngineConfigInvalid")
    ready = api.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "EngineConfigInvalid")
    assert "'--swap-space': vLLM V1 removed it" in ready["message"]


def test_an_object_of_another_controller_is_not_taken_over() -> None:
    api = FakeApi(cr())
    api.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "llama",
                "namespace": "ns",
                "ownerReferences": [
                    {"kind": "Rollout", "name": "r", "uid": "x", "controller": True}
                ],
            },
            "spec": {"replicas": 5},
        }
    )
    events = Events()
    run(api, events)
    assert "Deployment" not in api.applies
    assert api.scales == []
    assert ("Warning", "ResourceConflict") in [posted[:2] for posted in events.posted]
    ready = api.condition("Ready")
    assert ready["reason"] == "EngineConfigInvalid"
    assert "controlled by Rollout r" in ready["message"]


def test_the_reconciler_writes_only_its_own_condition_types() -> None:
    # ScalingLimited (pods the scheduler cannot place included) is the autoscale loop's.
    api = FakeApi(cr(replicas=3))
    api.pods = [
        {
            "metadata": {"name": "llama-0"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
        }
    ]
    run(api)
    assert [item["type"] for item in api.status()["conditions"]] == ["Ready"]


def repair(api: FakeApi, live: dict[str, Any], deleted: bool, events: Events) -> list[str]:
    return asyncio.run(reconcile.repair(api, live, deleted, lambda body: events, clock))


def test_a_deleted_deployment_comes_back_with_its_last_replica_count() -> None:
    api = FakeApi(cr())
    run(api)
    asyncio.run(api.scale_deployment("ns", "llama", 3))
    # What the autoscale loop writes beside the count it sets.
    asyncio.run(api.update_status("ns", "llama", lambda obj: {"desiredReplicas": 3}))
    last = api.objects.pop(("Deployment", "ns", "llama"))
    events = Events()
    assert repair(api, last, True, events) == ["recreated Deployment llama"]
    assert events.posted == [
        ("Warning", "DriftCorrected", "Deployment llama was deleted; recreated it")
    ]
    deployment = api.find("Deployment")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3


def test_an_edited_field_is_restored_and_an_untouched_object_is_not_applied() -> None:
    api = FakeApi(cr())
    run(api)
    service = api.find("Service")
    assert service is not None
    api.applies.clear()
    assert repair(api, service, False, Events()) == []
    assert api.applies == []
    service["spec"]["ports"][0]["port"] = 1234
    api.put(service)
    events = Events()
    assert repair(api, service, False, events) == ["restored Service llama: .spec.ports[0].port"]
    restored = api.find("Service")
    assert restored is not None
    assert restored["spec"]["ports"][0]["port"] == 8000


def test_a_stale_event_of_an_object_already_restored_changes_nothing() -> None:
    api = FakeApi(cr())
    run(api)
    stale = api.find("Deployment")
    assert stale is not None
    stale["spec"]["template"]["spec"]["containers"][0]["args"].append("--edited")
    api.applies.clear()
    events = Events()
    assert repair(api, stale, False, events) == []
    assert api.applies == []
    assert events.posted == []


class ListMergingApi(FakeApi):
    """Applies like server-side apply does to a list map: a Service port another manager
    renumbered stays beside the operator's, which the API server then refuses (two ports named
    "http"), until the lists are replaced whole."""

    async def apply(
        self, manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> kube.Applied:
        existing = self.find(manifest["kind"], manifest["metadata"]["name"])
        if existing is not None and manifest["kind"] == "Service":
            names = [port["name"] for port in existing["spec"]["ports"]]
            ours = {port["port"] for port in manifest["spec"]["ports"]}
            theirs = [port for port in existing["spec"]["ports"] if port["port"] not in ours]
            if any(port["name"] in names for port in theirs) and theirs:
                raise kube.ApiError(status=meta_v1.Status(code=422, message="Duplicate value"))
        return await super().apply(manifest, previous)


def test_a_list_entry_another_manager_changed_is_replaced_whole() -> None:
    api = ListMergingApi(cr())
    run(api)
    service = api.find("Service")
    assert service is not None
    service["spec"]["ports"][0]["port"] = 1
    api.put(service)
    fixed = repair(api, service, False, Events())
    assert fixed == ["restored Service llama: .spec.ports[0].port"]
    assert api.replaced == ["Service"]
    restored = api.find("Service")
    assert restored is not None
    assert [port["port"] for port in restored["spec"]["ports"]] == [8000, 9090]


def test_objects_of_a_cr_being_deleted_or_of_an_older_cr_are_left_to_the_collector() -> None:
    api = FakeApi(cr())
    run(api)
    deployment = api.objects.pop(("Deployment", "ns", "llama"))
    stale = copy.deepcopy(deployment)
    stale["metadata"]["ownerReferences"][0]["uid"] = "an-earlier-uid"
    assert repair(api, stale, True, Events()) == []
    body = api.find("InferenceDeployment")
    assert body is not None
    body["metadata"]["deletionTimestamp"] = "2026-03-04T05:06:07Z"
    api.put(body)
    assert repair(api, deployment, True, Events()) == []
    assert api.find("Deployment") is None


def test_objects_without_the_owner_label_are_ignored() -> None:
    api = FakeApi(cr())
    run(api)
    deployment = api.find("Deployment")
    assert deployment is not None
    del deployment["metadata"]["labels"][render.OWNER_LABEL]
    assert repair(api, deployment, True, Events()) == []


# The kopf handlers' bodies, called as kopf calls them, with the same in-memory API.

LOG = logging.getLogger("test")


class FlakyApi(FakeApi):
    """Fails the first `failures` applies with a 503, as an API server restarting would."""

    def __init__(self, infd: dict[str, Any], failures: int) -> None:
        super().__init__(infd)
        self.failures = failures

    async def apply(
        self, manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> kube.Applied:
        if self.failures:
            self.failures -= 1
            raise kube.ApiError(status=meta_v1.Status(code=503, message="unavailable"))
        return await super().apply(manifest, previous)


def context(api: FakeApi, events: Events, sleeps: list[float]) -> handlers.Context:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return handlers.Context(
        settings=config.Settings(),
        api=api,
        metrics=metrics.Metrics.create(),
        credentials=None,
        events_for=lambda body: events,
        sleep=sleep,
    )


def sample(ctx: handlers.Context, name: str, **labels: str) -> float | None:
    return ctx.metrics.registry.get_sample_value(name, labels)


def test_the_reconcile_handler_counts_its_passes_and_changes() -> None:
    api = FakeApi(cr())
    ctx = context(api, Events(), [])
    body = api.find("InferenceDeployment")
    assert body is not None
    asyncio.run(handlers.reconcile_infd(ctx, body, LOG))
    assert sample(ctx, "kvscale_operator_reconciles_total", result="ok") == 1
    assert (
        sample(ctx, "kvscale_operator_object_changes_total", kind="Deployment", action="created")
        == 1
    )


def test_an_api_error_in_a_pass_becomes_a_kopf_retry() -> None:
    api = FlakyApi(cr(), failures=1)
    ctx = context(api, Events(), [])
    body = api.find("InferenceDeployment")
    assert body is not None
    with pytest.raises(kopf.TemporaryError) as raised:
        asyncio.run(handlers.reconcile_infd(ctx, body, LOG))
    assert raised.value.delay == ctx.settings.retry_delay_seconds
    assert "API error 503: unavailable" in str(raised.value)
    assert sample(ctx, "kvscale_operator_reconciles_total", result="error") == 1


def test_recreating_a_deleted_object_is_retried_after_an_api_error() -> None:
    api = FlakyApi(cr(), failures=0)
    events = Events()
    sleeps: list[float] = []
    ctx = context(api, events, sleeps)
    asyncio.run(handlers.reconcile_infd(ctx, api.find("InferenceDeployment") or {}, LOG))
    last = api.objects.pop(("PodDisruptionBudget", "ns", "llama"))
    api.failures = 2
    asyncio.run(handlers.owned_changed(ctx, "PodDisruptionBudget", "DELETED", last, LOG))
    assert sleeps == [1.0, 2.0]
    assert api.find("PodDisruptionBudget") is not None
    assert sample(ctx, "kvscale_operator_drift_corrections_total", kind="PodDisruptionBudget") == 1


def test_an_engine_pod_event_refreshes_its_crs_status() -> None:
    api = FakeApi(cr())
    ctx = context(api, Events(), [])
    asyncio.run(handlers.reconcile_infd(ctx, api.find("InferenceDeployment") or {}, LOG))
    deployment = api.find("Deployment")
    assert deployment is not None
    deployment["status"] = {"replicas": 1, "readyReplicas": 1}
    api.put(deployment)
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": render.labels("llama")}}
    asyncio.run(handlers.engine_pod_changed(ctx, pod, LOG))
    assert api.status()["readyReplicas"] == 1
    assert api.condition("Ready")["reason"] == "AllReplicasReady"


def test_kopf_keeps_its_state_in_kvscale_annotations_and_watches_only_our_objects() -> None:
    settings = handlers.operator_settings(config.Settings())
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "kvscale.dev"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "kvscale.dev"
    assert settings.posting.reporting_component == "kvscale-operator"
    selectors = set(settings.watching.label_selectors.values())
    assert selectors == {"app.kubernetes.io/managed-by=kvscale"}
    assert len(list(settings.watching.label_selectors)) == 4


class RefusingApi(FakeApi):
    """Refuses every Deployment, as the API server refuses a pod template it finds invalid (a
    toleration with an empty key and operator Equal: 422) or an apply body it cannot read as
    YAML (a map key over 1,024 characters: 400) that the CRD let through."""

    REFUSALS = {
        422: 'Deployment.apps "llama" is invalid: spec.template.spec.tolerations[0].operator: '
        'Invalid value: "Equal": operator must be Exists when `key` is empty',
        400: "error decoding YAML: error converting YAML to JSON: yaml: did not find expected "
        "',' or '}'",
    }

    def __init__(self, infd: dict[str, Any], code: int) -> None:
        super().__init__(infd)
        self.code = code

    async def apply(
        self, manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> kube.Applied:
        if manifest["kind"] == "Deployment":
            message = self.REFUSALS[self.code]
            raise kube.ApiError(status=meta_v1.Status(code=self.code, message=message))
        return await super().apply(manifest, previous)


@pytest.mark.parametrize("code", [422, 400])
def test_a_deployment_the_api_server_refuses_is_reported_in_status_not_retried(code: int) -> None:
    # Found by chaos scenario 9 (test_chaos_fuzz): the operator retried such a pass every few
    # seconds for ever, with nothing in the CR's status to say why no Deployment came.
    api = RefusingApi(cr(resources={"tolerations": [{"value": "x"}]}), code)
    ctx = context(api, Events(), [])
    events = Events()
    ctx = dataclasses.replace(ctx, events_for=lambda body: events)
    body = api.find("InferenceDeployment")
    assert body is not None
    asyncio.run(handlers.reconcile_infd(ctx, body, LOG))  # no kopf.TemporaryError
    assert api.find("Deployment") is None
    assert api.find("Service") is not None  # the objects the server took are applied
    assert ("Warning", "EngineConfigInvalid") in [posted[:2] for posted in events.posted]
    ready = api.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "EngineConfigInvalid")
    assert "the API server refused Deployment llama" in ready["message"]
    assert api.REFUSALS[code] in ready["message"]
    assert sample(ctx, "kvscale_operator_reconciles_total", result="ok") == 1
