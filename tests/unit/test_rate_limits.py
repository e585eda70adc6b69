"""Rates: one decision asks for at most ceil(up x ready) and keeps at least floor(ready / down).

The limits are relative to the ready pods (Knative's choice) and never push a decision the
other way: a scale-up limit never lowers `current`, a scale-down limit never raises it.
No scale-down delay here; pods have 100 usable blocks.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from tests.support import fleet

from kvscale.scaling import decision, demand, settings

CONFIG = settings.ScalingSettings(max_replicas=100, scale_down_delay_seconds=0)


def pending(count: int) -> list[demand.Observation]:
    return [demand.Observation(f"n{index}", demand.Phase.PENDING) for index in range(count)]


TABLE = [
    # (up rate, down rate, ready, current, total demand in blocks, desired)
    pytest.param(4.0, 2.0, 2, 2, 2000, 8, id="up-4x-of-2-ready"),
    pytest.param(1.5, 2.0, 2, 2, 2000, 3, id="up-1.5x-of-2-ready"),
    pytest.param(4.0, 2.0, 1, 1, 1000, 4, id="up-from-one"),
    pytest.param(4.0, 2.0, 10, 10, 0, 5, id="down-half-of-10-ready"),
    pytest.param(4.0, 3.0, 10, 10, 0, 3, id="down-third-of-10-ready"),
    # 2 ready, 8 more pending: 4 x 2 = 8 is below the 10 asked; the limit keeps 10, no less.
    pytest.param(4.0, 2.0, 2, 10, 2000, 10, id="up-limit-never-lowers-current"),
    # 10 ready but only 3 asked (pods leaving): floor(10 / 2) = 5 would be a scale-up; keep 3.
    pytest.param(4.0, 2.0, 10, 3, 0, 3, id="down-limit-never-raises-current"),
]


@pytest.mark.parametrize(("up", "down", "ready", "current", "blocks", "desired"), TABLE)
def test_rate_table(
    up: float, down: float, ready: int, current: int, blocks: int, desired: int
) -> None:
    config = dataclasses.replace(CONFIG, max_scale_up_rate=up, max_scale_down_rate=down)
    observations = fleet.spread(0, blocks, ready) + pending(max(0, current - ready))
    result = decision.Autoscaler(config).step(0.0, observations, current)
    assert result.desired == desired, result.message
    assert result.reason is decision.Reason.LIMITED_BY_RATE


def _sequence(start: int, total_blocks: int, ticks: int) -> list[int]:
    """Desired counts tick by tick when every pod asked for is ready at the next tick."""
    autoscaler = decision.Autoscaler(CONFIG)
    current, history = start, []
    for tick in range(ticks):
        current = autoscaler.step(
            float(tick), fleet.spread(tick, total_blocks, current), current
        ).desired
        history.append(current)
    return history


def test_scale_up_is_a_series_of_bounded_steps() -> None:
    # 20 pods' worth of demand wants ceil(20 / 0.7) = 29; from one pod: x4 per tick.
    wanted = math.ceil(20 / CONFIG.target_occupancy)
    assert _sequence(1, 2000, 4) == [4, 16, wanted, wanted]


def test_scale_down_is_a_series_of_bounded_steps() -> None:
    assert _sequence(40, 0, 7) == [20, 10, 5, 2, 1, 1, 1]
