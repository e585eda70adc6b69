"""Pods asked ahead of a ramp: start-up time from pods' own timestamps, the demand's growth rate,
and the rule pods ahead = growth x start-up time / capacity per pod."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvscale.scaling import headroom


def _lead(*startups: float, prior: float = 120.0) -> headroom.LeadTime:
    lead = headroom.LeadTime(prior)
    for index, took in enumerate(startups):
        created = 1000.0 * index
        lead.observe(created, created + took)
    return lead


LEAD = [
    pytest.param((), 120.0, id="prior-until-pods-are-seen"),
    pytest.param((60.0,), 120.0, id="one-pod-and-the-prior-p80-of-two"),
    pytest.param((60.0, 70.0), 120.0, id="two-pods-still-count-the-prior"),
    pytest.param((60.0, 70.0, 80.0), 80.0, id="three-pods-replace-the-prior"),
    pytest.param((60.0, 70.0, 80.0, 90.0, 100.0), 90.0, id="p80-nearest-rank"),
    pytest.param((60.0, 70.0, 80.0, 3600.0), 80.0, id="an-hour-on-a-missing-node-is-dropped"),
    pytest.param((200.0,) * 20 + (60.0,) * 20, 60.0, id="only-the-last-twenty"),
]


@pytest.mark.parametrize(("startups", "expected"), LEAD)
def test_lead_time_table(startups: tuple[float, ...], expected: float) -> None:
    assert _lead(*startups).seconds() == expected


def test_a_pod_ready_before_it_was_created_is_refused() -> None:
    with pytest.raises(ValueError, match="ready_at - created_at = -1"):
        headroom.LeadTime(120.0).observe(10.0, 9.0)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        pytest.param({"prior_seconds": -1.0}, "prior_seconds = -1.0", id="prior"),
        pytest.param({"prior_seconds": 1.0, "quantile": 0.0}, "quantile = 0.0", id="quantile"),
        pytest.param({"prior_seconds": 1.0, "min_samples": 0}, "min_samples = 0", id="min"),
        pytest.param({"prior_seconds": 1.0, "outlier_factor": 1.0}, "outlier_factor", id="out"),
    ],
)
def test_bad_lead_time_settings_are_refused(kwargs: dict[str, float], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        headroom.LeadTime(**kwargs)  # type: ignore[arg-type]


def test_growth_rate_of_a_ramp_and_of_a_ramp_with_a_burst() -> None:
    ramp = [(float(t), 100.0 + 2.5 * t) for t in range(0, 60, 5)]
    assert headroom.growth_rate(ramp) == pytest.approx(2.5)
    burst = [(t, load * (4.0 if t == 30.0 else 1.0)) for t, load in ramp]
    assert headroom.growth_rate(burst) == pytest.approx(2.5, rel=0.05)
    assert headroom.growth_rate([(1.0, 5.0)]) is None
    assert headroom.growth_rate([(1.0, 5.0), (1.0, 6.0)]) is None


def test_growth_rate_reads_the_whole_window_through_its_point_limit() -> None:
    # 61 ticks, flat then 1.0/s over the last 10: with 24 points spread over the minute the
    # burst is 4 of them and the slope stays flat; in the last 24 ticks it is 10 of 24.
    ticks = [(float(t), 10.0 + max(0, t - 50)) for t in range(61)]
    assert headroom.growth_rate(ticks) == pytest.approx(0.0)
    assert (headroom.growth_rate(ticks[-24:]) or 0.0) > 0.3  # 0.37 pods/s: a ramp
    # A ramp read through a few points is still the ramp, to the ends of the window.
    ramp = [(float(t), 3.0 * t) for t in range(200)]
    assert headroom.growth_rate(ramp, most=2) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="most = 1"):
        headroom.growth_rate(ramp, most=1)


PODS_AHEAD = [
    pytest.param(10.0, 120.0, 400.0, 3, id="1200-more-in-two-minutes-at-400-a-pod"),
    pytest.param(10.0, 120.0, 1200.0, 1, id="exactly-one-pod"),
    pytest.param(0.0, 120.0, 400.0, 0, id="flat"),
    pytest.param(-5.0, 120.0, 400.0, 0, id="falling-asks-nothing"),
    pytest.param(None, 120.0, 400.0, 0, id="unknown-growth-asks-nothing"),
]


@pytest.mark.parametrize(("growth", "lead", "capacity", "pods"), PODS_AHEAD)
def test_pods_ahead_table(growth: float | None, lead: float, capacity: float, pods: int) -> None:
    assert headroom.pods_ahead(growth, lead, capacity) == pods


@given(
    start=st.floats(0.0, 1e5),
    growth=st.floats(0.0, 1e3),
    lead=st.floats(0.0, 900.0),
    capacity=st.floats(1.0, 1e4),
    at=st.floats(0.0, 3600.0),
)
def test_pods_asked_now_carry_the_ramp_when_they_are_ready(
    start: float, growth: float, lead: float, capacity: float, at: float
) -> None:
    # On a linear ramp, what the fleet asks for at `at` (the pods the demand needs now plus
    # the pods ahead) carries the demand at `at + lead`, when the pods asked now are Ready.
    now_demand = start + growth * at
    asked = math.ceil(now_demand / capacity) + headroom.pods_ahead(growth, lead, capacity)
    later_demand = start + growth * (at + lead)
    # The absolute slack covers demands below float resolution (5e-324 / 2 rounds to 0).
    assert asked * capacity >= later_demand * (1 - 1e-9) - 1e-12
