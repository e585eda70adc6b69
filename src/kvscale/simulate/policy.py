"""Scaling policies behind one small interface: kvscale's decision core and three baselines. Pure.

Every tick (`tick_s`), the simulation shows a policy a `View` of the fleet (each pod's state
and the numbers its engine exports) and sets the replicas the policy returns in a `Scale`.

- `kvscale`: the real `kvscale.scaling.decision.Autoscaler`, fed through the operator's own
  adapter (`kvscale.adapter`): each ready pod's sidecar is simulated, making the
  `kvscale.report.OccupancyReport` the real one would from the twin's /metrics numbers (used
  blocks from the usage ratio, running and waiting requests, preemptions per second over 5 s,
  prompt and generated tokens per second over 15 s: the sidecar's rate and throughput
  windows, with its `kvscale.rate` code); the adapter turns the reports into observations
  (starting pods `starting`, draining pods `terminating`). `Faults` make reports missing (no
  sample) or stale at random (seeded) to exercise the decision's missing-data rules.
- `hpa-cpu`: HPA on CPU utilization, CPU modelled as the pod's tokens per second (prompt and
  generated, over the last sync period) against a per-pod maximum.
- `keda-waiting`: KEDA's Prometheus scaler on `vllm:num_requests_waiting` with an
  AverageValue threshold per pod (vLLM production-stack's chart: threshold 5, polling 15 s,
  cooldown 360 s), i.e. an HPA on sum(waiting) / threshold.
- `knative-concurrency`: Knative's KPA on in-flight requests per pod.
- `static`: no autoscaling (a reference for capacity tests, not a peer).

`build(name, overrides)` makes one from a name and `key=value` overrides, each checked with a
message naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from typing import Any, Protocol

from kvscale import adapter, histogram, rate, report
from kvscale.scaling import capacity, decision, demand, sizing
from kvscale.scaling import settings as scaling_settings
from kvscale.simulate import fleet, hpa, kpa, latency
from kvscale.twin import engine

NAMES = (
    "kvscale",
    # kvscale with spec.slo set and no hand-set target: capacity learned live from the pods.
    "kvscale-slo",
    "hpa-cpu",
    "keda-waiting",
    "knative-concurrency",
    # Today's peers (kvscale.simulate.peer); oracle and static-peak need the trace and are
    # built by kvscale.simulate.oracle.
    "llmd-saturation",
    "dynamo-reactive",
    "hpa-cpu-busy",
)

# Per-pod targets of the baselines when not set, from `kvscale simulate --calibrate` on the
# Azure conversation trace with Llama-3-8B on one H100 (docs/simulation.md, "Tuning"): one pod
# meets the SLO up to 18.8 req/s of that mix, 24,000 tokens/s; at 70% of that load it holds
# 37.5 requests in flight. 70% is the target utilization Knative uses by default (HPA users
# commonly pick 50-80%). Other traces, models or GPUs: run --calibrate, or --set them.
DEFAULT_MAX_TOKENS_PER_SECOND = 24_000.0
DEFAULT_TARGET_UTILIZATION = 70.0
DEFAULT_KNATIVE_TARGET = 37.5
DEFAULT_KEDA_THRESHOLD = 5.0  # production-stack's chart
RATE_WINDOW_S = 5.0  # the sidecar's --rate-window default (preemptions)
THROUGHPUT_WINDOW_S = 15.0  # the sidecar's --throughput-window default (tokens)
LATENCY_WINDOW_S = 30.0  # the sidecar's --latency-window default (TTFT, ITL histograms)
# kvscale-slo reads the run's SLO (a request's TTFT and mean ITL within their targets) as
# spec.slo's targets at this percentile of the engines' histograms (`slo.percentile=90` sets
# another); `slo.headroom` is sizing.Settings.headroom.
DEFAULT_SLO_PERCENTILE = 0.95
SLO_PERCENTILE_KEY = "percentile"
SLO_HEADROOM_KEY = "headroom"
THROUGHPUT_WINDOW_KEY = "throughputWindowSeconds"  # a kvscale override that sets it
Latency = tuple[histogram.Recorder, histogram.Recorder, histogram.Recorder]
"""An engine's TTFT, inter-token latency and time-per-output-token histograms."""


@dataclasses.dataclass(frozen=True)
class PodView:
    """One pod as a policy sees it at a tick."""

    name: str
    state: fleet.State
    ready_at: float
    num_inflight: int
    """Requests routed to the pod and not finished (what a queue-proxy counts)."""
    metrics: engine.Metrics | None
    """What the engine exports; None while it is starting."""
    requested_at: float | None = None
    """When the pod was asked for."""
    latency: Latency | None = None
    """Its engine's TTFT, inter-token latency and time-per-output-token histograms (read them
    with `snapshot`: a scrape); None while it is starting."""


@dataclasses.dataclass(frozen=True)
class View:
    """The fleet at one tick."""

    now: float
    current: int
    """spec.replicas: pods starting or ready, not those draining."""
    pods: tuple[PodView, ...]

    @property
    def num_ready(self) -> int:
        return sum(1 for pod in self.pods if pod.state is fleet.State.READY)


@dataclasses.dataclass(frozen=True)
class Scale:
    """A policy's answer: the replicas to set, and which ready pods to remove first."""

    desired: int
    removal_order: tuple[str, ...] = ()
    """Ready pods, cheapest to remove first; empty: the ReplicaSet's own order (newest first)."""
    reason: str = ""


class Policy(Protocol):
    """What the simulation needs of a policy."""

    @property
    def name(self) -> str: ...

    @property
    def tick_s(self) -> float: ...

    def decide(self, view: View) -> Scale: ...


@dataclasses.dataclass(frozen=True)
class Faults:
    """Report faults for the kvscale policy: each ready pod's report, at each tick, is
    missing with probability `missing`, else stale (older than the staleness limit) with
    probability `stale`. Seeded, so a run is reproducible."""

    missing: float = 0.0
    stale: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("missing", "stale"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} = {value!r}, must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class _Engine:
    """A pod as `kvscale.adapter` sees it (the operator's reads Pod objects)."""

    name: str
    uid: str
    phase: demand.Phase
    created_at: float | None = None
    ready_since: float | None = None


class _Sidecar:
    """One pod's sidecar as the simulator runs it: the twin's numbers in, reports out.

    The report carries what the sidecar's would from the same numbers on the engine's
    /metrics (`kvscale_sidecar.sampler`): the used blocks, the requests, the counters and
    their rates over the sidecar's windows (`kvscale.rate`, the sidecar's own code).
    """

    def __init__(self, pod: str, throughput_window_s: float) -> None:
        self.pod = pod
        self._preemptions = rate.CounterWindow(RATE_WINDOW_S)
        self._prompt_tokens = rate.CounterWindow(throughput_window_s)
        self._generation_tokens = rate.CounterWindow(throughput_window_s)
        self._ttft = histogram.Window(LATENCY_WINDOW_S)
        self._itl = histogram.Window(LATENCY_WINDOW_S)
        self._tpot = histogram.Window(LATENCY_WINDOW_S)

    def observe(
        self,
        now: float,
        metrics: engine.Metrics,
        latency: Latency | None = None,
    ) -> None:
        """A scrape of the engine at `now` (the twin never restarts: no counter reset)."""
        self._preemptions.observe(now, metrics.num_preemptions_total)
        self._prompt_tokens.observe(now, metrics.prompt_tokens_total)
        self._generation_tokens.observe(now, metrics.generation_tokens_total)
        if latency is not None:
            self._ttft.observe(now, latency[0].snapshot())
            self._itl.observe(now, latency[1].snapshot())
            self._tpot.observe(now, latency[2].snapshot())

    def serve(self, now: float, metrics: engine.Metrics, age_s: float) -> report.OccupancyReport:
        """The report served at `now` about the sample taken `age_s` ago."""
        usable = metrics.num_gpu_blocks - 1
        used = usable - metrics.num_free_blocks
        preemptions = self._preemptions.rate()
        prompt_tokens = self._prompt_tokens.rate()
        generation_tokens = self._generation_tokens.rate()
        token_window = prompt_tokens or generation_tokens
        return report.OccupancyReport(
            pod=self.pod,
            health=report.Health.OK,
            sampled_at=now - age_s,
            checked_at=now - age_s,
            served_at=now,
            age_seconds=age_s,
            block_size=metrics.block_size,
            num_gpu_blocks=metrics.num_gpu_blocks,
            # The twin's used blocks: what the sidecar reads back from its usage ratio.
            num_used_blocks=used,
            usage_ratio=used / usable,
            kv_capacity_tokens=usable * metrics.block_size,
            num_requests_running=metrics.num_requests_running,
            num_requests_waiting=metrics.num_requests_waiting,
            preemptions_total=metrics.num_preemptions_total,
            preemptions_per_second=None if preemptions is None else preemptions.per_second,
            rate_window_seconds=None if preemptions is None else preemptions.window_seconds,
            prompt_tokens_total=metrics.prompt_tokens_total,
            generation_tokens_total=metrics.generation_tokens_total,
            prompt_tokens_per_second=None if prompt_tokens is None else prompt_tokens.per_second,
            generation_tokens_per_second=(
                None if generation_tokens is None else generation_tokens.per_second
            ),
            throughput_window_seconds=None if token_window is None else token_window.window_seconds,
            time_to_first_token=_window(self._ttft),
            inter_token_latency=_window(self._itl),
            time_per_output_token=_window(self._tpot),
        )

    def missing(self, now: float) -> report.OccupancyReport:
        """A report without a sample (a `Faults.missing` draw)."""
        return report.OccupancyReport(
            pod=self.pod,
            health=report.Health.UNREACHABLE,
            reason="simulated fault: no sample",
            served_at=now,
        )


def _window(latency: histogram.Window) -> report.LatencyWindow | None:
    change = latency.change()
    return None if change is None else report.LatencyWindow.of(change)


class Kvscale:
    """kvscale's decision core, fed through the operator's adapter (`kvscale.adapter`)."""

    name: str = "kvscale"

    def __init__(
        self,
        config: scaling_settings.ScalingSettings,
        faults: Faults = Faults(),
        throughput_window_s: float = THROUGHPUT_WINDOW_S,
        slo: sizing.Settings | None = None,
    ) -> None:
        if not (math.isfinite(throughput_window_s) and throughput_window_s > 0):
            raise ValueError(f"{THROUGHPUT_WINDOW_KEY} = {throughput_window_s!r}, must be > 0")
        self.config = config
        self.faults = faults
        self.throughput_window_s = throughput_window_s
        """The sidecars' token-rate window (`kvscale sidecar --throughput-window`)."""
        self.slo = slo
        """spec.slo as the decision reads it; None: the CR's targets alone."""
        if slo is not None:
            self.name = "kvscale-slo"
        self.autoscaler = decision.Autoscaler(config, slo)
        self._random = random.Random(faults.seed)
        self._sidecars: dict[str, _Sidecar] = {}
        self.reports = adapter.Reports()
        """Each pod's latest report, as the operator keeps them (by pod name: the uid here)."""
        self.last: decision.Decision | None = None

    @property
    def tick_s(self) -> float:
        return self.config.tick_seconds

    def _report(self, now: float, pod: PodView, metrics: engine.Metrics) -> report.OccupancyReport:
        """The pod's report this tick, faults applied (drawn after the sidecar's scrape)."""
        sidecar = self._sidecars.get(pod.name)
        if sidecar is None:
            sidecar = self._sidecars[pod.name] = _Sidecar(pod.name, self.throughput_window_s)
        sidecar.observe(now, metrics, pod.latency)
        draw = self._random.random() if self.faults.missing or self.faults.stale else 1.0
        if draw < self.faults.missing:
            return sidecar.missing(now)
        age = 0.0
        if draw < self.faults.missing + self.faults.stale:
            age = self.config.stale_after_seconds + 1.0
        return sidecar.serve(now, metrics, age)

    def observations(self, view: View) -> list[demand.Observation]:
        """One observation per pod, through the operator's adapter."""
        engines = []
        for pod in view.pods:
            # Pods the run began with were never started in it (Ready at once): they say
            # nothing about how long a pod takes to start, so they carry no creation time.
            created = (
                None
                if pod.requested_at is None or pod.ready_at <= pod.requested_at
                else pod.requested_at
            )
            if pod.state is fleet.State.STARTING:
                engines.append(_Engine(pod.name, pod.name, demand.Phase.STARTING, created))
            elif pod.state is fleet.State.DRAINING:
                engines.append(_Engine(pod.name, pod.name, demand.Phase.TERMINATING, created))
            elif pod.state is fleet.State.READY and pod.metrics is not None:
                found = self._report(view.now, pod, pod.metrics)
                self.reports.record(pod.name, adapter.Received(found, view.now))
                ready = _Engine(pod.name, pod.name, demand.Phase.READY, created, pod.ready_at)
                engines.append(ready)
        # Every ready pod is asked at every tick (the operator samples only large fleets).
        present = {known.uid for known in engines}
        self.reports.keep_only(present)
        for name in [name for name in self._sidecars if name not in present]:
            del self._sidecars[name]
        polled = {known.uid for known in engines if known.phase is demand.Phase.READY}
        return adapter.observations(engines, polled, self.reports)

    def decide(self, view: View) -> Scale:
        made = self.autoscaler.step(view.now, self.observations(view), view.current)
        self.last = made
        return Scale(made.desired, made.removal_order, made.reason.value)


class HpaCpu:
    """HPA on CPU utilization, CPU modelled as tokens per second against a per-pod maximum."""

    name = "hpa-cpu"

    def __init__(
        self,
        config: hpa.Settings,
        *,
        max_tokens_per_second: float = DEFAULT_MAX_TOKENS_PER_SECOND,
        target_utilization: float = DEFAULT_TARGET_UTILIZATION,
    ) -> None:
        if not max_tokens_per_second > 0:
            raise ValueError(f"maxTokensPerSecond = {max_tokens_per_second!r}, must be > 0")
        if not 0 < target_utilization <= 100:
            raise ValueError(f"targetUtilization = {target_utilization!r}, must be in (0, 100]")
        self.config = config
        self.max_tokens_per_second = max_tokens_per_second
        self.target_utilization = target_utilization
        self.behavior = hpa.Behavior(config)
        self._last: dict[str, tuple[float, int]] = {}  # pod -> (time, tokens total)

    @property
    def tick_s(self) -> float:
        return self.config.sync_period_s

    def utilizations(self, view: View) -> tuple[list[float], int]:
        """CPU utilization (%) of the ready pods with a full sample, and how many are unready.

        A pod's first sample after it became ready has nothing to compare with: like the
        HPA's CPU initialization rules, it counts as not ready for this sync.
        """
        ready: list[float] = []
        unready = 0
        seen: dict[str, tuple[float, int]] = {}
        for pod in view.pods:
            if pod.state is fleet.State.STARTING:
                unready += 1
            if pod.state is not fleet.State.READY or pod.metrics is None:
                continue
            tokens = pod.metrics.prompt_tokens_total + pod.metrics.generation_tokens_total
            seen[pod.name] = (view.now, tokens)
            before = self._last.get(pod.name)
            if before is None or view.now <= before[0]:
                unready += 1
                continue
            per_second = (tokens - before[1]) / (view.now - before[0])
            ready.append(100.0 * per_second / self.max_tokens_per_second)
        self._last = seen
        return ready, unready

    def decide(self, view: View) -> Scale:
        ready, unready = self.utilizations(view)
        raw = hpa.resource_replicas(
            view.current, ready, unready, self.target_utilization, self.config.tolerance
        )
        return Scale(self.behavior.apply(view.now, view.current, raw))


class KedaWaiting:
    """KEDA's Prometheus scaler on vllm:num_requests_waiting (AverageValue), through the HPA.

    The HPA asks KEDA's metrics server every sync period (15 s), which runs the query then;
    the value is sum(vllm:num_requests_waiting) over every engine pod still exporting metrics
    (ready and draining). KEDA's `cooldownPeriod` (360 s) only governs scaling to zero, which
    needs minReplicas = 0; with a floor of one pod the HPA's 300 s stabilization governs.
    """

    name = "keda-waiting"

    def __init__(self, config: hpa.Settings, *, threshold: float = DEFAULT_KEDA_THRESHOLD) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold = {threshold!r}, must be > 0")
        self.config = config
        self.threshold = threshold
        self.behavior = hpa.Behavior(config)

    @property
    def tick_s(self) -> float:
        return self.config.sync_period_s

    def decide(self, view: View) -> Scale:
        total = sum(
            pod.metrics.num_requests_waiting
            for pod in view.pods
            if pod.metrics is not None and pod.state is not fleet.State.STARTING
        )
        raw = hpa.external_average_replicas(
            view.current, float(total), self.threshold, self.config.tolerance
        )
        return Scale(self.behavior.apply(view.now, view.current, raw))


class KnativeConcurrency:
    """Knative's KPA on in-flight requests per pod; scrapes every second, decides every tick."""

    name = "knative-concurrency"
    tick_s = 1.0  # the scrape; the decision runs every `settings.tick_s`

    def __init__(self, config: kpa.Settings) -> None:
        self.config = config
        self.kpa = kpa.Kpa(config)
        self._next_decision = 0.0
        self._desired: int | None = None

    def decide(self, view: View) -> Scale:
        total = sum(pod.num_inflight for pod in view.pods if pod.state is fleet.State.READY)
        self.kpa.record(view.now, float(total))
        if self._desired is None or view.now >= self._next_decision - 1e-9:
            self._desired = self.kpa.decide(view.now, view.current, view.num_ready)
            self._next_decision = view.now + self.config.tick_s
        return Scale(self._desired)


class Static:
    """No autoscaling: the fleet keeps the pods it started with (a reference, not a peer)."""

    name = "static"
    tick_s = 60.0

    def decide(self, view: View) -> Scale:
        return Scale(view.current)


# --- building a policy from a name and overrides ----------------------------------------------

_HPA_KEYS = {
    "syncPeriodSeconds": "sync_period_s",
    "tolerance": "tolerance",
    "scaleDownStabilizationSeconds": "scale_down_stabilization_s",
    "scaleUpStabilizationSeconds": "scale_up_stabilization_s",
}
_KPA_KEYS = {
    "target": "target",
    "tickSeconds": "tick_s",
    "stableWindowSeconds": "stable_window_s",
    "panicWindowPercentage": "panic_window_percentage",
    "panicThresholdPercentage": "panic_threshold_percentage",
    "maxScaleUpRate": "max_scale_up_rate",
    "maxScaleDownRate": "max_scale_down_rate",
}
PREFIXES = {
    "kvscale": "",
    "kvscale-slo": "slo.",
    "hpa-cpu": "hpa.",
    "keda-waiting": "keda.",
    "knative-concurrency": "knative.",
    "llmd-saturation": "llmd.",
    "dynamo-reactive": "dynamo.",
    "hpa-cpu-busy": "cpu.",
    "oracle": "oracle.",
}
_LLMD_KEYS = {
    "kvCacheThreshold": "kv_cache_threshold",
    "queueLengthThreshold": "queue_length_threshold",
    "kvSpareTrigger": "kv_spare_trigger",
    "queueSpareTrigger": "queue_spare_trigger",
    "reconcileSeconds": "reconcile_s",
    "scrapeSeconds": "scrape_s",
}
_DYNAMO_KEYS = {
    "targetKvLoad": "target_kv_load",
    "scaleUpRatio": "scale_up_ratio",
    "scaleDownRatio": "scale_down_ratio",
    "adjustmentIntervalSeconds": "adjustment_interval_s",
    "maxStep": "max_step",
}
_CPU_KEYS = {
    "cpuRequest": "cpu_request_cores",
    "targetUtilization": "target_utilization",
    "tokenizerTokensPerSecond": "tokenizer_tokens_per_second",
}


def _fields(name: str, mine: Mapping[str, str], keys: Mapping[str, str]) -> dict[str, Any]:
    """Overrides mapped to dataclass fields; an unknown key is an error naming it."""
    values: dict[str, Any] = {}
    for key, text in mine.items():
        if key not in keys:
            raise ValueError(f"{PREFIXES[name]}{key}: unknown key, known: {', '.join(keys)}")
        value = _number(key, text)
        values[keys[key]] = int(value) if key == "maxStep" else value
    return values


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key} = {text!r}, must be a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{key} = {text!r}, must be a finite number")
    return value


def _kvscale_raw(key: str, text: str) -> float | int:
    value = _number(key, text)
    return int(value) if value.is_integer() else value


def overrides_for(name: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The overrides meant for policy `name`: unprefixed keys for kvscale, `hpa.`, `keda.`,
    `knative.` keys for the baselines; an unknown prefix is an error."""
    known = tuple(prefix for prefix in PREFIXES.values() if prefix)
    result = {}
    for key, value in overrides.items():
        prefix = next((p for p in known if key.startswith(p)), "")
        if "." in key and not prefix:
            raise ValueError(f"{key}: unknown prefix, must be one of {', '.join(known)} or none")
        if prefix == PREFIXES[name]:
            result[key[len(prefix) :]] = value
    return result


def build(
    name: str,
    *,
    min_replicas: int,
    max_replicas: int,
    overrides: Mapping[str, str] | None = None,
    faults: Faults = Faults(),
    slo: latency.Slo | None = None,
) -> Policy:
    """Policy `name` with the fleet's bounds and its own `key=value` overrides (see
    `overrides_for`); every bad key or value raises ValueError naming it. `slo` is the run's
    SLO, which kvscale-slo is given as spec.slo (and nothing else: no hand-set target)."""
    mine = overrides_for(name, overrides or {}) if name in PREFIXES else {}
    if name == "kvscale-slo":
        headroom = mine.pop(SLO_HEADROOM_KEY, None)
        percentile = mine.pop(SLO_PERCENTILE_KEY, None)
        raw_slo: dict[str, object] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
        raw_slo.update({key: _kvscale_raw(key, value) for key, value in mine.items()})
        stated = scaling_settings.validate(raw_slo)
        if isinstance(stated, list):
            raise ValueError("; ".join(stated))
        run_slo = slo or latency.Slo()
        q = DEFAULT_SLO_PERCENTILE
        if percentile is not None:
            q = _number(SLO_PERCENTILE_KEY, percentile) / 100
        # The run's ITL limit is on each request's mean inter-token latency: vLLM's
        # per-request time per output token (tpot), not its every-gap histogram (itl), whose
        # tail a prefill in the batch stretches while the requests keep their pace.
        objective = capacity.Objective(ttft=((q, run_slo.ttft_s),), tpot=((q, run_slo.itl_s),))
        sized = sizing.Settings(objective)
        if headroom is not None:
            sized = dataclasses.replace(sized, headroom=_number(SLO_HEADROOM_KEY, headroom))
        return Kvscale(stated, faults, slo=sized)
    if name == "kvscale":
        raw: dict[str, object] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
        # The one key that is the sidecar's, not the CR's: its --throughput-window.
        window = mine.pop(THROUGHPUT_WINDOW_KEY, None)
        raw.update({key: _kvscale_raw(key, value) for key, value in mine.items()})
        made = scaling_settings.validate(raw)
        if isinstance(made, list):
            raise ValueError("; ".join(made))
        if window is None:
            return Kvscale(made, faults)
        return Kvscale(made, faults, throughput_window_s=_number(THROUGHPUT_WINDOW_KEY, window))
    if name in ("hpa-cpu", "keda-waiting"):
        # Any: each value is a finite number here; the settings dataclass checks its range.
        hpa_values: dict[str, Any] = {}
        extra: dict[str, float] = {}
        extra_keys = (
            ("maxTokensPerSecond", "targetUtilization") if name == "hpa-cpu" else ("threshold",)
        )
        for key, text in mine.items():
            if key in _HPA_KEYS:
                hpa_values[_HPA_KEYS[key]] = _number(key, text)
            elif key in extra_keys:
                extra[key] = _number(key, text)
            else:
                known = ", ".join([*_HPA_KEYS, *extra_keys])
                raise ValueError(f"{PREFIXES[name]}{key}: unknown key, known: {known}")
        config = dataclasses.replace(
            hpa.Settings(min_replicas=min_replicas, max_replicas=max_replicas), **hpa_values
        )
        if name == "hpa-cpu":
            return HpaCpu(
                config,
                max_tokens_per_second=extra.get(
                    "maxTokensPerSecond", DEFAULT_MAX_TOKENS_PER_SECOND
                ),
                target_utilization=extra.get("targetUtilization", DEFAULT_TARGET_UTILIZATION),
            )
        return KedaWaiting(config, threshold=extra.get("threshold", DEFAULT_KEDA_THRESHOLD))
    if name == "knative-concurrency":
        kpa_values: dict[str, Any] = {"target": DEFAULT_KNATIVE_TARGET}  # as hpa_values
        for key, text in mine.items():
            if key not in _KPA_KEYS:
                raise ValueError(f"knative.{key}: unknown key, known: {', '.join(_KPA_KEYS)}")
            kpa_values[_KPA_KEYS[key]] = _number(key, text)
        base = kpa.Settings(
            target=kpa_values.pop("target"), min_replicas=min_replicas, max_replicas=max_replicas
        )
        return KnativeConcurrency(dataclasses.replace(base, **kpa_values))
    if name == "static":
        return Static()
    if name in ("llmd-saturation", "dynamo-reactive", "hpa-cpu-busy"):
        # Imported here: kvscale.simulate.peer builds on this module's View and Scale.
        from kvscale.simulate import peer

        bounds = {"min_replicas": min_replicas, "max_replicas": max_replicas}
        if name == "llmd-saturation":
            return peer.LlmdSaturation(
                peer.LlmdSettings(**_fields(name, mine, _LLMD_KEYS)), **bounds
            )
        if name == "dynamo-reactive":
            return peer.DynamoReactive(
                peer.DynamoSettings(**_fields(name, mine, _DYNAMO_KEYS)), **bounds
            )
        hpa_part = {k: v for k, v in mine.items() if k in _HPA_KEYS}
        cpu_part = {k: v for k, v in mine.items() if k not in _HPA_KEYS}
        config = dataclasses.replace(hpa.Settings(**bounds), **_fields(name, hpa_part, _HPA_KEYS))
        return peer.HpaCpuBusy(config, peer.CpuModel(**_fields(name, cpu_part, _CPU_KEYS)))
    raise ValueError(f"policy = {name!r}, must be one of {', '.join((*NAMES, 'static'))}")


def describe(policy: Policy) -> str:
    """The settings that matter, in one line (for tables and docs)."""
    if isinstance(policy, Kvscale):
        c = policy.config
        return (
            f"targetOccupancy={c.target_occupancy:g} tick={c.tick_seconds:g}s "
            f"stable={c.stable_window_seconds:g}s panic={c.panic_window_seconds:g}s "
            f"x{c.panic_threshold:g} up={c.max_scale_up_rate:g} down={c.max_scale_down_rate:g} "
            f"delay={c.scale_down_delay_seconds:g}s"
            + (
                f" targetTokensPerSecond={c.target_tokens_per_second:g}"
                if c.target_tokens_per_second is not None
                else ""
            )
            + (
                f" throughputWindow={policy.throughput_window_s:g}s"
                if policy.throughput_window_s != THROUGHPUT_WINDOW_S
                else ""
            )
        )
    if isinstance(policy, HpaCpu):
        return (
            f"target={policy.target_utilization:g}% of {policy.max_tokens_per_second:g} tok/s "
            f"sync={policy.config.sync_period_s:g}s "
            f"downStabilization={policy.config.scale_down_stabilization_s:g}s"
        )
    if isinstance(policy, KedaWaiting):
        return (
            f"threshold={policy.threshold:g} waiting/pod sync={policy.config.sync_period_s:g}s "
            f"downStabilization={policy.config.scale_down_stabilization_s:g}s"
        )
    if isinstance(policy, KnativeConcurrency):
        k = policy.config
        return (
            f"target={k.target:g} in-flight/pod tick={k.tick_s:g}s stable={k.stable_window_s:g}s "
            f"panic={k.panic_window_s:g}s x{k.panic_threshold_percentage / 100:g} "
            f"up={k.max_scale_up_rate:g} down={k.max_scale_down_rate:g}"
        )
    if isinstance(policy, Static):
        return "no autoscaling"
    # The peers and the oracle describe themselves.
    line = getattr(policy, "describe", None)
    return str(line()) if callable(line) else policy.name
