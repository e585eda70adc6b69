"""Scaling settings: one pure validation with precise messages, agreeing with the CRD's ranges."""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic
import pytest

from kvscale.api import models
from kvscale.scaling import settings


@pytest.mark.parametrize(
    ("raw", "errors"),
    [
        ({"maxScaleUpRate": 0.5}, ["maxScaleUpRate = 0.5, must be greater than 1.0"]),
        ({"maxScaleDownRate": 1}, ["maxScaleDownRate = 1, must be greater than 1.0"]),
        ({"maxScaleUpRate": 1001}, ["maxScaleUpRate = 1001, must be at most 1000.0"]),
        ({"minReplicas": -1}, ["minReplicas = -1, must be at least 0"]),
        ({"maxReplicas": 0}, ["maxReplicas = 0, must be at least 1"]),
        ({"maxReplicas": 10_001}, ["maxReplicas = 10001, must be at most 10000"]),
        ({"targetOccupancy": 0}, ["targetOccupancy = 0, must be greater than 0.0"]),
        ({"targetOccupancy": 1.5}, ["targetOccupancy = 1.5, must be at most 1.0"]),
        ({"tolerance": 1.0}, ["tolerance = 1.0, must be less than 1.0"]),
        ({"stableWindowSeconds": 0.5}, ["stableWindowSeconds = 0.5, must be at least 1.0"]),
        ({"panicThreshold": 1}, ["panicThreshold = 1, must be greater than 1.0"]),
        ({"scaleDownDelaySeconds": -5}, ["scaleDownDelaySeconds = -5, must be at least 0.0"]),
        ({"tickSeconds": 0.1}, ["tickSeconds = 0.1, must be at least 0.25"]),
        ({"staleAfterSeconds": 0}, ["staleAfterSeconds = 0, must be greater than 0.0"]),
        ({"pressureWaitingRequests": 0}, ["pressureWaitingRequests = 0, must be at least 1"]),
        ({"minReplicas": "two"}, ["minReplicas = 'two', must be an integer"]),
        ({"minReplicas": 1.5}, ["minReplicas = 1.5, must be an integer"]),
        ({"maxReplicas": True}, ["maxReplicas = True, must be an integer"]),
        ({"targetOccupancy": "0.7"}, ["targetOccupancy = '0.7', must be a number"]),
        ({"targetOccupancy": None}, ["targetOccupancy = None, must be a number"]),
        ({"tolerance": float("nan")}, ["tolerance = nan, must be a finite number"]),
        ({"panicThreshold": float("inf")}, ["panicThreshold = inf, must be a finite number"]),
        (
            {"minReplicas": 5, "maxReplicas": 4},
            ["minReplicas = 5, must be less than or equal to maxReplicas (4)"],
        ),
        (
            {"panicWindowSeconds": 90},
            ["panicWindowSeconds = 90, must be less than or equal to stableWindowSeconds (60.0)"],
        ),
        (
            {"maxScaleUpRate": 0.5, "tolerance": -0.1, "bogus": 1},
            [
                "maxScaleUpRate = 0.5, must be greater than 1.0",
                "tolerance = -0.1, must be at least 0.0",
                "unknown field 'bogus'; known fields: " + ", ".join(settings.KEYS),
            ],
        ),
        ([1, 2], ["scaling must be a mapping of field names to values, got list"]),
        ("minReplicas: 1", ["scaling must be a mapping of field names to values, got str"]),
    ],
)
def test_bad_settings_get_precise_messages(raw: object, errors: list[str]) -> None:
    assert settings.validate(raw) == errors


def test_every_problem_is_reported_not_only_the_first() -> None:
    result = settings.validate({"minReplicas": -1, "maxReplicas": 0, "tickSeconds": 100})
    assert isinstance(result, list)
    assert [message.split(" = ")[0] for message in result] == [
        "minReplicas",
        "maxReplicas",
        "tickSeconds",
    ]


def test_cross_field_rules_wait_for_valid_fields() -> None:
    # A maxReplicas that is itself wrong must not also produce a min/max message.
    assert settings.validate({"minReplicas": 3, "maxReplicas": -1}) == [
        "maxReplicas = -1, must be at least 1"
    ]


def test_empty_mapping_gives_the_crd_defaults() -> None:
    assert settings.validate({}) == settings.ScalingSettings()
    assert settings.from_spec(models.Scaling()) == settings.ScalingSettings()


def test_settings_mirror_every_field_of_the_cr() -> None:
    spec_fields = set(models.Scaling.model_fields)
    own_fields = {field.name for field in dataclasses.fields(settings.ScalingSettings)}
    operator_only = {
        "stale_after_seconds",
        "pressure_preemptions_per_second",
        "pressure_waiting_requests",
    }
    assert own_fields - operator_only == spec_fields - settings.LOOP_ONLY_FIELDS


def test_valid_values_are_converted_and_kept() -> None:
    result = settings.validate(
        {"minReplicas": 2.0, "maxReplicas": 8, "targetOccupancy": 1, "tickSeconds": 2}
    )
    assert result == settings.ScalingSettings(
        min_replicas=2,
        max_replicas=8,
        target_occupancy=1.0,
        tick_seconds=2.0,
        stale_after_seconds=settings.stale_after_for(2.0),
    )
    assert isinstance(result, settings.ScalingSettings)
    assert isinstance(result.min_replicas, int)


@pytest.mark.parametrize(
    ("tick", "stale_after"),
    [(0.25, settings.DEFAULT_STALE_AFTER_SECONDS), (1.0, 5.0), (2.0, 6.0), (60.0, 180.0)],
)
def test_staleness_limit_follows_the_tick_unless_given(tick: float, stale_after: float) -> None:
    result = settings.validate({"tickSeconds": tick})
    assert isinstance(result, settings.ScalingSettings)
    assert result.stale_after_seconds == stale_after
    spec = models.Scaling(tick_seconds=tick)
    assert settings.from_spec(spec).stale_after_seconds == stale_after
    assert settings.from_spec(spec, stale_after_seconds=1.5).stale_after_seconds == 1.5
    given = settings.validate({"tickSeconds": tick, "staleAfterSeconds": 42})
    assert isinstance(given, settings.ScalingSettings)
    assert given.stale_after_seconds == 42


def test_constructing_bad_settings_raises_the_same_message() -> None:
    with pytest.raises(ValueError, match=r"^maxScaleUpRate = 0\.5, must be greater than 1\.0$"):
        settings.ScalingSettings(max_scale_up_rate=0.5)
    with pytest.raises(ValueError, match="must be less than or equal to maxReplicas"):
        settings.ScalingSettings(min_replicas=9, max_replicas=3)


def _boundary_cases() -> list[tuple[str, float]]:
    """Every CR field's bounds, and values just inside and outside them, from the CRD schema."""
    schema = models.Scaling.model_json_schema(by_alias=True)["properties"]
    cases = []
    for key, field in schema.items():
        integer = field.get("type") == "integer"
        step = 1 if integer else 1e-6
        for name in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            if name in field:
                bound = field[name]
                cases += [(key, bound - step), (key, bound), (key, bound + step)]
    return cases


def _crd_accepts(key: str, value: float) -> bool:
    # The other field of a cross-field rule is moved out of the way, so only the range counts.
    others: dict[str, Any] = {"minReplicas": 0, "maxReplicas": 10_000}
    others |= {"panicWindowSeconds": 1, "stableWindowSeconds": 3600}
    try:
        models.Scaling.model_validate({**others, key: value})
    except pydantic.ValidationError:
        return False
    return True


@pytest.mark.parametrize(("key", "value"), _boundary_cases())
def test_validate_agrees_with_the_crd_at_every_bound(key: str, value: float) -> None:
    others: dict[str, Any] = {"minReplicas": 0, "maxReplicas": 10_000}
    others |= {"panicWindowSeconds": 1, "stableWindowSeconds": 3600}
    ours = settings.validate({**others, key: value})
    assert isinstance(ours, settings.ScalingSettings) == _crd_accepts(key, value), ours
