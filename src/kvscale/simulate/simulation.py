"""The event loop: a trace through a fleet under one policy, on explicit time. Pure.

Events, in time order: pods becoming ready, the gateway's refresh of its view of the pods
(every `routing_refresh_s`), timeline samples, policy ticks, arrivals (in that order when they
share a time). Before a refresh, a sample or a tick at `t`, every engine with work runs every
step that starts before `t` (`EngineTwin.advance_until`, which jumps over runs of plain decode
steps), so what is observed is the engines' state at `t`. Arrivals in between only queue the
request in the chosen engine: an engine twin may lag behind the clock and catch up later,
because it never admits a request before its arrival time. That keeps the cost near
O(events) rather than O(arrivals x pods). A request that finds no ready pod waits at the
gateway until one is ready (its TTFT counts that wait). After the last arrival the policy
keeps ticking until every request has finished.

Requests longer than the model's context are cut to fit it, output first kept: the prompt
becomes max_model_len - output tokens (at least 1), and an output of max_model_len or more
becomes max_model_len - 1 after a one-token prompt. `Result.num_truncated` counts them.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import math
from collections.abc import Callable, Sequence

from kvscale import trace
from kvscale.simulate import fleet, latency
from kvscale.simulate import policy as policy_
from kvscale.twin import request


@dataclasses.dataclass(frozen=True)
class Settings:
    """One simulation run, apart from its trace and its policy."""

    fleet: fleet.Settings
    min_replicas: int = 1
    max_replicas: int = 16
    initial_replicas: int | None = None
    """Pods ready at t = 0 (default: min_replicas). 0 is a cold start: min_replicas pods are
    asked for at t = 0 and requests wait at the gateway until the first is ready."""
    slo: latency.Slo = dataclasses.field(default_factory=latency.Slo)
    timeline_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"min_replicas = {self.min_replicas}, max_replicas = {self.max_replicas}: "
                "must be 1 <= min_replicas <= max_replicas"
            )
        initial = self.initial_replicas
        if (
            initial is not None
            and initial != 0
            and not self.min_replicas <= initial <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas = {initial}, must be 0 (a cold start) or within "
                f"[{self.min_replicas}, {self.max_replicas}]"
            )
        if not self.timeline_interval_s > 0:
            raise ValueError(f"timeline_interval_s = {self.timeline_interval_s!r}, must be > 0")


@dataclasses.dataclass(frozen=True)
class Point:
    """The fleet at one moment, for the timeline plot."""

    time: float
    replicas: int
    """Pods wanted (starting or ready)."""
    ready: int
    occupancy: float
    """Mean KV-cache usage of the ready pods (vllm:kv_cache_usage_perc), 0-1."""
    demand: float
    """Mean KV demand of the ready pods (used + waiting blocks) / capacity."""
    waiting: int
    """Requests waiting in the engines and at the gateway."""
    inflight: int
    """Requests arrived and not finished."""


@dataclasses.dataclass(frozen=True)
class Result:
    """What one run gives."""

    policy: str
    settings: str
    """The policy's settings in one line."""
    num_requests: int
    num_truncated: int
    duration_s: float
    """From the first arrival to the last token."""
    gpu_hours: float
    latency: latency.Summary
    num_preemptions: int
    num_scale_ups: int
    num_scale_downs: int
    num_direction_changes: int
    """Scale actions in the other direction than the one before (up then down, or back)."""
    max_replicas: int
    """The most pods wanted at once."""
    max_ready: int
    timeline: tuple[Point, ...]
    num_engine_steps: int

    @property
    def mean_replicas(self) -> float:
        """GPU-hours over the duration, per GPU of a pod: the time-averaged fleet size."""
        return self.gpu_hours * 3600.0 / self.duration_s if self.duration_s > 0 else math.nan


def fit(req: trace.TraceRequest, max_model_len: int) -> tuple[int, int]:
    """(prompt, output) tokens cut to fit the context (see the module docstring)."""
    prompt, output = req.prompt_tokens, req.output_tokens
    if prompt + output <= max_model_len:
        return prompt, output
    if output >= max_model_len:
        return 1, max_model_len - 1
    return max(1, max_model_len - output), output


def count_cut(requests: Sequence[trace.TraceRequest], max_model_len: int) -> int:
    """How many of `requests` `fit` cuts to the context."""
    return sum(1 for req in requests if req.prompt_tokens + req.output_tokens > max_model_len)


class _Run:
    """The mutable state of one run; `simulate` is its only user."""

    def __init__(
        self,
        requests: Sequence[trace.TraceRequest],
        settings: Settings,
        policy: policy_.Policy,
        progress: Callable[[float], None] | None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.progress = progress
        self.fleet = fleet.Fleet(settings.fleet)
        self.recorder = latency.Recorder()
        config = settings.fleet.engine.resolve(settings.fleet.profile)
        self.max_model_len = config.max_model_len
        self.block_size = config.block_size
        self.requests = requests
        self.arrivals = [req.arrival_s for req in requests]
        self.gateway: collections.deque[int] = collections.deque()
        self.ready_events: list[tuple[float, int]] = []
        self.num_inflight = 0
        self.num_truncated = 0
        self.num_preemptions = 0
        self.num_scale_ups = 0
        self.num_scale_downs = 0
        self.num_direction_changes = 0
        self._last_direction = 0
        self.max_wanted = 0
        self.last_finish = 0.0
        self.timeline: list[Point] = []

    # --- the fleet -------------------------------------------------------------------------

    def _add_pod(self, now: float, *, ready_now: bool = False) -> None:
        pod = self.fleet.add(now, ready_now=ready_now)
        if not ready_now:
            heapq.heappush(self.ready_events, (pod.ready_at, pod.index))

    def _scale(self, now: float, scale: policy_.Scale) -> None:
        s = self.settings
        wanted = self.fleet.wanted()
        current = len(wanted)
        desired = min(max(scale.desired, s.min_replicas), s.max_replicas)
        direction = (desired > current) - (desired < current)
        if direction and self._last_direction and direction != self._last_direction:
            self.num_direction_changes += 1
        if direction:
            self._last_direction = direction
        if desired > current:
            self.num_scale_ups += 1
            for _ in range(desired - current):
                self._add_pod(now)
        elif desired < current:
            self.num_scale_downs += 1
            for pod in self._removal_order(now, wanted, scale.removal_order)[: current - desired]:
                self.fleet.remove(pod, now)
        self.max_wanted = max(self.max_wanted, desired)

    @staticmethod
    def _removal_order(
        now: float, wanted: list[fleet.Pod], preferred: tuple[str, ...]
    ) -> list[fleet.Pod]:
        """The ReplicaSet's order: pods not ready first (newest first), then the ready pods
        in the policy's preferred order (pod-deletion-cost), the rest newest first."""
        starting = [pod for pod in wanted if now < pod.ready_at]
        ready = [pod for pod in wanted if now >= pod.ready_at]
        rank = {name: index for index, name in enumerate(preferred)}
        starting.sort(key=lambda pod: -pod.index)
        ready.sort(key=lambda pod: (rank.get(pod.name, len(rank)), -pod.index))
        return starting + ready

    # --- requests --------------------------------------------------------------------------

    def _route(self, index: int, now: float) -> bool:
        source = self.requests[index]
        prompt, output = fit(source, self.max_model_len)
        pod = self.fleet.route(now, -(-prompt // self.block_size))
        if pod is None:
            return False
        if (prompt, output) != (source.prompt_tokens, source.output_tokens):
            self.num_truncated += 1
        hashes = source.prefix_block_hashes[: prompt // self.block_size]
        pod.twin.add_request(request.Request(str(index), prompt, output, hashes), now)
        pod.num_inflight += 1
        return True

    def _advance(self, t: float) -> None:
        recorder = self.recorder
        for pod in self.fleet.pods:
            if pod.gone_at is not None or pod.num_inflight == 0:
                continue
            result = pod.twin.advance_until(t)
            if result.itl:
                recorder.gaps(result.itl)
                for gap, count in result.itl:
                    pod.itl.observe(gap, count)
            for req in result.first_tokens:
                assert req.first_token_time is not None
                pod.ttft.observe(req.first_token_time - req.arrival_time)
            self.num_preemptions += len(result.preempted)
            for req in result.finished:
                first, finish = req.first_token_time, req.finish_time
                assert first is not None
                assert finish is not None
                ttft = first - self.arrivals[int(req.request_id)]
                mean_itl = (finish - first) / (req.max_tokens - 1) if req.max_tokens > 1 else 0.0
                recorder.finished(ttft, mean_itl)
                if req.max_tokens > 1:  # as vLLM: one-token requests have no decode pace
                    pod.tpot.observe(mean_itl)
                self.last_finish = max(self.last_finish, finish)
            if result.finished:
                pod.num_inflight -= len(result.finished)
                self.num_inflight -= len(result.finished)
                if pod.removed_at is not None:
                    self.fleet.settle(pod)

    # --- observation -----------------------------------------------------------------------

    def _view(self, now: float) -> policy_.View:
        pods = []
        for pod in self.fleet.live():
            state = pod.state(now)
            metrics = None if state is fleet.State.STARTING else pod.twin.metrics()
            pods.append(
                policy_.PodView(
                    pod.name,
                    state,
                    pod.ready_at,
                    pod.num_inflight,
                    metrics,
                    requested_at=pod.requested_at,
                    latency=None if metrics is None else (pod.ttft, pod.itl, pod.tpot),
                )
            )
        return policy_.View(now, len(self.fleet.wanted()), tuple(pods))

    def _sample(self, now: float) -> None:
        ready = self.fleet.ready(now)
        occupancy = [pod.twin.scheduler.kv.gpu_pool.usage for pod in ready]
        demands = [pod.kv_demand() for pod in ready]
        waiting = len(self.gateway) + sum(
            len(pod.twin.scheduler.waiting) for pod in self.fleet.live()
        )
        self.timeline.append(
            Point(
                time=now,
                replicas=len(self.fleet.wanted()),
                ready=len(ready),
                occupancy=math.fsum(occupancy) / len(occupancy) if occupancy else 0.0,
                demand=math.fsum(demands) / len(demands) if demands else 0.0,
                waiting=waiting,
                inflight=self.num_inflight,
            )
        )

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> Result:
        s = self.settings
        initial = s.min_replicas if s.initial_replicas is None else s.initial_replicas
        for _ in range(initial or s.min_replicas):
            self._add_pod(0.0, ready_now=initial > 0)
        self.max_wanted = initial or s.min_replicas
        num_requests = len(self.requests)
        next_arrival = 0
        next_tick = 0.0
        next_sample = 0.0
        tick_s = self.policy.tick_s
        end_hint = self.arrivals[-1] if self.arrivals else 0.0
        next_report = 0.0
        refresh_s = s.fleet.routing_refresh_s
        next_refresh = 0.0
        inf = math.inf
        while next_arrival < num_requests or self.num_inflight > 0 or self.gateway:
            t_arrival = self.arrivals[next_arrival] if next_arrival < num_requests else inf
            t_ready = self.ready_events[0][0] if self.ready_events else inf
            t_observe = min(next_refresh, next_tick, next_sample)
            t = min(t_arrival, t_ready, t_observe)
            if t >= t_observe:
                self._advance(t)
                self.fleet.refresh()
                while next_refresh <= t:
                    next_refresh += refresh_s
            while self.ready_events and self.ready_events[0][0] <= t:
                heapq.heappop(self.ready_events)
                while self.gateway and self._route(self.gateway[0], t):
                    self.gateway.popleft()
            if t >= next_sample:
                self._sample(t)
                next_sample += s.timeline_interval_s
            if t >= next_tick:
                self._scale(t, self.policy.decide(self._view(t)))
                next_tick += tick_s
            while next_arrival < num_requests and self.arrivals[next_arrival] <= t:
                self.num_inflight += 1
                if self.gateway or not self._route(next_arrival, t):
                    self.gateway.append(next_arrival)
                next_arrival += 1
            if self.progress is not None and t >= next_report:
                self.progress(min(t, end_hint))
                next_report = t + max(1.0, end_hint / 200)
        end = max(self.last_finish, end_hint)
        for pod in self.fleet.pods:
            self.fleet.settle(pod)
        if self.progress is not None:
            self.progress(end_hint)
        return Result(
            policy=self.policy.name,
            settings=policy_.describe(self.policy),
            num_requests=num_requests,
            num_truncated=self.num_truncated,
            duration_s=end,
            gpu_hours=self.fleet.gpu_hours(end),
            latency=self.recorder.summary(s.slo),
            num_preemptions=self.num_preemptions,
            num_scale_ups=self.num_scale_ups,
            num_scale_downs=self.num_scale_downs,
            num_direction_changes=self.num_direction_changes,
            max_replicas=self.max_wanted,
            max_ready=max((point.ready for point in self.timeline), default=initial),
            timeline=tuple(self.timeline),
            num_engine_steps=sum(pod.twin.num_steps_total for pod in self.fleet.pods),
        )


def simulate(
    requests: Sequence[trace.TraceRequest],
    settings: Settings,
    policy: policy_.Policy,
    progress: Callable[[float], None] | None = None,
) -> Result:
    """Replay `requests` (sorted by arrival) through a fleet under `policy`.

    `progress`, when given, is called now and then with the simulated time reached (seconds of
    trace), for a progress bar.
    """
    if any(b.arrival_s < a.arrival_s for a, b in itertools.pairwise(requests)):
        raise ValueError("requests must be sorted by arrival_s")
    return _Run(requests, settings, policy, progress).run()
