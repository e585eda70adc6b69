"""The same sidecar reports give the same decisions in the operator and in `kvscale simulate`.

The simulator's kvscale policy makes each pod's report from the twin's numbers as a sidecar
would; the test hands exactly those reports to the operator's autoscale loop (fake API, fake
collector, fake clock) and checks that both reach the same `Decision`, field for field, at
every tick: one adapter, one decision core, between report and replicas.
"""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from tests.unit import test_autoscale_loop as loop

from kvscale import histogram
from kvscale.scaling import decision
from kvscale.simulate import fleet, latency, policy
from kvscale.twin import buckets, engine, profile

PODS = ("a", "b", "c")
SCALING = {
    "minReplicas": 1,
    "maxReplicas": 6,
    "stableWindowSeconds": 10,
    "panicWindowSeconds": 4,
    "scaleDownDelaySeconds": 20,
    "tickSeconds": 1,
    "targetTokensPerSecond": 20000,
}
TICKS = 90
_IDLE = engine.EngineTwin(engine.EngineConfig(), profile.get("h100-sxm", "llama-3-8b")).metrics()


def _load(tick: int, index: int) -> float:
    """The share of its cache a pod uses: low, a burst, then low for longer than the delay."""
    base = 0.95 if 15 <= tick < 40 else 0.15
    return min(0.99, base + 0.02 * index)


def _metrics(tick: int, index: int) -> engine.Metrics:
    usable = _IDLE.num_gpu_blocks - 1
    used = int(_load(tick, index) * usable)
    return dataclasses.replace(
        _IDLE,
        num_free_blocks=usable - used,
        kv_cache_usage=used / usable,
        num_requests_running=1 + used // 500,
        num_requests_waiting=3 if used > 0.9 * usable else 0,
        num_preemptions_total=max(0, tick - 20) * (index + 1) if tick < 40 else 20 * (index + 1),
        prompt_tokens_total=tick * 6000 * (index + 1),
        generation_tokens_total=tick * 900,
    )


@pytest.mark.parametrize(
    "faults",
    [policy.Faults(), policy.Faults(missing=0.1, stale=0.1, seed=7)],
    ids=["clean", "missing-and-stale"],
)
def test_the_same_reports_give_the_same_decisions(faults: policy.Faults) -> None:
    simulated = policy.build(
        "kvscale",
        min_replicas=SCALING["minReplicas"],
        max_replicas=SCALING["maxReplicas"],
        overrides={key: str(value) for key, value in SCALING.items()},
        faults=faults,
    )
    assert isinstance(simulated, policy.Kvscale)
    operator = loop.Harness(loop.cr(scaling=SCALING), 3, [loop.pod(name) for name in PODS])
    current = 3
    reasons = set()
    for tick in range(TICKS):
        now = operator.clock.now
        view = policy.View(
            now,
            current,
            tuple(
                policy.PodView(name, fleet.State.READY, 0.0, 0, _metrics(tick, index))
                for index, name in enumerate(PODS)
            ),
        )
        scale = simulated.decide(view)
        # Each pod's report as the simulated sidecar served it, to the operator's collector.
        for name in PODS:
            latest = simulated.reports.latest(name)
            assert latest is not None
            operator.collector.answers[name] = latest.report
        made = operator.tick()
        assert made.decision == simulated.last, f"tick {tick}"
        assert operator.api.replicas == scale.desired
        current = scale.desired
        reasons.add(scale.reason)
    # The sequence exercised both directions, not one steady state.
    assert decision.Reason.SCALE_DOWN.value in reasons
    assert reasons & {reason.value for reason in decision.Reason if reason.startswith("scale_up")}


def _ttft_seconds(tick: int) -> float:
    """Each request's time to first token: fine, then broken through the burst."""
    return 6.0 if 15 <= tick < 40 else 0.3


def test_with_an_slo_the_latency_and_the_learned_capacity_take_the_same_path() -> None:
    # spec.slo set: the latency windows the simulated sidecars serve, the pods' start times and
    # the learner behind the targets give the same decisions, learned capacity included.
    # As kvscale-slo reads latency.Slo(ttft_s=2.0): TTFT and the requests' pace (tpot).
    slo = {"ttft": {"p90": "2s"}, "tpot": {"p90": "100ms"}}
    scaling = {key: value for key, value in SCALING.items() if key != "targetTokensPerSecond"}
    simulated = policy.build(
        "kvscale-slo",
        min_replicas=SCALING["minReplicas"],
        max_replicas=SCALING["maxReplicas"],
        overrides={f"slo.{key}": str(value) for key, value in scaling.items()}
        | {"slo.percentile": "90"},
        slo=latency.Slo(ttft_s=2.0),
    )
    assert isinstance(simulated, policy.Kvscale)
    pods = [loop.pod(name) for name in PODS]
    clock = loop.Clock()
    # Created at the decision clock's -100 and Ready at 0, as the simulated pods are.
    started = clock.wall - datetime.timedelta(seconds=clock.now)
    stamp = started.isoformat().replace("+00:00", "Z")
    created = (started - datetime.timedelta(seconds=100)).isoformat().replace("+00:00", "Z")
    for found in pods:
        found["metadata"]["creationTimestamp"] = created
        for condition in found["status"]["conditions"]:
            condition["lastTransitionTime"] = stamp
    operator = loop.Harness(loop.cr(scaling=scaling, slo=slo), 3, pods)
    recorders = {
        name: (
            histogram.Recorder(buckets.TIME_TO_FIRST_TOKEN),
            histogram.Recorder(buckets.INTER_TOKEN_LATENCY),
            histogram.Recorder(buckets.INTER_TOKEN_LATENCY),
        )
        for name in PODS
    }
    current = 3
    learned = False
    for tick in range(TICKS):
        now = operator.clock.now
        for ttft, itl, tpot in recorders.values():
            ttft.observe(_ttft_seconds(tick), 40)
            itl.observe(0.02, 400)
            tpot.observe(0.02, 40)
        view = policy.View(
            now,
            current,
            tuple(
                policy.PodView(
                    name,
                    fleet.State.READY,
                    0.0,
                    0,
                    _metrics(tick, index),
                    requested_at=-100.0,
                    latency=recorders[name],
                )
                for index, name in enumerate(PODS)
            ),
        )
        scale = simulated.decide(view)
        for name in PODS:
            latest = simulated.reports.latest(name)
            assert latest is not None
            operator.collector.answers[name] = latest.report
        made = operator.tick()
        assert made.decision == simulated.last, f"tick {tick}"
        assert operator.api.replicas == scale.desired
        current = scale.desired
        sized = made.decision.sized if made.decision is not None else None
        assert sized is not None
        learned |= any(e.source.value == "learned" for e in sized.estimates)
    # The latency reached the learner on both paths, and the status says what it learned.
    assert learned
    assert operator.api.status()["capacity"]
