"""Today's peers as baselines: each reproduces its documented thresholds, loop, caps and
smoothing (llm-d saturation, Dynamo reactive, HPA on a vLLM pod's CPU)."""

from __future__ import annotations

import pytest

from kvscale.simulate import fleet, hpa, peer
from kvscale.simulate import policy as policy_
from kvscale.twin import engine

BLOCKS = 1001  # capacity 1000 blocks: usage = used / 1000


def metrics(
    kv: float = 0.0, waiting: int = 0, running: int = 1, prompt: int = 0, gen: int = 0
) -> engine.Metrics:
    used = round(kv * (BLOCKS - 1))
    return engine.Metrics(
        num_gpu_blocks=BLOCKS,
        block_size=16,
        num_free_blocks=BLOCKS - 1 - used,
        kv_cache_usage=kv,
        num_requests_running=running,
        num_requests_waiting=waiting,
        num_requests_swapped=0,
        num_preemptions_total=0,
        num_swap_fallbacks_total=0,
        prefix_cache_queries_total=0,
        prefix_cache_hits_total=0,
        prompt_tokens_total=prompt,
        generation_tokens_total=gen,
        num_requests_finished_total=0,
        num_cpu_blocks=0,
        num_cpu_blocks_used=0,
    )


def view(now: float, *pods: engine.Metrics | None) -> policy_.View:
    """Ready pods with these metrics; None is a pod still starting."""
    made = tuple(
        policy_.PodView(
            f"engine-{i}",
            fleet.State.STARTING if m is None else fleet.State.READY,
            0.0,
            0,
            m,
        )
        for i, m in enumerate(pods)
    )
    return policy_.View(now, len(made), made)


def llmd() -> peer.LlmdSaturation:
    made = policy_.build("llmd-saturation", min_replicas=1, max_replicas=10)
    assert isinstance(made, peer.LlmdSaturation)
    return made


# --- llm-d saturation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peaks", "expected", "why"),
    [
        ([(0.5, 0)], 1, "steady"),  # spare KV 0.3, spare queue 5: nothing to do
        ([(0.75, 0)], 2, "spare capacity low"),  # spare KV 0.05 < 0.1
        ([(0.5, 3)], 2, "spare capacity low"),  # spare queue 2 < 3
        ([(0.85, 0)], 2, "every replica saturated"),  # KV >= 0.8
        ([(0.3, 5)], 2, "every replica saturated"),  # queue >= 5
        ([(0.2, 0), (0.2, 0)], 1, "scale-down safe"),  # 0.4 on one pod leaves 0.4 spare
        ([(0.4, 0), (0.35, 0)], 2, "steady"),  # 0.75 on one pod: spare 0.05 < 0.1
        ([(0.2, 1), (0.2, 1)], 1, "scale-down safe"),  # queue 2 on one pod: spare 3, not < 3
        ([(0.2, 2), (0.2, 1)], 2, "steady"),  # queue 3 on one pod: spare 2 < 3, unsafe
        ([(0.1, 0), (0.9, 0)], 2, "steady"),  # one saturated: fewer than 2 non-saturated
    ],
)
def test_llmd_targets_follow_its_documented_analysis(
    peaks: list[tuple[float, float]], expected: int, why: str
) -> None:
    assert llmd().target(len(peaks), peaks) == (expected, why)


def test_llmd_reconciles_every_60_s_on_the_peak_of_the_last_minute() -> None:
    made = llmd()
    assert made.tick_s == 15.0  # the Prometheus scrape
    # t=0: the reconcile sees one busy scrape and scales up.
    assert made.decide(view(0.0, metrics(kv=0.79))).desired == 2
    # Scrapes between reconciles change nothing, even at saturation.
    for t in (15.0, 30.0, 45.0):
        assert made.decide(view(t, metrics(kv=0.1), metrics(kv=0.1))).desired == 2
    # t=60: the 0.79 peak at t=0 fell out of max_over_time[1m]; the peaks are 0.1 and 0.1.
    assert made.decide(view(60.0, metrics(kv=0.1), metrics(kv=0.1))).desired == 1


def test_llmd_keeps_a_peak_for_a_minute() -> None:
    made = llmd()
    made.decide(view(0.0, metrics(kv=0.1), metrics(kv=0.1)))  # reconcile: scale down to 1
    made.decide(view(15.0, metrics(kv=0.78), metrics(kv=0.74)))  # a short burst
    for t in (30.0, 45.0):
        made.decide(view(t, metrics(kv=0.1), metrics(kv=0.1)))
    # The burst at t=15 is the peak of the minute: mean spare (0.02 + 0.06) / 2 < 0.1: up.
    assert made.decide(view(60.0, metrics(kv=0.1), metrics(kv=0.1))).desired == 3


def test_llmd_does_nothing_while_a_pod_is_pending() -> None:
    made = llmd()
    scale = made.decide(view(0.0, metrics(kv=0.95), None))
    assert scale.desired == 2  # the current count, unchanged
    assert made.last_reason == "pods pending"


def test_llmd_overrides_are_checked_by_name() -> None:
    made = policy_.build(
        "llmd-saturation",
        min_replicas=1,
        max_replicas=4,
        overrides={"llmd.kvCacheThreshold": "0.9", "keda.threshold": "3"},
    )
    assert isinstance(made, peer.LlmdSaturation)
    assert made.config.kv_cache_threshold == 0.9
    with pytest.raises(ValueError, match=r"llmd\.kvThreshold: unknown key"):
        policy_.build(
            "llmd-saturation", min_replicas=1, max_replicas=4, overrides={"llmd.kvThreshold": "0.9"}
        )
    with pytest.raises(ValueError, match="kvSpareTrigger"):
        peer.LlmdSettings(kv_spare_trigger=0.9)


# --- Dynamo reactive ----------------------------------------------------------------------


def dynamo(**overrides: str) -> peer.DynamoReactive:
    made = policy_.build(
        "dynamo-reactive",
        min_replicas=1,
        max_replicas=40,
        overrides={f"dynamo.{k}": v for k, v in overrides.items()},
    )
    assert isinstance(made, peer.DynamoReactive)
    return made


@pytest.mark.parametrize(
    ("workers", "load", "expected"),
    [
        (4, 0.45, 3),  # 0.5 x target 0.9: below 0.6, one fewer
        (4, 0.72, 4),  # 0.8 x target: inside the band
        (4, 0.90, 4),  # exactly 1.0 x target: not above
        (4, 1.00, 5),  # 1.11 x target: ceil(4 x 1.11) = 5
        (2, 0.53, 1),  # 0.59 x target: below 0.6, one fewer
        (2, 0.55, 2),  # 0.61 x target: inside
        (4, 4.5, 12),  # 5 x target: ceil(20) capped at +8
    ],
)
def test_dynamo_thresholds_and_bounded_step(workers: int, load: float, expected: int) -> None:
    assert dynamo().target(workers, load) == expected


def test_dynamo_averages_the_pulls_of_each_5_s_interval() -> None:
    made = dynamo(targetKvLoad="0.5")
    assert made.tick_s == 1.0
    decisions = [
        made.decide(view(float(t), metrics(kv=kv))).desired
        for t, kv in enumerate([0.9, 0.9, 0.1, 0.1, 0.1])
    ]
    assert decisions == [1, 1, 1, 1, 1]  # before t = 5 s nothing is decided
    # Pulls at t = 0..5: mean (0.9 + 0.9 + 0.1 x 4) / 6 = 0.367 = 0.73 x target: stay.
    assert made.decide(view(5.0, metrics(kv=0.1))).desired == 1
    for t in range(6, 10):
        made.decide(view(float(t), metrics(kv=0.8)))
    assert made.decide(view(10.0, metrics(kv=0.8))).desired == 2  # 1.6 x target: ceil(1.6)


def test_dynamo_counts_queued_requests_in_the_kv_load() -> None:
    # 400 used blocks over 4 running requests: 100 each; 2 waiting add 200.
    assert peer.kv_load(metrics(kv=0.4, running=4, waiting=2)) == pytest.approx(0.6)


def test_dynamo_blocks_while_workers_start() -> None:
    made = dynamo()
    for t in range(0, 12):
        scale = made.decide(view(float(t), metrics(kv=1.0), None))
        assert scale.desired == 2  # unchanged: a worker is being added


# --- HPA on a vLLM pod's CPU ----------------------------------------------------------------


def test_cpu_of_a_vllm_pod_is_a_busy_core_plus_tokenization() -> None:
    cpu = peer.CpuModel()
    assert cpu.utilization(False, 0.0) == 0.0
    assert cpu.utilization(True, 0.0) == 50.0  # one core of two spins
    assert cpu.utilization(True, 200_000.0) == pytest.approx(60.0)  # + 0.2 core tokenizing


def test_hpa_cpu_busy_never_scales_a_busy_pod_under_an_80_percent_target() -> None:
    made = policy_.build("hpa-cpu-busy", min_replicas=1, max_replicas=8)
    assert isinstance(made, peer.HpaCpuBusy)
    assert made.tick_s == 15.0
    made.decide(view(0.0, metrics(kv=0.9, waiting=50, prompt=0)))
    # Saturated, 50 waiting, 100k prompt tokens/s: still 55% of the request: no scale-up.
    assert made.decide(view(15.0, metrics(kv=0.9, waiting=50, prompt=1_500_000))).desired == 1


def test_hpa_cpu_busy_scales_up_on_any_load_under_a_low_target() -> None:
    made = policy_.build(
        "hpa-cpu-busy", min_replicas=1, max_replicas=8, overrides={"cpu.targetUtilization": "25"}
    )
    made.decide(view(0.0, metrics(kv=0.01, prompt=0)))
    # One request in flight reads 50%: twice the target, so the HPA doubles the pods.
    assert made.decide(view(15.0, metrics(kv=0.01, prompt=0))).desired == 2


def test_hpa_cpu_busy_keeps_the_hpa_behaviour() -> None:
    config = hpa.Settings(min_replicas=1, max_replicas=8)
    made = peer.HpaCpuBusy(config, peer.CpuModel(target_utilization=10.0))
    made.decide(view(0.0, metrics(), metrics(), metrics()))
    # Idle pods read 0%: the recommendation is 1, held for the 300 s stabilization.
    idle = metrics(running=0)
    assert made.decide(view(15.0, idle, idle, idle)).desired == 3
    assert made.behavior.settings.scale_down_stabilization_s == 300.0
