"""Scaling to the SLO the user states: the learned capacity as the decision's targets, and the
guards around it. Pure.

With `spec.slo` set, the decision (`kvscale.scaling.decision`) runs exactly as without it, on
targets this module sets at every tick from what `kvscale.scaling.capacity` learned of the
pods (no hand-set targets needed; the CR's targets only seed the learner):

- **Targets.** A pod's KV target is the learned KV capacity and its throughput target the
  learned compute capacity (tokens/s), each less `headroom` once a violation has shown where
  the SLO breaks (the estimate is then an upper bound, and the fleet keeps clear of it). Before
  any violation, an estimate is only a lower bound (the highest load seen to meet the SLO, or a
  prior): the target is the estimate itself, so pods run at it, samples above it teach the
  learner more, and the fleet does not stay sized for the first minutes' light load. The
  resource that needs more pods binds, and the decision's reason names it (occupancy: the KV
  cache; throughput: compute).
- **Safe scale-down.** A scale-down the decision wants is allowed only as far as the pods
  that stay can carry the whole fleet's load (the highest of the stable window) within their
  *scale-down* capacity less the headroom (`capacity.Estimate.scale_down_capacity`: the
  estimate when trusted, else a little above the highest load proven to meet the SLO): the
  removed pods' load lands on the survivors, N/(N-1), and they keep room for the next burst.
  A resource with no scale-down capacity (nothing proven yet) allows no scale-down at all:
  thin, missing or unproven latency never buys one. The decision's own rules still apply
  first: missing data never scales down, the scale-down delay, the rates; and in SLO mode it
  paces scale-downs, one per stable window (`decision.Autoscaler`).
- **Pressure relative to the target.** A pod with a queue (or preempting) counts as a pod just
  over its target, not as a full cache: with a low target, one short queue would otherwise buy
  the fleet 1 / target pods (a measured defect: 20 of 21 scale-ups on a long-context run were
  pressure, at occupancies of 0.11-0.29).
- **Ahead of a ramp.** On a scale-up, pods are added for the demand's growth over one start-up
  time, measured from this deployment's own pods (`kvscale.scaling.headroom`), so they are
  Ready when the ramp arrives.
- **Warm-up.** A pod's first `learning.warmup_seconds` after it became Ready teach nothing;
  a pod whose Ready time is unknown teaches nothing.

Time is an argument; nothing here reads a clock.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence

from kvscale.scaling import account, arith, capacity, demand, headroom, settings

RESOURCE_REASON = {capacity.Resource.KV: "KV cache", capacity.Resource.COMPUTE: "compute"}

GROWTH_SPAN_SHARE = 0.9
"""The share of the growth window the demand's history must span before a tick the band holds
scales up on the growth (ticks come about a second apart, so a full window spans a little
less than `growth_window_seconds`)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the fleet is sized to the SLO."""

    objective: capacity.Objective
    headroom: float = 0.2
    """Share of a pod's learned capacity kept free once the SLO's edge is known."""
    learning: capacity.Settings = dataclasses.field(default_factory=capacity.Settings)
    lead_prior_seconds: float = 120.0
    """Start-up time assumed until this deployment's own pods were seen starting."""
    growth_window_seconds: float = 60.0
    """The demand's slope is measured over this much recent history."""
    held_seconds: float = 15.0
    """A tick's demand inside the headroom (above the target, not above `Sizer.over_headroom`
    of it) scales up only as far as the demand held over this many seconds: the lowest tick
    of them. A burst shorter than this is what the headroom is kept for, and pods asked for it
    start after it is over (conv on an L4 bought 14 -> 37 pods in two minutes of bursts; the
    sidecars' tokens/s window and an HPA's sync period are 15 s). Above that line, with a pod
    queueing or preempting (users wait now), or before the capacity is learned (the line is
    the CR's guess), it scales at once."""
    edge_seconds: float = 300.0
    """How long a violation keeps the headroom on its resource's target. After that the
    target is the estimate itself again, so pods run at it and the learner sees whether
    the violation was the load's or a passing overload's (a queue built before a scale-up)."""
    latency_window_seconds: float = 60.0
    """How far back a pod's loads are kept to pair with its latency windows (at least the
    sidecars' --latency-window, 30 s by default)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.headroom < 1.0:
            raise ValueError(f"headroom = {self.headroom!r}, must be in [0, 1)")
        if not (math.isfinite(self.lead_prior_seconds) and self.lead_prior_seconds >= 0):
            raise ValueError(f"lead_prior_seconds = {self.lead_prior_seconds!r}, must be >= 0")
        if not self.growth_window_seconds > 0:
            raise ValueError(f"growth_window_seconds = {self.growth_window_seconds!r}, must be > 0")
        if not (math.isfinite(self.held_seconds) and self.held_seconds > 0):
            raise ValueError(f"held_seconds = {self.held_seconds!r}, must be > 0")


@dataclasses.dataclass(frozen=True)
class Loads:
    """The fleet's load this tick, from the ready pods' fresh samples (unpolled pods at their
    mean): KV demand in pods' worth of cache, tokens per second."""

    kv: float
    tokens_per_second: float | None
    fresh: int


@dataclasses.dataclass(frozen=True)
class Sized:
    """What the SLO sizing found this tick (for status and the decision's record)."""

    estimates: tuple[capacity.Estimate, ...]
    binding: capacity.Resource | None
    """The resource whose target needs the most pods this tick; None without load."""
    lead_seconds: float


class Sizer:
    """The SLO sizing state of one deployment: its learner, lead time and demand history."""

    def __init__(self, config: Settings, base: settings.ScalingSettings) -> None:
        self.config = config
        self.base = base
        priors = {resource: self._stated(resource) for resource in capacity.Resource}
        self.learner = capacity.Learner(config.objective, priors, settings=config.learning)
        self.lead = headroom.LeadTime(config.lead_prior_seconds)
        self._started: set[str] = set()
        self._violated_at: dict[capacity.Resource, float] = {}
        self._history: collections.deque[tuple[float, float]] = collections.deque()
        self._recent: dict[str, collections.deque[tuple[float, float, float | None]]] = {}
        self.loads = Loads(0.0, None, 0)
        self._fleet: collections.deque[tuple[float, Loads]] = collections.deque()
        """The fleet's fresh loads over the stable window, oldest first (for `guard`)."""

    # --- each tick, before the decision ---------------------------------------------------

    def learn(self, now: float, observations: Sequence[demand.Observation]) -> None:
        """Teach the learner this tick's fresh samples, the lead time new pods' starts."""
        samples: list[capacity.Sample] = []
        kv_total = 0.0
        tokens: list[float] = []
        ready = fresh = 0
        for observation in observations:
            self._note_start(observation)
            if observation.phase is not demand.Phase.READY:
                continue
            ready += 1
            # Fresh as the decision reads it: valid, healthy, recent (`demand.read`).
            reading = demand.read(now, observation, self.base)
            sample = observation.sample
            if reading.freshness is not demand.Freshness.FRESH or sample is None:
                continue
            fresh += 1
            kv = demand.occupancy(sample)
            kv_total += kv
            if sample.tokens_per_second is not None:
                tokens.append(sample.tokens_per_second)
            loads = self._remember(observation.pod, sample.time, kv, sample.tokens_per_second)
            if observation.ready_since is None or sample.latency_since is None:
                continue  # without when it began serving, warm-up cannot be told apart
            taught = capacity.Sample(
                pod=observation.pod,
                at=sample.time,
                started_at=observation.ready_since,
                latency_since=sample.latency_since,
                kv_demand=kv,
                tokens_per_second=sample.tokens_per_second,
                ttft=sample.ttft,
                itl=sample.itl,
                tpot=sample.tpot,
            )
            samples.append(self._over_window(taught, loads))
        present = {observation.pod for observation in observations}
        for gone in [pod for pod in self._recent if pod not in present]:
            del self._recent[gone]
            self.learner.forget(gone)
        scale = ready / fresh if fresh else 0.0  # unpolled pods at the fresh ones' mean
        self.loads = Loads(
            kv_total * scale,
            math.fsum(tokens) * scale if tokens and len(tokens) == fresh else None,
            fresh,
        )
        if self.loads.fresh:
            self._fleet.append((now, self.loads))
        while self._fleet and now - self._fleet[0][0] > self.base.stable_window_seconds:
            self._fleet.popleft()
        for taught, verdict in zip(samples, self.learner.observe(samples), strict=True):
            if verdict is capacity.Verdict.VIOLATED:
                blamed = capacity.blamed(taught, self.config.learning)
                self._violated_at[blamed] = taught.at

    def targets(self, now: float) -> settings.ScalingSettings:
        """The settings the decision runs on this tick: the CR's, with learned targets."""
        found = self.learner.estimates(now)
        kv = found.get(capacity.Resource.KV)
        compute = found.get(capacity.Resource.COMPUTE)
        # Until the pods' latency has taught something, the CR's targets as they are.
        kv_target = self.base.target_occupancy
        if kv is not None and kv.source is capacity.Source.LEARNED:
            kv_target = self._running_point(kv, now)
        tokens_target = self.base.target_tokens_per_second
        broke_on_compute = capacity.Resource.COMPUTE in self._violated_at
        if (
            compute is not None
            and compute.source is capacity.Source.LEARNED
            and (tokens_target is not None or broke_on_compute)
        ):
            # A compute estimate only met so far is a lower bound on the pod's capacity (the
            # loads it happened to see): scaling up past it would size the fleet by its first
            # quiet minutes. It sets a target once the CR gave one (the prior) or the SLO
            # broke on compute at some load (then the estimate is an upper bound: headroom is
            # kept below it for `edge_seconds`, then the target is the estimate itself). Once
            # compute has broken the SLO it keeps a target: dropping it when the edge is
            # forgotten left KV alone to size a compute-bound fleet, which then shed half its
            # pods and broke the SLO again (a saw-tooth of 20 -> 14 -> 7 -> 22 pods measured on
            # conv on an L4).
            tokens_target = self._running_point(compute, now)
        return dataclasses.replace(
            self.base,
            target_occupancy=min(1.0, kv_target),
            target_tokens_per_second=tokens_target,
        )

    # --- after the decision ---------------------------------------------------------------

    def guard(self, now: float, wanted: int, current: int) -> account.Guarded | None:
        """Cut a scale-down (wanted < current) to what the survivors can carry; None when the
        scale-down stands as it is (or it is no scale-down)."""
        if wanted >= current:
            return None
        share = 1.0 - self.config.headroom
        allowed = wanted
        limiting: capacity.Resource | None = None
        for resource, estimate in self.learner.estimates(now).items():
            load = self._load(resource)
            if load is None:
                continue
            per_pod = self._down_capacity(resource, estimate, now)
            if per_pod is None:
                return account.Guarded(wanted, current, None, self.config.headroom)
            # The survivors keep the headroom whether or not the SLO's edge is known: at the
            # highest load proven they would have no room for the next burst. Before, they ran
            # at it until a violation showed the edge: they broke the SLO, and the scale-ups
            # that followed overshot (conv x8 on an H100: 4.27 GPU-h at 96.88% with 15 scale
            # actions before, 3.28 at 99.04% with 5 after; docs/simulation.md).
            per_pod *= share
            needed = arith.ceil(load / per_pod)
            if needed > allowed:
                allowed, limiting = needed, resource
        allowed = min(current, allowed)
        if limiting is None or allowed == wanted:
            return None
        return account.Guarded(wanted, allowed, RESOURCE_REASON[limiting], self.config.headroom)

    def ahead(self, now: float, demand_pods: float, ready: int) -> account.Ahead | None:
        """The demand's growth over one start-up time, as pods to add on a scale-up; the
        decision also projects a tick the band holds with it (once `growth_known`)."""
        history = self._history
        history.append((now, demand_pods))
        while history and now - history[0][0] > self.config.growth_window_seconds:
            history.popleft()
        growth = headroom.growth_rate(list(history))
        lead = self.lead.seconds()
        pods = headroom.pods_ahead(growth, lead, 1.0)
        if pods == 0 or growth is None:
            return None
        # One start-up time of growth, but never more than the fleet that is ready again.
        return account.Ahead(min(pods, max(1, ready)), growth, lead)

    def growth_known(self, now: float) -> bool:
        """The demand's history spans (nearly) the whole growth window. A slope over the
        first seconds of a fleet reads its first load as a ramp: scaling on it took the
        Mooncake trace's fleet from 11 pods to 44 at its first tick."""
        history = self._history
        span = now - history[0][0] if history else 0.0
        return span >= GROWTH_SPAN_SHARE * self.config.growth_window_seconds

    def over_headroom(self, target: float) -> float:
        """A target (a running point) as the load it keeps the headroom below: target over the
        headroom's share. When a violation keeps the headroom, that is the learned capacity;
        otherwise the target is the estimate itself, a lower bound, and this is above it."""
        return target / (1.0 - self.config.headroom)

    def capacity_learned(self, now: float) -> bool:
        """Every resource's estimate is the pods' own (moved by their samples), not a prior."""
        found = self.learner.estimates(now).values()
        return bool(found) and all(e.source is capacity.Source.LEARNED for e in found)

    def binding(self, config: settings.ScalingSettings) -> capacity.Resource | None:
        """The resource whose target needs the most pods for this tick's load."""
        loads = self.loads
        if not loads.fresh:
            return None
        by_kv = loads.kv / config.target_occupancy
        tokens_target = config.target_tokens_per_second
        if loads.tokens_per_second is None or tokens_target is None:
            return capacity.Resource.KV
        by_compute = loads.tokens_per_second / tokens_target
        return capacity.Resource.COMPUTE if by_compute > by_kv else capacity.Resource.KV

    def words(
        self,
        now: float,
        config: settings.ScalingSettings,
        binding: capacity.Resource | None,
    ) -> account.Sized:
        """The decision's record of the targets it ran on."""
        found = self.learner.estimates(now)

        def said(resource: capacity.Resource) -> str:
            estimate = found.get(resource)
            if estimate is None:
                return "the CR's"
            edge = ", headroom kept" if self._edge_known(resource, now) else ""
            return f"{estimate.source.value}, {estimate.use.value}{edge}"

        compute = capacity.Resource.COMPUTE
        return account.Sized(
            kv_target=config.target_occupancy,
            kv_source=said(capacity.Resource.KV),
            tokens_target=config.target_tokens_per_second,
            tokens_source=None if config.target_tokens_per_second is None else said(compute),
            binding=None if binding is None else RESOURCE_REASON[binding],
        )

    def sized(self, now: float, binding: capacity.Resource | None) -> Sized:
        return Sized(tuple(self.learner.estimates(now).values()), binding, self.lead.seconds())

    # --- helpers --------------------------------------------------------------------------

    def _remember(
        self, pod: str, at: float, kv: float, tokens: float | None
    ) -> collections.deque[tuple[float, float, float | None]]:
        """The pod's recent loads (one per sample), as long as a latency window reaches."""
        recent = self._recent.setdefault(pod, collections.deque())
        if not recent or at > recent[-1][0]:
            recent.append((at, kv, tokens))
        horizon = at - self.config.latency_window_seconds
        while recent and recent[0][0] < horizon:
            recent.popleft()
        return recent

    def _over_window(
        self,
        taught: capacity.Sample,
        recent: collections.deque[tuple[float, float, float | None]],
    ) -> capacity.Sample:
        """The sample with the load its latency window saw: the latency is the whole window's,
        while the load is one moment's. The learner is taught the window's mean load, the
        quantity the decision compares with the target (a stable-window mean per pod), so the
        capacity it learns is a running point the decision can hold. Pinning a violation on the
        window's highest load and a met SLO on its lowest (as this did before) stalls learning
        where demand is bursty: on long-context traffic every violation's peak sat above the
        estimate and every met sample's trough below it, so nothing moved, and the fleet ran
        at a mean where the SLO broke in each burst (88.6% attainment on conv tokens x8). The
        window's peak KV demand goes with the sample for blame (`capacity.blamed`): a cache
        that filled for a moment explains a violation its mean load would not.
        """
        found = capacity.verdict(taught, self.config.objective, self.config.learning)
        if found is capacity.Verdict.UNKNOWN:
            return taught
        inside = [(kv, tokens) for at, kv, tokens in recent if at >= taught.latency_since]
        if not inside:
            return taught
        kvs = [kv for kv, _ in inside]
        rates = [tokens for _, tokens in inside if tokens is not None]
        return dataclasses.replace(
            taught,
            kv_demand=math.fsum(kvs) / len(kvs),
            tokens_per_second=math.fsum(rates) / len(rates) if rates else taught.tokens_per_second,
            kv_peak=max(kvs),
        )

    def _down_capacity(
        self, resource: capacity.Resource, estimate: capacity.Estimate, now: float
    ) -> float | None:
        """The capacity per pod the survivors of a scale-down are held within (less the
        headroom, by the caller); None: none is proven.

        Before the SLO has broken on this resource (no edge known), an estimate is a lower
        bound: the highest load seen to meet the SLO. Trusted, it is the survivors' capacity
        (or the CR's target as a capacity, when that is higher): a scale-down never runs pods
        past what was seen to work, and the N/(N-1) step of a small fleet (2 -> 1 doubles the
        load) waits until the load fits. Untrusted, the CR's target is, or nothing limits
        them when the CR sets none (without learning, today's behaviour). Once the SLO broke,
        the estimate is the edge: trusted, it is the capacity; untrusted (lowered by
        violations, not proven since), only a little above the highest load proven to meet
        the SLO, and no scale-down at all when none is proven: unproven numbers never buy a
        scale-down. The CR's target counts as the capacity `_stated` makes of it, the
        learner's prior.
        """
        stated = self._stated(resource)
        if not self._edge_known(resource, now):
            if estimate.use is capacity.Use.TRUSTED:
                return estimate.capacity if stated is None else max(stated, estimate.capacity)
            return math.inf if stated is None else stated
        if estimate.use is capacity.Use.TRUSTED:
            return estimate.capacity
        return estimate.scale_down_capacity

    def _stated(self, resource: capacity.Resource) -> float | None:
        """The CR's target for this resource as a capacity (None when the CR sets none): the
        learner's prior and the survivors' capacity before anything is proven. The CR's
        targets are running points, so as capacities they are the targets over the headroom's
        share (before anything is learned the targets are then the CR's). Each is held to the
        learner's range, which the CR's own range does not keep it in (targetTokensPerSecond
        1e9 over a share of 0.8 is past 1e9; chaos scenario 9 found every tick failing on it).
        """
        if resource is capacity.Resource.KV:
            target: float | None = self.base.target_occupancy
        else:
            target = self.base.target_tokens_per_second
        if target is None:
            return None
        low, high = self.config.learning.bounds[resource]
        return min(high, max(low, self.over_headroom(target)))

    def _running_point(self, estimate: capacity.Estimate, now: float) -> float:
        edge = self._edge_known(estimate.resource, now)
        return estimate.capacity * (1.0 - self.config.headroom) if edge else estimate.capacity

    def _edge_known(self, resource: capacity.Resource, now: float) -> bool:
        """A violation was blamed on this resource within the learner's proof window."""
        at = self._violated_at.get(resource)
        return at is not None and now - at <= self.config.edge_seconds

    def _load(self, resource: capacity.Resource) -> float | None:
        """The fleet's load a scale-down's survivors must carry: the highest of the stable
        window, not this tick's (a quiet tick between bursts would buy a scale-down the next
        burst breaks); None when this tick has no fresh load for the resource."""
        if resource is capacity.Resource.KV:
            if not self.loads.fresh:
                return None
            return max(seen.kv for _, seen in self._fleet)
        if self.loads.tokens_per_second is None:
            return None
        return max(
            seen.tokens_per_second for _, seen in self._fleet if seen.tokens_per_second is not None
        )

    def _note_start(self, observation: demand.Observation) -> None:
        """Each pod's start once: created -> Ready, the lead time's sample."""
        if observation.pod in self._started:
            return
        if observation.created_at is None or observation.ready_since is None:
            return
        took = observation.ready_since - observation.created_at
        if math.isfinite(took) and took >= 0:
            self.lead.observe(observation.created_at, observation.ready_since)
        self._started.add(observation.pod)
        if len(self._started) > 10_000:  # pods come and go; keep the memory bounded
            self._started.clear()


def pressure_floor(config: settings.ScalingSettings) -> float:
    """What a pod under pressure counts as in SLO mode: just over its target's band."""
    return min(demand.SATURATED, config.target_occupancy * (1.0 + config.tolerance) + 1e-6)
