"""One test per pain point that users of other autoscalers hit (as reported in those projects'
issue trackers), wherever the pain lives in the scaling decision.

Pain points that live outside the decision core, and where they are handled instead:
- in-flight streams dropped on scale-down (AIBrix, KServe): the pod template's preStop, the
  termination grace period and the engine's shutdown timeout (the operator's render); the
  core's part is gradual scale-down (rates, delay) and `removal_order`, tested here;
- two autoscalers fighting over one workload (AIBrix): the operator, which can see other
  autoscalers' objects; the core only sees `current`;
- vLLM renaming its metrics: the sidecar's metric names module;
- no capacity alert rules: the Helm chart's PrometheusRule.

The settings are the CRD's defaults (60 s stable window, 6 s panic window, 300 s scale-down
delay, rates 4 and 2) with room to grow (maxReplicas 10), unless a test says otherwise.
Pods have 100 usable blocks; a fake clock moves one second per tick.
"""

from __future__ import annotations

import math

from kvscale.scaling import decision, demand, settings

CAPACITY = 100
CONFIG = settings.ScalingSettings(max_replicas=10)


def pod(name: str, now: float, blocks: int) -> demand.Observation:
    used = min(blocks, CAPACITY)
    sample = demand.Sample(
        time=now,
        num_gpu_blocks=CAPACITY + 1,
        num_used_blocks=used,
        num_waiting_blocks=blocks - used,
    )
    return demand.Observation(name, demand.Phase.READY, sample)


def bare(name: str, phase: demand.Phase, sample: demand.Sample | None = None) -> demand.Observation:
    return demand.Observation(name, phase, sample)


def test_cascading_scale_up_while_new_pods_are_pending() -> None:
    """AIBrix: the autoscaler kept adding pods while the ones it had asked for were pending.

    Two full pods ask for ceil(2.0 / 0.7) = 3. The third pod then stays pending for two
    minutes, longer than both windows, while the two keep reporting full caches; an autoscaler
    that multiplies the pods it asked for by the ready pods' ratio would go 3, 5, 7, ...
    """
    autoscaler = decision.Autoscaler(CONFIG)
    first = autoscaler.step(0.0, [pod("a", 0, 100), pod("b", 0, 100)], 2)
    assert first.desired == math.ceil(2.0 / CONFIG.target_occupancy)
    for tick in range(1, 120):
        observations = [pod("a", tick, 100), pod("b", tick, 100), bare("c", demand.Phase.PENDING)]
        result = autoscaler.step(float(tick), observations, first.desired)
        assert result.desired == first.desired, result.message


def test_one_not_ready_pod_does_not_wedge_scale_down() -> None:
    """AIBrix: one pod that never became ready blocked every scale-down.

    Four replicas asked for, three ready and idle, one stuck starting (crash-looping) for good.
    Once the scale-down delay has passed, the deployment scales down all the same.
    """
    autoscaler = decision.Autoscaler(CONFIG)
    current, first_down = 4, None
    for tick in range(int(CONFIG.scale_down_delay_seconds) + 10):
        observations = [pod(name, tick, 5) for name in "abc"]
        observations.append(bare("stuck", demand.Phase.STARTING))
        result = autoscaler.step(float(tick), observations, current)
        if result.desired < current:
            first_down = tick
            break
    assert first_down == CONFIG.scale_down_delay_seconds


def test_missing_data_during_an_outage_is_not_zero() -> None:
    """KEDA (`ignoreNullValues`): missing metrics read as 0 scaled production to the minimum.

    Eight pods under load; then every sidecar stops answering for ten minutes. The size holds
    for the whole outage and every decision says why.
    """
    autoscaler = decision.Autoscaler(CONFIG)
    for tick in range(60):
        autoscaler.step(float(tick), [pod(f"p{i}", tick, 65) for i in range(8)], 8)
    for tick in range(60, 660):
        observations = [bare(f"p{i}", demand.Phase.READY) for i in range(8)]
        result = autoscaler.step(float(tick), observations, 8)
        assert (result.desired, result.reason) == (8, decision.Reason.HOLD_NO_DATA)


def test_stale_data_drives_no_decision() -> None:
    """llm-d: stale metrics led to wrong decisions.

    Reports frozen at an idle moment do not scale down; reports frozen at a full moment do not
    scale up. Either way the size holds, and the message says how old the reports are.
    """
    age = CONFIG.stale_after_seconds + 5
    for blocks in (0, 300):
        autoscaler = decision.Autoscaler(CONFIG)
        for tick in range(400):
            observations = [pod(f"p{i}", tick - age, blocks) for i in range(4)]
            result = autoscaler.step(float(tick), observations, 4)
            assert (result.desired, result.reason) == (4, decision.Reason.HOLD_STALE_DATA)
        assert f"sampled {age:.1f} s ago" in result.message


def test_no_scale_up_on_every_tick_without_load() -> None:
    """llm-d: the autoscaler scaled up on every reconcile with no load at all.

    An idle engine (nothing running, nothing waiting, no preemptions) for an hour of ticks
    never asks for a pod.
    """
    autoscaler = decision.Autoscaler(CONFIG)
    for tick in range(3600):
        result = autoscaler.step(float(tick), [pod("a", tick, 0)], 1)
        assert result.desired == 1, result.message


def test_scales_down_when_the_load_is_gone() -> None:
    """llm-d: the autoscaler refused to scale down.

    Ten busy pods, then no load. The stable window drains (60 s) until one pod is wanted; the
    scale-down delay (300 s) then lets go of the higher counts wanted on the way. The
    deployment is at minReplicas within those two plus a few ticks, not never.
    """
    autoscaler = decision.Autoscaler(CONFIG)
    current = 10
    for tick in range(60):
        current = autoscaler.step(
            float(tick), [pod(f"p{i}", tick, 70) for i in range(10)], 10
        ).desired
    assert current == 10
    drain = int(CONFIG.stable_window_seconds + CONFIG.scale_down_delay_seconds)
    deadline = 60 + drain + CONFIG.max_replicas
    for tick in range(60, deadline):
        observations = [pod(f"p{i}", tick, 0) for i in range(current)]
        current = autoscaler.step(float(tick), observations, current).desired
    assert current == CONFIG.min_replicas


def test_occupancy_is_per_ready_pod_not_divided_by_the_replicas_asked_for() -> None:
    """KEDA: `AverageValue` silently divided the metric by the replica count.

    Two ready pods at 0.9 while two more are pending: the occupancy is 0.9 per ready pod, not
    1.8 / 4 = 0.45, and the same observations give the same occupancy whatever was asked for.
    """
    observations = [pod("a", 0, 90), pod("b", 0, 90)]
    observations += [bare("c", demand.Phase.PENDING), bare("d", demand.Phase.PENDING)]
    for current in (2, 4, 9):
        result = decision.Autoscaler(CONFIG).step(0.0, observations, current)
        assert result.occupancy == 0.9
        assert result.stable_occupancy == 0.9
        assert result.ready == 2


def test_the_autoscaler_names_which_pods_to_remove() -> None:
    """Knative: the autoscaler could not choose which pod to remove.

    The decision ranks the ready pods with a known load, least loaded first (the operator turns
    this into pod-deletion-cost). Pods whose load is unknown are not offered: they are not
    known to be idle.
    """
    observations = [pod("busy", 0, 90), pod("idle", 0, 5), pod("half", 0, 50)]
    observations.append(bare("silent", demand.Phase.READY))
    result = decision.Autoscaler(CONFIG).step(0.0, observations, 4)
    assert result.removal_order == ("idle", "half", "busy")
