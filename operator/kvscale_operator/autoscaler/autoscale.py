"""The autoscale loop: one per InferenceDeployment, gather -> decide -> act. Does I/O.

`Loops` keeps one `Loop` task per InferenceDeployment. kopf's watch events drive it (see
`handlers`): a CR seen (at start, created, changed) starts or updates its loop, a CR deleted
or being deleted stops it, and the operator's cleanup stops them all. Plain asyncio tasks,
not kopf daemons, because kopf puts a finalizer on every object a daemon or timer serves, and
a finalizer would make deleting an InferenceDeployment hang whenever the operator is down.

The CR is parsed into the typed model once per change (`Loop.update`), not once per tick. One
tick (every `spec.scaling.tickSeconds`, on one monotonic clock for everything the decision
sees), in three parts:
1. Gather (`Loop._gather`). Read the engine Deployment (its spec.replicas is `current`) and
   the pods from the `inventory` (fed by the pod watch, made whole by a LIST at start and
   every minute). Ask the ready pods' sidecars for their reports (`collector`; a rotating
   sample of them when there are many, `sampling`), with a timeout of half a tick (at most
   1 s); pods that were ready and no longer are (a crashed engine or sidecar) are always
   asked. Pods (`observation`) and reports become observations through `kvscale.adapter`,
   the same adapter `kvscale simulate` runs.
2. Decide: the pure `kvscale.scaling.decision.Autoscaler.step(now, observations, current,
   manual)`, built from `settings.from_spec(spec.scaling)` and rebuilt when those settings
   change. Its `Decision` is the one record of the tick: status, metrics, Events and history
   read it (`outcome.Tick` holds it; nothing is copied out of it).
3. Act (`Loop._act`) when the decision differs from `current`: before a scale-down, give the
   least-loaded pods a negative `controller.kubernetes.io/pod-deletion-cost` so the
   ReplicaSet removes them first; then set the Deployment's replicas with a patch guarded by
   a test that the count is still `current` (`kube.Kube.scale_deployment`); then an Event
   (ScaledUp / ScaledDown, from -> to and why) and a scalingHistory entry. Then, every tick,
   export the metrics (`metrics.Autoscaler`) and write the status fields and conditions the
   autoscaler owns (`outcome`): at once when the desired count or a condition's status or
   reason changes, otherwise (occupancy, messages) at most every `status_interval` seconds.

Manual replicas. `kubectl scale infd NAME --replicas N` sets spec.replicas. While it is set
the decision is N (mode and reason `manual`: not clamped, a person asked for it), so the loop
holds the Deployment at exactly N, keeps reporting occupancy, and says ScalingActive=False,
reason ManualReplicas. Removing it
(`kubectl patch infd NAME --type merge -p '{"spec":{"replicas":null}}'`) resumes autoscaling
from the current count with a fresh Autoscaler. One writer owns the Deployment's replicas,
this loop; the reconciler sets them only when it creates the Deployment (`replicas`).

Advisory mode. With `spec.scaling.mode: Advisory` the tick gathers and decides exactly as
above, with `current` the count whoever scales the Deployment set (an HPA, KEDA, a person), but
acts only by publishing: status (desiredReplicas, conditions with ScalingActive=False, reason
Advisory), metrics (`kvscale_autoscaler_advisory` = 1 beside desired and current replicas) and
an Event WouldScaleUp / WouldScaleDown each time the advice changes. It never patches the
Deployment's replicas or marks pods for removal, and the reconciler leaves a new Deployment's
count to Kubernetes' default and its owner. Switching the mode keeps the Autoscaler (the mode
is not a decision setting), so what it learned in Advisory carries into Active.

Restarts. Nothing the decision needs is lost with the process: a fresh Autoscaler seeds its
scale-down delay with `current` at its first tick, so a restarted operator scales down only
after a whole delay of low demand, and it scales up only on what the pods report now.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from kvscale import adapter
from kvscale.api import models
from kvscale.scaling import capacity, decision, demand, settings, sizing
from kvscale_operator import kube, metrics, utc
from kvscale_operator.autoscaler import collector, inventory, observation, outcome, sampling
from kvscale_operator.reconciler import conditions, reconcile, render, status

log = logging.getLogger("kvscale_operator.autoscale")

SCRAPE_TIMEOUT_SECONDS = 1.0
"""Most a report may take; at short ticks, half the tick."""
STATUS_INTERVAL_SECONDS = 5.0
"""Occupancy and condition messages are written at most this often."""
EVENT_MESSAGE_LIMIT = 1000
"""Events carry the decision's message, cut to this many characters."""
MARKS_PER_TICK = 20
"""Pods marked ready-once per tick at most (a new operator on a big fleet spreads them)."""
_GONE = "DELETED"
_Decision = decision.Decision  # for TickResult.decision, whose name hides the module there


class Api(Protocol):
    """The API calls a tick makes (implemented by `kube.Kube`)."""

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    async def list_pods(
        self, namespace: str, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]: ...

    async def scale_deployment(
        self, namespace: str, name: str, replicas: int, *, expected: int | None = None
    ) -> None: ...

    async def annotate_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None: ...

    async def update_status(
        self, namespace: str, name: str, mutate: kube.StatusMutation
    ) -> dict[str, Any] | None: ...


class Collect(Protocol):
    """How a tick fetches reports (implemented by `collector.Collector`)."""

    async def collect(
        self, targets: Sequence[collector.Target], timeout_seconds: float
    ) -> list[collector.Result]: ...


@dataclasses.dataclass(frozen=True)
class Deps:
    """What the loops share: the API, the collector, the pod inventory, metrics, clocks."""

    api: Api
    collector: Collect
    metrics: metrics.Autoscaler
    events_for: Callable[[Mapping[str, Any]], reconcile.Events]
    inventory: inventory.Inventory = dataclasses.field(
        default_factory=lambda: inventory.Inventory(render.OWNER_LABEL)
    )
    clock: Callable[[], float] = time.monotonic
    """The decision's clock: monotonic seconds."""
    wall: Callable[[], datetime.datetime] = utc.now
    """For timestamps people read (status, history)."""
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    status_interval: float = STATUS_INTERVAL_SECONDS
    scrape_timeout: float = SCRAPE_TIMEOUT_SECONDS


@dataclasses.dataclass(frozen=True)
class Action:
    """What one tick did to the Deployment (for logs and tests)."""

    from_replicas: int
    to_replicas: int
    reason: str
    marked: tuple[str, ...] = ()
    """Pods given a negative deletion cost before a scale-down, first to go first."""


@dataclasses.dataclass(frozen=True)
class TickResult:
    """One tick, for logs and tests."""

    tick: outcome.Tick
    action: Action | None
    status_written: bool

    @property
    def decision(self) -> _Decision | None:
        """The tick's decision; None when it was blocked."""
        return self.tick.decision


@dataclasses.dataclass(frozen=True)
class _Gathered:
    """What a tick found before deciding: the pods as the decision sees them, the observations."""

    pods: list[observation.Pod]
    polled: set[str]
    """uids of the pods asked for a report this tick."""
    observed: list[demand.Observation]


def _key(body: Mapping[str, Any]) -> inventory.Key:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or "default"), str(metadata.get("name") or ""))


def _truncate(text: str) -> str:
    if len(text) <= EVENT_MESSAGE_LIMIT:
        return text
    return text[: EVENT_MESSAGE_LIMIT - 3] + "..."


def deletion_costs(
    pods: Sequence[observation.Pod], removal_order: Sequence[str], count: int
) -> dict[str, str | None]:
    """Annotation changes so the ReplicaSet removes the `count` least-loaded pods first.

    The chosen pods get costs -count .. -1 (the least loaded the lowest); a pod that still
    carries a negative cost from an earlier scale-down and is not chosen now loses it.
    Positive costs (a person protecting a pod) are left alone. Returns pod name -> new value
    (None: remove) for the pods whose annotation must change.
    """
    chosen = list(removal_order[: max(0, count)])
    wanted: dict[str, str | None] = {
        name: str(index - len(chosen)) for index, name in enumerate(chosen)
    }
    changes: dict[str, str | None] = {}
    for pod in pods:
        if pod.phase is demand.Phase.TERMINATING:
            continue
        target = wanted.get(pod.name)
        if target is None:
            if pod.deletion_cost is not None and pod.deletion_cost.lstrip().startswith("-"):
                changes[pod.name] = None
        elif pod.deletion_cost != target:
            changes[pod.name] = target
    return changes


class Loop:
    """The autoscaler of one InferenceDeployment."""

    def __init__(self, body: Mapping[str, Any], deps: Deps) -> None:
        self.key = _key(body)
        self._body: dict[str, Any] = dict(body)
        self._parsed = reconcile.parse(self._body)
        """The CR as the typed model (or why it is not one): parsed once per change."""
        self._deps = deps
        self._autoscaler: decision.Autoscaler | None = None
        self._config: settings.ScalingSettings | None = None
        self._slo: sizing.Settings | None = None
        self._manual: bool | None = None
        self._advised: tuple[int, int] | None = None
        """(current, desired) of the last WouldScale Event: one Event per change of advice."""
        self._advisory: bool | None = None
        self._memory = observation.Memory()
        self._marked: set[str] = set()
        """uids of pods this loop marked ready-once."""
        self._read: dict[str, tuple[tuple[str, bool], observation.Pod]] = {}
        """uid -> ((resourceVersion, was ready), the pod as read): read each version once."""
        self._reports = adapter.Reports()
        self._tick_index = 0
        self._history: list[dict[str, Any]] = []
        """scalingHistory entries not yet written."""
        self._written: tuple[outcome.Summary, outcome.Summary] | None = None
        self._written_at = -float("inf")
        self._metrics_condition: tuple[str, str] | None = None
        """(status, reason) of MetricsAvailable at the last tick that evaluated it."""

    def update(self, body: Mapping[str, Any]) -> None:
        """The CR changed (spec, metadata): the next tick uses this copy."""
        self._body = dict(body)
        self._parsed = reconcile.parse(self._body)

    def tick_seconds(self) -> float:
        infd, _ = self._parsed
        if infd is None:
            return settings.ScalingSettings.tick_seconds
        return infd.spec.scaling.tick_seconds

    async def run(self) -> None:
        """Ticks until cancelled; an error in one tick is logged and counted, never fatal."""
        namespace, name = self.key
        labels = {"namespace": namespace, "name": name}
        while True:
            started = self._deps.clock()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._deps.metrics.loop_errors.labels(**labels).inc()
                log.warning(f"{namespace}/{name}: autoscaler tick failed: {error!r}")
            period = self.tick_seconds()
            await self._deps.sleep(max(0.0, started + period - self._deps.clock()))

    def _autoscaler_for(
        self, config: settings.ScalingSettings, slo: sizing.Settings | None, manual: bool
    ) -> decision.Autoscaler:
        """The Autoscaler, rebuilt when the settings or the SLO change or manual mode ends
        (what it learned of the pods' capacity goes with it: the SLO it was learned for did)."""
        if (
            self._autoscaler is None
            or config != self._config
            or slo != self._slo
            or self._manual != manual
        ):
            where = f"{self.key[0]}/{self.key[1]}"
            if self._manual is not None and self._manual != manual:
                what = "paused: spec.replicas is set" if manual else "resumed from the count"
                log.info(f"{where}: autoscaling {what}")
            elif self._autoscaler is not None:
                log.info(f"{where}: scaling settings changed; new windows")
            self._autoscaler = decision.Autoscaler(config, slo)
            self._config = config
            self._slo = slo
        self._manual = manual
        return self._autoscaler

    def _advisory_mode(self, mode: models.ScalingMode) -> bool:
        """Whether this tick only advises; says so in the log and an Event when it changes."""
        advisory = mode is models.ScalingMode.ADVISORY
        if self._advisory is not None and self._advisory != advisory:
            where = f"{self.key[0]}/{self.key[1]}"
            what = (
                "advisory: deciding and publishing, the Deployment's replicas are left to "
                "their owner"
                if advisory
                else "active: setting the Deployment's replicas from the next decision on"
            )
            log.info(f"{where}: spec.scaling.mode is {mode.value}, {what}")
            self._deps.events_for(self._body).info(
                "ScalingModeChanged", f"now {mode.value}: {what}"
            )
            self._advised = None
        self._advisory = advisory
        return advisory

    async def _pods(self, now: float) -> list[dict[str, Any]]:
        deps = self._deps
        synced = deps.inventory.synced_at(self.key)
        if synced is None or now - synced >= inventory.RESYNC_SECONDS:
            started = deps.clock()
            listed = await deps.api.list_pods(self.key[0], render.selector_labels(self.key[1]))
            deps.inventory.resync(self.key, listed, started, deps.clock())
        return deps.inventory.pods(self.key)

    async def tick(self) -> TickResult:
        """One gather -> decide -> act pass (see the module docstring)."""
        deps = self._deps
        namespace, name = self.key
        began = deps.clock()
        generation = (self._body.get("metadata") or {}).get("generation")
        infd, error = self._parsed
        if infd is None:
            blocked = outcome.Blocked("InvalidSpec", error or "the spec does not parse")
            return await self._finish(outcome.Tick(generation, blocked=blocked), None)
        deployment = await deps.api.get("apps/v1", "Deployment", namespace, name)
        if deployment is None:
            message = f"the engine Deployment {name} does not exist (yet)"
            blocked = outcome.Blocked("DeploymentMissing", message)
            return await self._finish(outcome.Tick(generation, blocked=blocked), None)
        conflict = reconcile.foreign_controller(deployment, infd.metadata.uid)
        if conflict is not None:
            blocked = outcome.Blocked("ResourceConflict", conflict)
            return await self._finish(outcome.Tick(generation, blocked=blocked), None)
        current = int((deployment.get("spec") or {}).get("replicas") or 0)
        config = settings.from_spec(infd.spec.scaling)
        slo = None
        if infd.spec.slo is not None:
            slo = sizing.Settings(capacity.Objective.from_slo(infd.spec.slo))
        manual = infd.spec.replicas
        autoscaler = self._autoscaler_for(config, slo, manual is not None)
        advisory = self._advisory_mode(infd.spec.scaling.mode)

        gathered = await self._gather(infd.spec.sidecar.port, config)
        # Manual mode is a decision too: the count a person set, with this tick's readings.
        made = autoscaler.step(deps.clock(), gathered.observed, current, manual)
        tick = self._outcome(generation, config, gathered, made)
        tick = dataclasses.replace(tick, advisory=advisory)
        result = await self._act(tick, gathered, current)
        deps.metrics.loop_seconds.labels(namespace=namespace, name=name).observe(
            deps.clock() - began
        )
        return result

    async def _gather(self, port: int, config: settings.ScalingSettings) -> _Gathered:
        """Pods from the inventory, the sidecars' reports, and the observations they make."""
        pods = self._read_pods(await self._pods(self._deps.clock()))
        self._memory.update(pods)
        await self._mark_ready(pods)
        polled = await self._collect(pods, port, config)
        # Pods' timestamps are wall-clock; the decision's clock is monotonic.
        offset = self._deps.clock() - self._deps.wall().timestamp()
        observed = adapter.observations(pods, polled, self._reports, offset)
        return _Gathered(pods, polled, observed)

    def _outcome(
        self,
        generation: int | None,
        config: settings.ScalingSettings,
        gathered: _Gathered,
        made: decision.Decision,
    ) -> outcome.Tick:
        """What the status reports of this tick; each unreported pod's words come from its
        reading in the decision and its latest report."""
        uids = {pod.name: pod.uid for pod in gathered.pods}
        reports = self._reports
        live = [pod for pod in gathered.pods if pod.phase is not demand.Phase.TERMINATING]
        return outcome.Tick(
            generation=generation,
            decision=made,
            min_replicas=config.min_replicas,
            max_replicas=config.max_replicas,
            # Only pods asked this tick can be unreported; the others asked were fresh.
            num_fresh=len(gathered.polled) - len(made.missing),
            num_polled=len(gathered.polled),
            unreported=tuple(
                (reading.pod, adapter.why_unreported(reading, uids[reading.pod], reports, config))
                for reading in made.missing
            ),
            unschedulable=tuple(
                sorted((pod.name, pod.unschedulable) for pod in live if pod.unschedulable)
            ),
            num_pods=len(live),
        )

    async def _act(self, tick: outcome.Tick, gathered: _Gathered, current: int) -> TickResult:
        """Deletion costs and the scale patch when the count changes; metrics; Events, status."""
        made = tick.decision
        if made is None:
            raise AssertionError("a tick that was not blocked has a decision")
        action = None
        if tick.advisory:
            self._advise(made)
        elif made.desired != current:
            action, scale_error = await self._scale(gathered.pods, made)
            if scale_error is not None:
                tick = dataclasses.replace(tick, scale_error=scale_error)
        m = self._deps.metrics
        labels = {"namespace": self.key[0], "name": self.key[1]}
        m.advisory.labels(**labels).set(1 if tick.advisory else 0)
        m.current_replicas.labels(**labels).set(current)
        m.desired_replicas.labels(**labels).set(made.desired)
        m.ready_replicas.labels(**labels).set(made.ready)
        m.occupancy.labels(**labels).set(
            made.occupancy if made.occupancy is not None else float("nan")
        )
        m.unreported_pods.labels(**labels).set(len(made.missing))
        m.panic.labels(**labels).set(1 if made.mode is decision.Mode.PANIC else 0)
        m.decisions.labels(**labels, reason=made.reason.value).inc()
        return await self._finish(tick, action)

    def _read_pods(self, objs: Sequence[dict[str, Any]]) -> list[observation.Pod]:
        """The pods as the decision sees them; a pod unchanged since the last tick (same
        resourceVersion, same memory) is not read again."""
        known, self._read = self._read, {}
        pods = []
        for obj in objs:
            metadata = obj.get("metadata") or {}
            uid = str(metadata.get("uid") or "")
            key = (str(metadata.get("resourceVersion") or ""), self._memory.was_ready(uid))
            cached = known.get(uid)
            pod = cached[1] if cached is not None and cached[0] == key and key[0] else None
            if pod is None:
                pod = observation.read_pod(obj, key[1])
            self._read[uid] = (key, pod)
            pods.append(pod)
        return pods

    async def _mark_ready(self, pods: Sequence[observation.Pod]) -> None:
        """Marks pods seen ready for the first time, so a restarted operator knows them."""
        namespace, name = self.key
        self._marked &= {pod.uid for pod in pods}
        marked = self._marked
        unmarked = [p for p in pods if p.ready and not p.marked_ready and p.uid not in marked]
        stamp = conditions.timestamp(self._deps.wall())
        for pod in unmarked[:MARKS_PER_TICK]:
            try:
                await self._deps.api.annotate_pod(
                    namespace, pod.name, {observation.READY_ONCE_ANNOTATION: stamp}
                )
            except kube.ApiError as error:
                if not kube.is_not_found(error):
                    log.info(f"{namespace}/{name}: {pod.name} not marked ready-once: {error}")
                continue
            # The pod watch brings the annotation back later; until then, remember it here.
            self._marked.add(pod.uid)

    async def _collect(
        self,
        pods: Sequence[observation.Pod],
        port: int,
        config: settings.ScalingSettings,
    ) -> set[str]:
        """Asks the chosen sidecars; keeps what came back in `_reports`. Returns the uids asked."""
        deps = self._deps
        labels = {"namespace": self.key[0], "name": self.key[1]}
        ready = [pod for pod in pods if pod.phase is demand.Phase.READY and pod.ip]
        steady = [pod for pod in ready if not pod.lost]
        size = sampling.sample_size(len(ready))
        chosen = set(sampling.choose((pod.name for pod in steady), self._tick_index, size))
        self._tick_index += 1
        asked = [pod for pod in ready if pod.name in chosen or pod.lost]
        targets = [
            collector.Target(pod.name, pod.uid, collector.url(pod.ip or "", port)) for pod in asked
        ]
        timeout = min(deps.scrape_timeout, config.tick_seconds / 2)
        results = await deps.collector.collect(targets, timeout)
        for found in results:
            uid = found.target.uid
            if found.report is not None:
                self._reports.record(uid, adapter.Received(found.report, found.received_at))
            else:
                self._reports.fail(uid, found.error or "no report")
                reason = found.failure.value if found.failure else "unknown"
                deps.metrics.scrape_errors.labels(**labels, reason=reason).inc()
        if results:
            deps.metrics.scrapes.labels(**labels).inc(len(results))
        self._reports.keep_only({pod.uid for pod in pods})
        return {pod.uid for pod in asked}

    def _advise(self, made: decision.Decision) -> None:
        """Advisory mode's act step: an Event when the advice changes, nothing written to the
        Deployment or its pods. No Event while the advice agrees with the count in place."""
        advice = (made.current, made.desired)
        if advice == self._advised:
            return
        self._advised = advice
        if made.desired == made.current:
            return
        namespace, name = self.key
        word = "WouldScaleUp" if made.desired > made.current else "WouldScaleDown"
        text = (
            f"advisory: would scale from {made.current} to {made.desired} replicas "
            f"({made.reason.value}): {made.message}"
        )
        self._deps.events_for(self._body).info(word, _truncate(text))
        log.info(f"{namespace}/{name}: {text}")

    async def _scale(
        self, pods: Sequence[observation.Pod], made: decision.Decision
    ) -> tuple[Action | None, str | None]:
        """Marks pods for removal (scale-down), patches the Deployment's replicas, posts the
        Event."""
        deps = self._deps
        current, desired, reason = made.current, made.desired, made.reason.value
        namespace, name = self.key
        events = deps.events_for(self._body)
        marked: tuple[str, ...] = ()
        if desired < current:
            changes = deletion_costs(pods, made.removal_order, current - desired)
            for pod_name, cost in changes.items():
                try:
                    await deps.api.annotate_pod(
                        namespace, pod_name, {observation.DELETION_COST_ANNOTATION: cost}
                    )
                except kube.ApiError as error:
                    # Best effort: without it the ReplicaSet picks by its own rules.
                    log.info(f"{namespace}/{name}: deletion cost of {pod_name} not set: {error}")
            marked = tuple(pod for pod, cost in changes.items() if cost is not None)
            marked = tuple(sorted(marked, key=lambda pod: int(changes[pod] or "0")))
        try:
            await deps.api.scale_deployment(namespace, name, desired, expected=current)
        except kube.ApiError as error:
            if kube.is_conflict(error) or kube.is_invalid(error):
                # The count is no longer `current` (someone scaled meanwhile): decide again.
                log.info(
                    f"{namespace}/{name}: not scaled from {current} to {desired}, the count "
                    f"changed meanwhile ({error}); deciding again next tick"
                )
                return None, None
            text = f"scaling the Deployment from {current} to {desired} failed: {error}"
            log.warning(f"{namespace}/{name}: {text}")
            events.warn("ScaleFailed", _truncate(text))
            return None, text
        direction = "up" if desired > current else "down"
        word = "ScaledUp" if desired > current else "ScaledDown"
        text = f"scaled from {current} to {desired} replicas ({reason}): {made.message}"
        events.info(word, _truncate(text))
        log.info(f"{namespace}/{name}: {text}")
        deps.metrics.scale_actions.labels(namespace=namespace, name=name, direction=direction).inc()
        self._history.append(
            outcome.history_entry(deps.wall(), current, desired, reason, made.occupancy)
        )
        return Action(current, desired, reason, marked), None

    async def _finish(self, tick: outcome.Tick, action: Action | None) -> TickResult:
        """Events on metrics going missing or coming back; the rate-limited status write."""
        self._metrics_events(tick)
        written = await self._write_status(tick)
        return TickResult(tick, action, written)

    def _metrics_events(self, tick: outcome.Tick) -> None:
        if tick.blocked is not None:
            return
        condition = outcome.metrics_available(tick)
        now = (condition.status.value, condition.reason)
        before, self._metrics_condition = self._metrics_condition, now
        if before == now:
            return
        events = self._deps.events_for(self._body)
        missing = condition.reason in ("SomePodsMissing", "NoReports")
        if missing and (before is None or before[1] != condition.reason):
            events.warn("MetricsMissing", _truncate(condition.message))
        elif (
            condition.reason == "AllPodsReporting"
            and before is not None
            and before[1]
            in (
                "SomePodsMissing",
                "NoReports",
            )
        ):
            events.info("MetricsRestored", _truncate(condition.message))

    async def _write_status(self, tick: outcome.Tick) -> bool:
        deps = self._deps
        now = deps.clock()
        urgent, minor = outcome.summary(tick)
        due = (
            bool(self._history)
            or self._written is None
            or self._written[0] != urgent
            or (self._written[1] != minor and now - self._written_at >= deps.status_interval)
        )
        if not due:
            return False
        history = list(self._history)
        stamp = deps.wall()

        def mutate(obj: dict[str, Any]) -> Mapping[str, Any] | None:
            previous = obj.get("status") or {}
            return status.changes(previous, outcome.fields(previous, tick, history, stamp))

        namespace, name = self.key
        try:
            await deps.api.update_status(namespace, name, mutate)
        except kube.ApiError as error:
            log.warning(f"{namespace}/{name}: autoscaler status not written: {error}")
            return False
        del self._history[: len(history)]
        self._written = (urgent, minor)
        self._written_at = now
        return True


class Loops:
    """One `Loop` task per InferenceDeployment, started and stopped by watch events."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._running: dict[inventory.Key, tuple[Loop, asyncio.Task[None]]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._running

    async def sync(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """An InferenceDeployment watch event."""
        key = _key(body)
        going = event_type == _GONE or bool((body.get("metadata") or {}).get("deletionTimestamp"))
        if going:
            await self.stop(key)
            return
        running = self._running.get(key)
        if running is not None:
            running[0].update(body)
            return
        loop = Loop(body, self.deps)
        task = asyncio.create_task(loop.run(), name=f"autoscale {key[0]}/{key[1]}")
        self._running[key] = (loop, task)
        log.info(f"{key[0]}/{key[1]}: autoscaler started")

    def pod_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A pod watch event: keeps the inventory current."""
        self.deps.inventory.apply(event_type, body, self.deps.clock())

    async def stop(self, key: inventory.Key) -> None:
        await self._stop([key])

    async def stop_all(self) -> None:
        """Stops every loop at once: all are cancelled before any is waited for. One at a time,
        a fleet of 50 on a saturated machine took minutes (each cancelled tick unwinding out
        of an API call), and an operator that lost its lease kept ticking, a second writer,
        all that while (docs/reliability.md, scenario 8)."""
        await self._stop(list(self._running))

    async def _stop(self, keys: Sequence[inventory.Key]) -> None:
        stopping = [(key, running) for key in keys if (running := self._running.pop(key, None))]
        for _, (_, task) in stopping:
            task.cancel()
        await asyncio.gather(*(task for _, (_, task) in stopping), return_exceptions=True)
        for key, _ in stopping:
            self.deps.inventory.forget(key)
            self.deps.metrics.forget(*key)
            log.info(f"{key[0]}/{key[1]}: autoscaler stopped")
