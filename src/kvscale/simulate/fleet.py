"""The simulated fleet: engine pods with start-up and drain, GPU time, least-loaded routing. Pure.

A pod's life, on the simulation's clock:

    asked for ──(startup_delay_s)──> ready ──(asked to go)──> draining ──(empty)──> gone
        └────────────(asked to go while starting)──────────────────────────────────┘

GPU time runs from the moment a pod is asked for (the GPU node is held while the image is
pulled and the weights load) to the moment it is gone: a draining pod takes no new requests
but finishes every request it holds, as the operator's preStop and termination grace let it.

Routing is what an inference gateway's endpoint picker does: each request goes to the ready,
non-draining pod with the least KV demand, (used blocks + blocks its waiting queue needs) /
capacity; ties go to the pod with fewer requests in flight, then to the oldest pod. Like a
gateway that polls its endpoints, it sees each pod's demand as of the last `refresh` (the
simulation refreshes every `routing_refresh_s`) plus the blocks of the prompts it has sent the
pod since, so a burst between two polls is spread rather than piled on one pod.
"""

from __future__ import annotations

import dataclasses
import enum

from kvscale import histogram
from kvscale.twin import buckets, engine, profile


class State(enum.StrEnum):
    STARTING = "starting"  # asked for, model loading: costs GPU time, takes no requests
    READY = "ready"
    DRAINING = "draining"  # asked to go: finishes its requests, takes no new ones
    GONE = "gone"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every pod of the fleet is."""

    profile: profile.Profile
    engine: engine.EngineConfig = dataclasses.field(default_factory=engine.EngineConfig)
    startup_delay_s: float = 60.0
    """From "asked for" to ready: scheduling, image pull, weights load, CUDA graph capture."""
    routing_refresh_s: float = 0.25
    """How often the gateway re-reads every pod's KV demand."""

    def __post_init__(self) -> None:
        if not (self.startup_delay_s >= 0):
            raise ValueError(f"startup_delay_s = {self.startup_delay_s!r}, must be >= 0")
        if not (self.routing_refresh_s > 0):
            raise ValueError(f"routing_refresh_s = {self.routing_refresh_s!r}, must be > 0")

    @property
    def gpus_per_pod(self) -> int:
        return self.profile.tensor_parallel_size


@dataclasses.dataclass(eq=False)
class Pod:
    """One engine pod and its life on the simulation's clock."""

    name: str
    index: int
    twin: engine.EngineTwin
    requested_at: float
    ready_at: float
    removed_at: float | None = None
    """When it was asked to go (None while it is wanted)."""
    gone_at: float | None = None
    """When it stopped costing GPU time."""
    num_inflight: int = 0
    """Requests routed to it and not finished."""
    seen_demand: float = 0.0
    """Its KV demand when the gateway last refreshed its view."""
    sent_blocks: int = 0
    """Prompt blocks the gateway sent it since then."""
    ttft: histogram.Recorder = dataclasses.field(
        default_factory=lambda: histogram.Recorder(buckets.TIME_TO_FIRST_TOKEN)
    )
    """Its engine's vllm:time_to_first_token_seconds: from the request's arrival at the engine
    (the gateway's queue is not the engine's to see, as in vLLM)."""
    itl: histogram.Recorder = dataclasses.field(
        default_factory=lambda: histogram.Recorder(buckets.INTER_TOKEN_LATENCY)
    )
    """Its engine's vllm:inter_token_latency_seconds: every gap between output tokens."""
    tpot: histogram.Recorder = dataclasses.field(
        default_factory=lambda: histogram.Recorder(buckets.INTER_TOKEN_LATENCY)
    )
    """Its engine's vllm:request_time_per_output_token_seconds: each finished request's
    decode time over its output tokens after the first (vLLM uses the ITL buckets)."""

    def state(self, now: float) -> State:
        if self.gone_at is not None:
            return State.GONE
        if self.removed_at is not None:
            return State.DRAINING
        return State.READY if now >= self.ready_at else State.STARTING

    def kv_demand(self) -> float:
        """(Used blocks + blocks the waiting queue needs) / capacity, like a gateway sees it."""
        sched = self.twin.scheduler
        pool = sched.kv.gpu_pool
        capacity = pool.num_blocks - 1
        block_size = sched.config.block_size
        waiting = sum(-(-req.num_tokens // block_size) for req in sched.waiting)
        return (capacity - pool.num_free_blocks + waiting) / capacity

    def gpu_seconds(self, end: float) -> float:
        """Seconds this pod held its GPUs up to `end` (one pod, not times its GPU count)."""
        stop = end if self.gone_at is None else min(self.gone_at, end)
        return max(0.0, stop - self.requested_at)


class Fleet:
    """Every pod the simulation ever made, in the order they were asked for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pods: list[Pod] = []

    def add(self, now: float, *, ready_now: bool = False) -> Pod:
        """Ask for one more pod at `now`; `ready_now` for the pods a run starts with."""
        index = len(self.pods)
        twin = engine.EngineTwin(self.settings.engine, self.settings.profile)
        ready_at = now if ready_now else now + self.settings.startup_delay_s
        pod = Pod(f"engine-{index}", index, twin, now, ready_at)
        self.pods.append(pod)
        return pod

    def remove(self, pod: Pod, now: float) -> None:
        """Ask `pod` to go: a starting pod is gone at once, a ready one drains."""
        if pod.removed_at is not None:
            raise ValueError(f"pod {pod.name} was already asked to go")
        pod.removed_at = now
        if now < pod.ready_at:
            pod.gone_at = now
        else:
            self.settle(pod)

    def settle(self, pod: Pod) -> None:
        """A draining pod that holds nothing any more is gone when its last step ends."""
        if pod.removed_at is not None and pod.gone_at is None and pod.num_inflight == 0:
            pod.gone_at = max(pod.removed_at, pod.twin.clock)

    def live(self) -> list[Pod]:
        """Pods that are not gone: starting, ready and draining."""
        return [pod for pod in self.pods if pod.gone_at is None]

    def wanted(self) -> list[Pod]:
        """Pods not asked to go (starting and ready): the Deployment's spec.replicas."""
        return [pod for pod in self.pods if pod.removed_at is None]

    def ready(self, now: float) -> list[Pod]:
        return [pod for pod in self.pods if pod.state(now) is State.READY]

    def refresh(self) -> None:
        """The gateway re-reads every live pod's KV demand (the engines must be up to date)."""
        for pod in self.pods:
            if pod.gone_at is None:
                pod.seen_demand = pod.kv_demand() if pod.num_inflight else 0.0
                pod.sent_blocks = 0

    def route(self, now: float, num_blocks: int) -> Pod | None:
        """The least-loaded ready pod for a request of `num_blocks` prompt blocks (None when
        no pod is ready); the gateway remembers it sent them."""
        best: Pod | None = None
        best_key = (0.0, 0, 0)
        for pod in self.pods:
            if pod.removed_at is not None or now < pod.ready_at:
                continue
            capacity = pod.twin.scheduler_config.num_gpu_blocks - 1
            key = (pod.seen_demand + pod.sent_blocks / capacity, pod.num_inflight, pod.index)
            if best is None or key < best_key:
                best, best_key = pod, key
        if best is not None:
            best.sent_blocks += num_blocks
        return best

    def gpu_hours(self, end: float) -> float:
        """GPU-hours of every pod up to `end`: pods x GPUs per pod x time held."""
        seconds = sum(pod.gpu_seconds(end) for pod in self.pods)
        return seconds * self.settings.gpus_per_pod / 3600.0
