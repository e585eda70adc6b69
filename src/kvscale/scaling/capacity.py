"""A pod's capacity under the SLO, learned live from its load and its latency. Pure.

The question: how much load can one pod of this deployment carry and still meet the user's SLO
(`spec.slo`: TTFT and inter-token latency at a percentile)? The answer depends on the model,
the GPU and the traffic mix, so it is learned from the pods themselves, per resource, because
either can bind first:

- `Resource.KV`: KV demand as a fraction of the pod's blocks (used blocks plus what the waiting
  queue needs). Binds when the cache fills: requests wait for blocks, running ones are
  preempted.
- `Resource.COMPUTE`: tokens per second (prompt + generated). Binds when the batch is too big
  for the step time the SLO allows, while the cache may be mostly empty (large GPUs).

Each qualified sample of a pod says, at its load, whether the SLO was MET or VIOLATED. The
learning rule is a bounded step toward the evidence:

- MET at load L above the estimate C: C += rate x weight x (L - C), for every resource;
- VIOLATED at load L below the estimate: C -= rate x weight x (C - L), for the resource that
  binds (KV when the KV demand reached `kv_saturation` at some moment of the latency window,
  `Sample.kv_peak`, else compute);
- otherwise nothing (a met sample below C and a violation above it agree with C).

A met sample never moves C past its own load and a violation never moves it below its own, so
on a pod whose SLO holds exactly below a capacity K, C never crosses K from either side and
contracts toward it as samples near K arrive; noise near K makes C wander in a band around K
whose width shrinks with `rate`. `weight` grows with the observations behind the latency
quantile (a p90 of 5 requests is weak evidence), so learning is bounded per sample as well as
in value (`bounds`).

What never teaches it (the users of other autoscalers were bitten by each):
- a pod's first minutes: samples whose latency window began before `warmup_seconds` after the
  pod started (compile, CUDA graphs, cold prefix cache) are ignored;
- thin or missing latency: a signal with fewer than `min_observations` in its window, or absent,
  makes the sample UNKNOWN, and an unknown sample changes nothing (missing data is never idle
  and never a violation);
- the same window twice: a pod's samples are taken at most every `sample_interval_seconds`,
  as the sidecar's latency windows overlap from one tick to the next.

Trust. An estimate says what it may be used for (`Use`). It is TRUSTED when it has enough recent
evidence (`confidence`) and exceeds by at most `exploration` the highest load at which the SLO
was recently seen met (`proven`), whether it is a prior that the samples confirmed or a learned
value. Otherwise it is SCALE_UP_ONLY: the caller may add pods because of it, never remove pods
because of it. So a prior that is too high, a capacity lowered by violations but never seen met,
or an estimate whose evidence went stale can never buy a scale-down. What the caller may scale
down to is `scale_down_capacity`: the estimate when trusted, else the proven load plus
`exploration` (None without fresh proof), so an over-provisioned fleet still steps down, each
step running pods a little above what was proven, and the next samples prove or refute it
(a latency floor that blocks scale-down forever was a peer's bug).

Time is an argument; nothing here reads a clock.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping

from kvscale import histogram
from kvscale.api import models


class Resource(enum.StrEnum):
    """What a pod runs out of first."""

    KV = "kv"
    """KV demand, as a fraction of the pod's usable KV blocks."""
    COMPUTE = "compute"
    """Tokens per second, prompt and generated together."""


class Source(enum.StrEnum):
    """Where an estimate comes from."""

    TARGET = "target"
    """A prior from the InferenceDeployment's own targets (spec.scaling)."""
    PROFILE = "profile"
    """A prior from a model and GPU profile (e.g. `kvscale simulate --calibrate`)."""
    LEARNED = "learned"
    """Moved by the pods' own samples."""


class Use(enum.StrEnum):
    """What the caller may do with an estimate."""

    TRUSTED = "trusted"
    """Size the fleet with it, up and down."""
    SCALE_UP_ONLY = "scale_up_only"
    """Add pods when it says so; never remove pods because of it."""


class Verdict(enum.StrEnum):
    """What one sample says about the SLO."""

    MET = "met"
    VIOLATED = "violated"
    UNKNOWN = "unknown"
    """Too few observations, a signal missing, or no target to judge by."""


@dataclasses.dataclass(frozen=True)
class Objective:
    """The SLO as the learner reads it: (percentile as a 0..1 fraction, seconds) per signal."""

    ttft: tuple[tuple[float, float], ...] = ()
    itl: tuple[tuple[float, float], ...] = ()
    tpot: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.ttft and not self.itl and not self.tpot:
            raise ValueError("ttft, itl, tpot: all empty, an objective needs at least one target")
        for name, targets in (("ttft", self.ttft), ("itl", self.itl), ("tpot", self.tpot)):
            for q, seconds in targets:
                if not 0.0 < q < 1.0:
                    raise ValueError(f"{name}: percentile {q!r}, must be in (0, 1)")
                if not (math.isfinite(seconds) and seconds > 0):
                    raise ValueError(f"{name}: target {seconds!r} s, must be > 0")

    @classmethod
    def from_slo(cls, slo: models.Slo) -> Objective:
        return cls(
            ttft=() if slo.ttft is None else slo.ttft.targets(),
            itl=() if slo.itl is None else slo.itl.targets(),
            tpot=() if slo.tpot is None else slo.tpot.targets(),
        )

    def signals(
        self, sample: Sample
    ) -> tuple[tuple[tuple[tuple[float, float], ...], histogram.Histogram | None], ...]:
        """(targets, the sample's window) for each signal the objective names."""
        pairs = ((self.ttft, sample.ttft), (self.itl, sample.itl), (self.tpot, sample.tpot))
        return tuple((targets, window) for targets, window in pairs if targets)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One pod's load and latency, as its sidecar last reported them."""

    pod: str
    at: float
    """When the sample was taken."""
    started_at: float
    """When the pod became Ready (its engine started serving)."""
    latency_since: float
    """When the window the latency histograms cover began (the sidecar's window start)."""
    kv_demand: float | None
    """KV demand over usable blocks (0..; above 1 when the waiting queue needs more)."""
    tokens_per_second: float | None
    """Prompt + generated tokens per second; None when the engine exports no counters."""
    ttft: histogram.Histogram | None
    """The window's increase of the TTFT histogram; None when the engine exports none."""
    itl: histogram.Histogram | None
    """The window's increase of the inter-token latency histogram."""
    tpot: histogram.Histogram | None = None
    """The window's increase of the finished requests' time-per-output-token histogram."""
    kv_peak: float | None = None
    """The highest KV demand seen while the latency window ran (None: `kv_demand` is all that
    is known). Blame reads it: a cache that filled at any moment of the window explains a
    violation that the window's mean load would not."""

    def load(self, resource: Resource) -> float | None:
        return self.kv_demand if resource is Resource.KV else self.tokens_per_second


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the learner learns; every field is a stated, tested default."""

    warmup_seconds: float = 60.0
    """Latency observed before a pod has served this long does not teach (compile, cold caches)."""
    min_observations: int = 20
    """Fewer observations than this in a signal's window make the sample UNKNOWN."""
    full_weight_observations: int = 100
    """A sample with this many observations moves the estimate a full `rate` step."""
    rate: float = 0.25
    """The largest fraction of the gap to a sample's load that one sample moves the estimate."""
    kv_saturation: float = 0.9
    """A violation at or above this KV demand is the KV cache's; below it, compute's."""
    sample_interval_seconds: float = 15.0
    """A pod's samples are taken at most this often (its latency windows overlap)."""
    evidence_half_life_seconds: float = 900.0
    """Evidence counts half as much after this long; stale evidence loses trust."""
    trust_evidence: float = 10.0
    """Evidence (decayed qualified samples) at which confidence reaches 0.5."""
    trust_confidence: float = 0.5
    """Confidence at or above which a learned, proven estimate is TRUSTED."""
    exploration: float = 0.1
    """A trusted estimate may exceed the highest proven load by this fraction."""
    bounds: Mapping[Resource, tuple[float, float]] = dataclasses.field(
        default_factory=lambda: {Resource.KV: (0.02, 1.0), Resource.COMPUTE: (1.0, 1e9)}
    )
    """The range each resource's estimate stays in, whatever the samples say."""

    def __post_init__(self) -> None:
        checks = (
            ("warmup_seconds", self.warmup_seconds >= 0),
            ("min_observations", self.min_observations >= 1),
            ("full_weight_observations", self.full_weight_observations >= self.min_observations),
            ("rate", 0 < self.rate <= 1),
            ("kv_saturation", self.kv_saturation > 0),
            ("sample_interval_seconds", self.sample_interval_seconds >= 0),
            ("evidence_half_life_seconds", self.evidence_half_life_seconds > 0),
            ("trust_evidence", self.trust_evidence > 0),
            ("trust_confidence", 0 < self.trust_confidence < 1),
            ("exploration", self.exploration >= 0),
        )
        for name, ok in checks:
            if not ok:
                raise ValueError(f"{name} = {getattr(self, name)!r} is out of range")
        for resource in Resource:
            low, high = self.bounds.get(resource, (math.nan, math.nan))
            if not 0 < low < high:
                raise ValueError(f"bounds[{resource.value}] = {(low, high)!r}, need 0 < low < high")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What the learner knows about one resource's capacity per pod."""

    resource: Resource
    capacity: float
    """Load per pod at which a pod still meets the SLO, in the resource's unit."""
    confidence: float
    """0..1, from the recent qualified samples (decayed); 0 for a prior never tested."""
    source: Source
    use: Use
    proven: float | None
    """The highest load at which the SLO was seen met recently; None if never."""
    scale_down_capacity: float | None
    """Load per pod the caller may remove pods down to: `capacity` when TRUSTED, else
    `proven` x (1 + exploration) if that is lower than `capacity` and the evidence is fresh
    and sufficient; None when nothing proves any load safe."""


def verdict(sample: Sample, objective: Objective, settings: Settings) -> Verdict:
    """MET, VIOLATED or UNKNOWN: what the sample's latency says against the objective.

    A target "p-quantile <= t" holds when at least a share p of the window's observations were
    <= t. The buckets bound that share (`histogram.share_within`): a violation when even the
    highest share they allow is below p, met when even the lowest reaches p, and unknown in
    between (a target inside a bucket, with the quantile in that bucket: the histogram cannot
    tell, and a guess would teach the learner misses that never happened, or successes).
    Any signal certainly past a target is a violation. MET needs every signal the objective
    names to have enough observations and to meet its targets: a signal we cannot see may be
    the one that fails.
    """
    known_ok = True
    for targets, window in objective.signals(sample):
        if window is None or window.count < settings.min_observations:
            known_ok = False
            continue
        for q, seconds in targets:
            share = histogram.share_within(window, seconds)
            if share is None:
                known_ok = False
                continue
            lowest, highest = share
            if highest < q:
                return Verdict.VIOLATED
            if lowest < q:
                known_ok = False
    return Verdict.MET if known_ok else Verdict.UNKNOWN


def weight(sample: Sample, objective: Objective, settings: Settings) -> float:
    """0..1: how far one sample may move the estimate, from the observations behind it."""
    counts = [window.count for _, window in objective.signals(sample) if window is not None]
    if not counts:
        return 0.0
    return min(1.0, min(counts) / settings.full_weight_observations)


@dataclasses.dataclass
class _Belief:
    """One resource's learned state. Fields:
    - `capacity`: the current estimate (None: no prior and nothing learned yet);
    - `source`: where `capacity` came from;
    - `proofs`: the met loads that may still be the highest within the proof window, as
      (when seen, load), loads strictly falling from the front (a sliding-window maximum:
      a met load is dropped once a higher one is seen after it, so when the highest expires
      the next-highest recent proof takes its place instead of the proof vanishing);
    - `evidence`, `evidence_at`: decayed count of qualified samples, as of `evidence_at`.
    """

    capacity: float | None
    source: Source
    proofs: collections.deque[tuple[float, float]] = dataclasses.field(
        default_factory=collections.deque
    )
    evidence: float = 0.0
    evidence_at: float = -math.inf


class Learner:
    """Capacity per pod for one deployment, learned from all its pods' samples."""

    def __init__(
        self,
        objective: Objective,
        priors: Mapping[Resource, float | None],
        prior_source: Source = Source.TARGET,
        settings: Settings | None = None,
    ) -> None:
        if prior_source is Source.LEARNED:
            raise ValueError("prior_source = learned: a prior comes from a target or a profile")
        self.objective = objective
        self.settings = settings or Settings()
        self._beliefs: dict[Resource, _Belief] = {}
        for resource in Resource:
            prior = priors.get(resource)
            if prior is not None:
                low, high = self.settings.bounds[resource]
                if not (math.isfinite(prior) and low <= prior <= high):
                    raise ValueError(
                        f"priors[{resource.value}] = {prior!r}, must be in [{low:g}, {high:g}]"
                    )
            self._beliefs[resource] = _Belief(prior, prior_source)
        self._last_taken: dict[str, float] = {}

    def observe(self, samples: Iterable[Sample]) -> list[Verdict]:
        """Learn from one tick's samples; each sample's verdict (UNKNOWN when skipped)."""
        return [self._take(sample) for sample in samples]

    def forget(self, pod: str) -> None:
        """The pod is gone: its sampling clock goes too."""
        self._last_taken.pop(pod, None)

    def estimate(self, resource: Resource, now: float) -> Estimate | None:
        """The estimate for one resource as of `now`; None with no prior and nothing learned."""
        belief = self._beliefs[resource]
        if belief.capacity is None:
            return None
        settings = self.settings
        evidence = _decayed(belief.evidence, belief.evidence_at, now, settings)
        confidence = evidence / (evidence + settings.trust_evidence)
        proven = self._proven(belief, now)
        scale_down: float | None = None
        if proven is not None and confidence >= settings.trust_confidence:
            scale_down = min(belief.capacity, proven * (1 + settings.exploration))
        return Estimate(
            resource=resource,
            capacity=belief.capacity,
            confidence=confidence,
            source=belief.source,
            use=Use.TRUSTED if scale_down == belief.capacity else Use.SCALE_UP_ONLY,
            proven=proven,
            scale_down_capacity=scale_down,
        )

    def estimates(self, now: float) -> dict[Resource, Estimate]:
        """Every resource that has an estimate."""
        found = {resource: self.estimate(resource, now) for resource in Resource}
        return {resource: e for resource, e in found.items() if e is not None}

    # --- helpers --------------------------------------------------------------------------

    def _take(self, sample: Sample) -> Verdict:
        settings = self.settings
        if sample.latency_since < sample.started_at + settings.warmup_seconds:
            return Verdict.UNKNOWN  # the window saw the pod's first minutes
        last = self._last_taken.get(sample.pod)
        if last is not None and sample.at - last < settings.sample_interval_seconds:
            return Verdict.UNKNOWN  # the same window, mostly, as the sample already taken
        found = verdict(sample, self.objective, settings)
        if found is Verdict.UNKNOWN:
            return found
        self._last_taken[sample.pod] = sample.at
        step = settings.rate * weight(sample, self.objective, settings)
        if found is Verdict.MET:
            for resource in Resource:
                load = sample.load(resource)
                if load is not None:
                    self._met(resource, load, step, sample.at)
        else:
            binding = blamed(sample, settings)
            load = sample.load(binding)
            if load is not None:
                self._violated(binding, load, step, sample.at)
        return found

    def _proven(self, belief: _Belief, now: float) -> float | None:
        """The highest load met within the proof window before `now` (older: no proof)."""
        window = 2 * self.settings.evidence_half_life_seconds
        while belief.proofs and now - belief.proofs[0][0] > window:
            belief.proofs.popleft()
        return belief.proofs[0][1] if belief.proofs else None

    def _met(self, resource: Resource, load: float, step: float, at: float) -> None:
        belief = self._beliefs[resource]
        self._count(belief, at)
        while belief.proofs and belief.proofs[-1][1] <= load:
            belief.proofs.pop()  # a lower or equal load seen earlier can never be the highest
        belief.proofs.append((at, load))
        if belief.capacity is None:
            self._set(belief, resource, load)
        elif load > belief.capacity:
            self._set(belief, resource, belief.capacity + step * (load - belief.capacity))

    def _violated(self, resource: Resource, load: float, step: float, at: float) -> None:
        belief = self._beliefs[resource]
        self._count(belief, at)
        while belief.proofs and belief.proofs[0][1] >= load:
            belief.proofs.popleft()  # refuted: the SLO broke at or below it
        if belief.capacity is None:
            self._set(belief, resource, load * (1 - step))
        elif load < belief.capacity:
            self._set(belief, resource, belief.capacity - step * (belief.capacity - load))

    def _set(self, belief: _Belief, resource: Resource, capacity: float) -> None:
        low, high = self.settings.bounds[resource]
        belief.capacity = min(high, max(low, capacity))
        belief.source = Source.LEARNED

    def _count(self, belief: _Belief, at: float) -> None:
        belief.evidence = _decayed(belief.evidence, belief.evidence_at, at, self.settings) + 1.0
        belief.evidence_at = max(at, belief.evidence_at)


def blamed(sample: Sample, settings: Settings) -> Resource:
    """The resource a violation is blamed on: KV when the cache was (nearly) full at some
    moment of the latency window, else compute."""
    kv = sample.kv_peak if sample.kv_peak is not None else sample.kv_demand
    if kv is not None and kv >= settings.kv_saturation:
        return Resource.KV
    if sample.tokens_per_second is None:
        return Resource.KV  # nothing else to blame; KV's own rule decides below
    return Resource.COMPUTE


def _decayed(evidence: float, since: float, now: float, settings: Settings) -> float:
    if evidence == 0.0 or now <= since:
        return evidence
    return evidence * math.pow(0.5, (now - since) / settings.evidence_half_life_seconds)


def pods_needed(
    loads: Mapping[Resource, float],
    estimates: Mapping[Resource, Estimate],
    headroom: float,
) -> tuple[int, Resource] | None:
    """Pods the fleet's total load needs at its capacity per pod less `headroom`, and the
    resource that binds (needs the most pods); None when no resource has both.

    `headroom` (0..1) is the share of each pod's capacity kept free for bursts: 0.2 runs pods at
    80% of the load at which they still meet the SLO.
    """
    if not 0.0 <= headroom < 1.0:
        raise ValueError(f"headroom = {headroom!r}, must be in [0, 1)")
    best: tuple[int, Resource] | None = None
    for resource, total in loads.items():
        found = estimates.get(resource)
        if found is None:
            continue
        if not (math.isfinite(total) and total >= 0):
            raise ValueError(f"loads[{resource.value}] = {total!r}, must be a finite load >= 0")
        # A load exactly at a whole number of pods' worth needs no extra pod for rounding.
        pods = math.ceil(round(total / (found.capacity * (1.0 - headroom)), 9))
        if best is None or pods > best[0]:
            best = (pods, resource)
    return best
