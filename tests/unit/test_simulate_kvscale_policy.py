"""The kvscale policy feeds the real decision core observations built like the operator's."""

from __future__ import annotations

import dataclasses

import pytest

from kvscale.scaling import decision, demand
from kvscale.simulate import fleet, policy
from kvscale.twin import engine, profile

_IDLE = engine.EngineTwin(engine.EngineConfig(), profile.get("h100-sxm", "llama-3-8b")).metrics()


def view(
    now: float,
    used: int,
    waiting: int = 0,
    preemptions: int = 0,
    prompt_tokens: int = 0,
    generation_tokens: int = 0,
) -> policy.View:
    busy = dataclasses.replace(
        _IDLE,
        num_free_blocks=_IDLE.num_free_blocks - used,
        num_requests_running=3,
        num_requests_waiting=waiting,
        num_preemptions_total=preemptions,
        prompt_tokens_total=prompt_tokens,
        generation_tokens_total=generation_tokens,
    )
    return policy.View(
        now,
        3,
        (
            policy.PodView("ready", fleet.State.READY, 0.0, 3, busy),
            policy.PodView("starting", fleet.State.STARTING, 90.0, 0, None),
            policy.PodView("leaving", fleet.State.DRAINING, 0.0, 1, _IDLE),
        ),
    )


def make(**overrides: str) -> policy.Kvscale:
    made = policy.build("kvscale", min_replicas=1, max_replicas=8, overrides=overrides)
    assert isinstance(made, policy.Kvscale)
    return made


def test_observations_follow_the_operator_adapter() -> None:
    observations = make().observations(view(10.0, used=1000, waiting=2))
    assert [(o.pod, o.phase) for o in observations] == [
        ("ready", demand.Phase.READY),
        ("starting", demand.Phase.STARTING),
        ("leaving", demand.Phase.TERMINATING),
    ]
    sample = observations[0].sample
    assert sample == demand.Sample(
        time=10.0,
        num_gpu_blocks=_IDLE.num_gpu_blocks,
        num_used_blocks=1000,
        block_size=16,
        num_requests_running=3,
        num_requests_waiting=2,
        preemptions_per_second=0.0,
    )
    assert observations[1].sample is None


def test_the_preemption_rate_is_over_the_last_5_seconds() -> None:
    made = make()
    made.observations(view(0.0, used=10, preemptions=0))
    made.observations(view(1.0, used=10, preemptions=4))
    sample = made.observations(view(2.0, used=10, preemptions=6))[0].sample
    assert sample is not None
    assert sample.preemptions_per_second == 3.0  # 6 over 2 s
    later = made.observations(view(9.0, used=10, preemptions=6))[0].sample
    assert later is not None
    assert later.preemptions_per_second == 0.0  # the burst left the window


def test_the_decision_is_the_real_core_s() -> None:
    made = make(targetOccupancy="0.5")
    capacity = _IDLE.num_gpu_blocks - 1
    scale = made.decide(view(0.0, used=capacity))  # one ready pod, full: wants 2 pods
    assert made.last is not None
    assert isinstance(made.last, decision.Decision)
    assert scale.desired == made.last.desired
    assert scale.reason == made.last.reason.value
    assert made.last.starting == 1  # the starting pod is capacity on the way


def test_faults_make_reports_missing_or_stale() -> None:
    missing = policy.build(
        "kvscale", min_replicas=1, max_replicas=4, faults=policy.Faults(missing=1.0)
    )
    stale = policy.build("kvscale", min_replicas=1, max_replicas=4, faults=policy.Faults(stale=1.0))
    assert isinstance(missing, policy.Kvscale)
    assert isinstance(stale, policy.Kvscale)
    assert missing.observations(view(50.0, used=10))[0].sample is None
    old = stale.observations(view(50.0, used=10))[0].sample
    assert old is not None
    assert old.time < 50.0 - stale.config.stale_after_seconds
    stale.decide(view(51.0, used=10))
    assert stale.last is not None
    assert stale.last.reason is decision.Reason.HOLD_STALE_DATA


def test_the_token_rate_is_prompt_plus_generated_over_the_last_5_seconds() -> None:
    made = make()
    first = made.observations(view(0.0, used=10))[0].sample
    assert first is not None
    assert first.tokens_per_second is None  # one point: no rate yet, not zero
    made.observations(view(1.0, used=10, prompt_tokens=2000, generation_tokens=500))
    sample = made.observations(view(2.0, used=10, prompt_tokens=3000, generation_tokens=1000))[
        0
    ].sample
    assert sample is not None
    assert sample.tokens_per_second == 2000.0  # 4,000 tokens over 2 s


def test_a_throughput_target_scales_up_a_pod_with_an_empty_cache() -> None:
    made = make(targetTokensPerSecond="1000", panicThreshold="10")  # no panic here
    made.decide(view(0.0, used=1))
    # 4,000 tokens/s is 4x the target: the ready pod reads as 4 x 0.7 = 2.8, 4 pods' worth;
    # the view's current is 3 (the ready pod, one starting, one leaving), so one more.
    scale = made.decide(view(1.0, used=1, generation_tokens=4000))
    assert made.last is not None
    assert made.last.reason is decision.Reason.SCALE_UP_THROUGHPUT
    assert scale.desired == 4
    assert "targetTokensPerSecond=1000" in policy.describe(made)


def test_the_sidecar_throughput_window_is_a_kvscale_override() -> None:
    made = make(throughputWindowSeconds="30")
    assert made.throughput_window_s == 30.0
    assert "throughputWindow=30s" in policy.describe(made)
    assert "throughputWindow" not in policy.describe(make())  # the default, 15 s
    made.observations(view(0.0, used=10, generation_tokens=0, preemptions=0))
    made.observations(view(18.0, used=10, generation_tokens=18_000, preemptions=10))
    made.observations(view(20.0, used=10, generation_tokens=20_000, preemptions=10))
    sample = made.observations(view(24.0, used=10, generation_tokens=20_000, preemptions=10))[
        0
    ].sample
    assert sample is not None
    # Tokens: the point at 0 s is still inside 30 s. Preemptions: 5 s, from 20 s to 24 s.
    assert sample.tokens_per_second == 20_000 / 24.0
    assert sample.preemptions_per_second == 0.0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_bad_throughput_window_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match="throughputWindowSeconds"):
        make(throughputWindowSeconds=value)
