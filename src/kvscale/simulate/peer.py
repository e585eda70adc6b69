"""Today's peers as baselines of `kvscale simulate`: llm-d, Dynamo, and HPA on real CPU. Pure.

Each class follows its peer's documentation, not its code (none is copied); the numbers are
the peer's defaults, each overridable with `--set` (docs/simulation.md lists the keys).

- `LlmdSaturation`: llm-d workload-variant-autoscaler's saturation analyzer
  (github.com/llm-d/llm-d-workload-variant-autoscaler, docs/saturation-analyzer.md, "Analysis
  Algorithm" steps 1-5 and "Decision Logic"; docs/capacity-scaling-config.md, the defaults
  table). Every reconcile (60 s) it reads each pod's peak KV usage and peak queue length over
  the last minute (Prometheus `max_over_time[1m]`, "Prometheus Queries"); a pod is saturated at
  KV >= 0.80 or queue >= 5; over the non-saturated pods it averages the spare KV (0.80 - KV)
  and spare queue (5 - queue); it adds one replica to the ready count when the spare KV is
  under 0.10 or the spare queue under 3, and removes one when the load of the non-saturated
  pods spread over one pod fewer still leaves both spares at or above their triggers and at
  least 2 pods are non-saturated. It does nothing while a pod is pending (starting). Modelled
  choices: with every pod saturated the spare is taken as none (scale up); Prometheus scrapes
  every 15 s; the HPA it acts through is taken as applying its target directly.
- `DynamoReactive`: NVIDIA Dynamo planner's load-based (reactive) decode scaling (Dynamo docs,
  "Planner" and "Load-based Planner" pages, docs.nvidia.com/dynamo):
  every 5 s (`adjustment-interval`) it compares the mean per-worker KV load,
  (scheduled + queued KV) / capacity, averaged over the metric pulls (1 s) of the interval,
  with a target: above 1.0 x target it scales up to ceil(workers x load / target), at most 8
  more per step; below 0.6 x target it removes one worker. It blocks while workers are being
  added. The queued KV is estimated from the waiting requests at the running requests' mean
  blocks (vLLM exports no waiting blocks).
- `HpaCpuBusy`: the HPA users run today on CPU utilization, with CPU as a vLLM pod shows it:
  the engine core process spins on one core whenever it has a request in flight (it waits on
  the GPU by polling), and the API server adds tokenization, prompt tokens / a tokenizer's
  tokens per second per core. Utilization = (busy + tokenization) / the pod's CPU request.
  Busy means the engine had work at some time since the last sync (tokens advanced or requests
  in flight now). Defaults: 2 cores requested, target 80% (OME's default HPA, ANCHORS), a
  tokenizer at 1M tokens/s per core (an assumption, a fast Rust tokenizer). `hpa-cpu`
  (tokens/s against a calibrated maximum) stays as the generous upper bound of what any CPU
  signal could do.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from kvscale.simulate import fleet, hpa
from kvscale.simulate import policy as policy_
from kvscale.twin import engine


def _kv_usage(metrics: engine.Metrics) -> float:
    capacity = metrics.num_gpu_blocks - 1
    return (capacity - metrics.num_free_blocks) / capacity if capacity > 0 else 0.0


def _ready(view: policy_.View) -> list[tuple[str, engine.Metrics]]:
    return [
        (pod.name, pod.metrics)
        for pod in view.pods
        if pod.state is fleet.State.READY and pod.metrics is not None
    ]


def _pending(view: policy_.View) -> bool:
    return any(pod.state is fleet.State.STARTING for pod in view.pods)


@dataclasses.dataclass(frozen=True)
class LlmdSettings:
    """llm-d's saturation-scaling ConfigMap defaults and its loop."""

    kv_cache_threshold: float = 0.80
    queue_length_threshold: float = 5.0
    kv_spare_trigger: float = 0.10
    queue_spare_trigger: float = 3.0
    reconcile_s: float = 60.0
    window_s: float = 60.0  # max_over_time[1m]
    scrape_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0 < self.kv_cache_threshold <= 1:
            raise ValueError(f"kvCacheThreshold = {self.kv_cache_threshold!r}, must be in (0, 1]")
        if not 0 <= self.kv_spare_trigger < self.kv_cache_threshold:
            raise ValueError(
                f"kvSpareTrigger = {self.kv_spare_trigger!r}, must be in [0, kvCacheThreshold)"
            )
        if not 0 <= self.queue_spare_trigger < self.queue_length_threshold:
            raise ValueError(
                f"queueSpareTrigger = {self.queue_spare_trigger!r}, must be in "
                "[0, queueLengthThreshold)"
            )
        for name in ("reconcile_s", "window_s", "scrape_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} = {getattr(self, name)!r}, must be > 0")


class LlmdSaturation:
    """llm-d's saturation analyzer: +1 / -1 replica per 60 s reconcile (see the module doc)."""

    name = "llmd-saturation"

    def __init__(self, config: LlmdSettings, *, min_replicas: int, max_replicas: int) -> None:
        self.config = config
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        # pod -> (scrape time, KV usage, queue length), the last window's scrapes.
        self._scrapes: dict[str, collections.deque[tuple[float, float, int]]] = {}
        self._next_reconcile = 0.0
        self.last_reason = ""

    @property
    def tick_s(self) -> float:
        return self.config.scrape_s

    def describe(self) -> str:
        c = self.config
        return (
            f"saturated at KV>={c.kv_cache_threshold:g} or queue>={c.queue_length_threshold:g}; "
            f"up when spare KV<{c.kv_spare_trigger:g} or spare queue<{c.queue_spare_trigger:g}; "
            f"+-1 per {c.reconcile_s:g}s on max over {c.window_s:g}s"
        )

    def _scrape(self, now: float, ready: list[tuple[str, engine.Metrics]]) -> None:
        seen = set()
        for name, metrics in ready:
            seen.add(name)
            points = self._scrapes.setdefault(name, collections.deque())
            points.append((now, _kv_usage(metrics), metrics.num_requests_waiting))
            while points and points[0][0] <= now - self.config.window_s:
                points.popleft()
        for gone in set(self._scrapes) - seen:
            del self._scrapes[gone]

    def peaks(self) -> list[tuple[float, float]]:
        """Each pod's (peak KV usage, peak queue length) over the window."""
        return [
            (max(p[1] for p in points), float(max(p[2] for p in points)))
            for points in self._scrapes.values()
            if points
        ]

    def target(self, num_ready: int, peaks: list[tuple[float, float]]) -> tuple[int, str]:
        """The ready count plus one, minus one or unchanged, and why."""
        c = self.config
        free = [
            (kv, queue)
            for kv, queue in peaks
            if kv < c.kv_cache_threshold and queue < c.queue_length_threshold
        ]
        if not free:
            return num_ready + 1, "every replica saturated"
        spare_kv = math.fsum(c.kv_cache_threshold - kv for kv, _ in free) / len(free)
        spare_queue = math.fsum(c.queue_length_threshold - q for _, q in free) / len(free)
        if spare_kv < c.kv_spare_trigger or spare_queue < c.queue_spare_trigger:
            return num_ready + 1, "spare capacity low"
        if len(free) >= 2:
            remaining = len(free) - 1
            kv_after = c.kv_cache_threshold - math.fsum(kv for kv, _ in free) / remaining
            queue_after = c.queue_length_threshold - math.fsum(q for _, q in free) / remaining
            if kv_after >= c.kv_spare_trigger and queue_after >= c.queue_spare_trigger:
                return num_ready - 1, "scale-down safe"
        return num_ready, "steady"

    def decide(self, view: policy_.View) -> policy_.Scale:
        ready = _ready(view)
        self._scrape(view.now, ready)
        if view.now < self._next_reconcile - 1e-9:
            return policy_.Scale(view.current)
        self._next_reconcile = view.now + self.config.reconcile_s
        if _pending(view):
            self.last_reason = "pods pending"
            return policy_.Scale(view.current)
        if not ready:
            return policy_.Scale(view.current)
        desired, self.last_reason = self.target(len(ready), self.peaks())
        desired = min(max(desired, self.min_replicas), self.max_replicas)
        return policy_.Scale(desired, reason=self.last_reason)


@dataclasses.dataclass(frozen=True)
class DynamoSettings:
    """Dynamo's load-based planner: thresholds are shares of the target KV load."""

    target_kv_load: float = 0.9
    scale_up_ratio: float = 1.0
    scale_down_ratio: float = 0.6
    adjustment_interval_s: float = 5.0
    metric_pull_s: float = 1.0
    max_step: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.target_kv_load <= 1:
            raise ValueError(f"targetKvLoad = {self.target_kv_load!r}, must be in (0, 1]")
        if not 0 < self.scale_down_ratio < self.scale_up_ratio:
            raise ValueError(
                f"scaleDownRatio = {self.scale_down_ratio!r}, must be in (0, scaleUpRatio)"
            )
        if not self.adjustment_interval_s >= self.metric_pull_s > 0:
            raise ValueError(
                f"adjustmentIntervalSeconds = {self.adjustment_interval_s!r}, must be >= the "
                f"metric pull ({self.metric_pull_s!r}) > 0"
            )
        if not self.max_step >= 1:
            raise ValueError(f"maxStep = {self.max_step!r}, must be >= 1")


def kv_load(metrics: engine.Metrics) -> float:
    """(Used + queued blocks) / capacity, the queued blocks estimated at the running requests'
    mean blocks each."""
    capacity = metrics.num_gpu_blocks - 1
    if capacity <= 0:
        return 0.0
    used = capacity - metrics.num_free_blocks
    per_request = used / metrics.num_requests_running if metrics.num_requests_running else 0.0
    return (used + metrics.num_requests_waiting * per_request) / capacity


class DynamoReactive:
    """Dynamo's reactive planner on per-worker KV load (see the module doc)."""

    name = "dynamo-reactive"

    def __init__(self, config: DynamoSettings, *, min_replicas: int, max_replicas: int) -> None:
        self.config = config
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self._loads: list[float] = []
        self._next_adjust = config.adjustment_interval_s

    @property
    def tick_s(self) -> float:
        return self.config.metric_pull_s

    def describe(self) -> str:
        c = self.config
        return (
            f"target KV load {c.target_kv_load:g}, up >{c.scale_up_ratio:g}x (at most "
            f"+{c.max_step}), down <{c.scale_down_ratio:g}x (-1), every "
            f"{c.adjustment_interval_s:g}s"
        )

    def target(self, workers: int, load: float) -> int:
        """Workers for a mean KV load, before the bounds."""
        c = self.config
        ratio = load / c.target_kv_load
        if ratio > c.scale_up_ratio:
            return min(math.ceil(workers * ratio - 1e-9), workers + c.max_step)
        if ratio < c.scale_down_ratio:
            return workers - 1
        return workers

    def decide(self, view: policy_.View) -> policy_.Scale:
        ready = _ready(view)
        if _pending(view):
            # Blocked while workers are added: no pulls, no adjustment.
            self._loads.clear()
            self._next_adjust = view.now + self.config.adjustment_interval_s
            return policy_.Scale(view.current)
        if ready:
            self._loads.append(math.fsum(kv_load(m) for _, m in ready) / len(ready))
        if view.now < self._next_adjust - 1e-9:
            return policy_.Scale(view.current)
        self._next_adjust = view.now + self.config.adjustment_interval_s
        if not self._loads or not ready:
            return policy_.Scale(view.current)
        load = math.fsum(self._loads) / len(self._loads)
        self._loads.clear()
        desired = self.target(len(ready), load)
        return policy_.Scale(min(max(desired, self.min_replicas), self.max_replicas))


@dataclasses.dataclass(frozen=True)
class CpuModel:
    """CPU of a vLLM pod: one spinning engine core when busy, plus tokenization."""

    cpu_request_cores: float = 2.0
    target_utilization: float = 80.0
    tokenizer_tokens_per_second: float = 1e6

    def __post_init__(self) -> None:
        if not self.cpu_request_cores > 0:
            raise ValueError(f"cpuRequest = {self.cpu_request_cores!r}, must be > 0")
        if not 0 < self.target_utilization <= 100:
            raise ValueError(
                f"targetUtilization = {self.target_utilization!r}, must be in (0, 100]"
            )
        if not self.tokenizer_tokens_per_second > 0:
            raise ValueError(
                f"tokenizerTokensPerSecond = {self.tokenizer_tokens_per_second!r}, must be > 0"
            )

    def utilization(self, busy: bool, prompt_tokens_per_second: float) -> float:
        """Percent of the pod's CPU request."""
        cores = (1.0 if busy else 0.0) + prompt_tokens_per_second / self.tokenizer_tokens_per_second
        return 100.0 * cores / self.cpu_request_cores


class HpaCpuBusy:
    """The HPA on a vLLM pod's real CPU utilization (see the module doc)."""

    name = "hpa-cpu-busy"

    def __init__(self, config: hpa.Settings, cpu: CpuModel = CpuModel()) -> None:
        self.config = config
        self.cpu = cpu
        self.behavior = hpa.Behavior(config)
        self._last: dict[str, tuple[float, int, int]] = {}  # pod -> (time, prompt, all tokens)

    @property
    def tick_s(self) -> float:
        return self.config.sync_period_s

    def describe(self) -> str:
        c = self.cpu
        return (
            f"target={c.target_utilization:g}% of {c.cpu_request_cores:g} cores (1 core busy "
            f"+ prompt tokens / {c.tokenizer_tokens_per_second:g} per core) "
            f"sync={self.config.sync_period_s:g}s "
            f"downStabilization={self.config.scale_down_stabilization_s:g}s"
        )

    def utilizations(self, view: policy_.View) -> tuple[list[float], int]:
        """CPU utilization (%) of the ready pods with a full sample, and how many are unready."""
        ready: list[float] = []
        unready = 0
        seen: dict[str, tuple[float, int, int]] = {}
        for pod in view.pods:
            if pod.state is fleet.State.STARTING:
                unready += 1
            if pod.state is not fleet.State.READY or pod.metrics is None:
                continue
            m = pod.metrics
            prompt, total = m.prompt_tokens_total, m.prompt_tokens_total + m.generation_tokens_total
            seen[pod.name] = (view.now, prompt, total)
            before = self._last.get(pod.name)
            if before is None or view.now <= before[0]:
                unready += 1
                continue
            busy = total > before[2] or m.num_requests_running + m.num_requests_waiting > 0
            rate = (prompt - before[1]) / (view.now - before[0])
            ready.append(self.cpu.utilization(busy, rate))
        self._last = seen
        return ready, unready

    def decide(self, view: policy_.View) -> policy_.Scale:
        ready, unready = self.utilizations(view)
        raw = hpa.resource_replicas(
            view.current, ready, unready, self.cpu.target_utilization, self.config.tolerance
        )
        return policy_.Scale(self.behavior.apply(view.now, view.current, raw))
