"""Scaling settings: the CR's `spec.scaling` as a small dataclass, checked in one function. Pure.

`ScalingSettings` mirrors `models.Scaling` field for field (same names in snake_case, same
defaults, same ranges) and adds the limits the operator owns that the CR does not expose yet:
how old a report may be before it counts as stale, and when a pod's queue or preemptions count
as pressure.

`validate(raw)` is the one place that checks a raw mapping (camelCase keys, as in the CR's YAML
or a `kvscale simulate` config). It never raises on bad input: it returns either the settings
or the list of everything wrong, each message naming the field, its value and the rule, e.g.
``maxScaleUpRate = 0.5, must be greater than 1.0``. The ranges are the CRD's, so a spec the API
server admits is a spec `validate` accepts (a unit test checks the two agree).
`from_spec(models.Scaling)` maps an already validated spec. Constructing `ScalingSettings`
directly runs the same range checks and raises `ValueError` with the same messages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from kvscale.api import models

# A report older than this is stale. Three missed ticks at the default 1 s tick, plus slack for
# the sidecar's own poll interval (0.25 s by default) and the fetch; slower ticks scale it up.
DEFAULT_STALE_AFTER_SECONDS = 5.0
STALE_AFTER_TICKS = 3.0


def stale_after_for(tick_seconds: float) -> float:
    """The default staleness limit for a tick: at least 5 s, and never under three ticks."""
    return max(DEFAULT_STALE_AFTER_SECONDS, STALE_AFTER_TICKS * tick_seconds)


@dataclasses.dataclass(frozen=True)
class ScalingSettings:
    """Everything the decision needs to know about one InferenceDeployment's scaling."""

    min_replicas: int = 1
    """Fewest replicas. The autoscaler never goes below 1 even when this is 0: a deployment
    without pods has no sidecar that could report demand and ask to scale back up."""
    max_replicas: int = 4
    """Most replicas."""
    target_occupancy: float = 0.7
    """KV-cache demand per ready pod to aim for, as a fraction of its capacity, in (0, 1]."""
    tolerance: float = 0.1
    """No change while stable occupancy / target stays within 1 +/- tolerance (HPA's band)."""
    stable_window_seconds: float = 60.0
    """The normal decision averages demand over this window."""
    panic_window_seconds: float = 6.0
    """The short window that detects bursts."""
    panic_threshold: float = 2.0
    """Panic when the panic window wants this many times the ready pods."""
    max_scale_up_rate: float = 4.0
    """One decision asks for at most ceil(rate x ready) pods (or keeps the current count)."""
    max_scale_down_rate: float = 2.0
    """One decision keeps at least floor(ready / rate) pods (or keeps the current count)."""
    scale_down_delay_seconds: float = 300.0
    """Scale down only to the highest count wanted within this window; 0 turns it off."""
    tick_seconds: float = 1.0
    """How often the operator collects reports and calls the decision."""
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS
    """Not in the CR. A sample older than this (on the decision's clock) is stale."""
    pressure_preemptions_per_second: float = 0.0
    """Not in the CR. A pod preempting faster than this is under pressure (0: any preemption)."""
    pressure_waiting_requests: int = 5
    """Not in the CR. A pod with at least this many waiting requests is under pressure
    (llm-d's saturation threshold for the queue)."""
    target_tokens_per_second: float | None = None
    """Token throughput per ready pod (prompt + generated tokens/s) to aim for beside the
    occupancy target: a pod at this throughput counts as at `target_occupancy`. None: KV-cache
    occupancy alone."""

    def __post_init__(self) -> None:
        errors = _range_errors(self)
        if errors:
            raise ValueError("; ".join(errors))


@dataclasses.dataclass(frozen=True)
class _Rule:
    """The type and range of one field, with its wire (camelCase) name for messages."""

    attribute: str
    key: str
    integer: bool
    low: float
    low_open: bool  # True: the value must be greater than `low`; False: at least `low`
    high: float
    high_open: bool  # True: the value must be less than `high`; False: at most `high`
    nullable: bool = False  # True: None (unset) is a valid value and skips the checks

    def bound(self, value: float) -> str:
        return str(int(value)) if self.integer else repr(float(value))

    def range_error(self, value: float, written: object) -> str | None:
        """The error for a value out of range, showing it as it was `written`; else None."""
        if value < self.low or (self.low_open and value == self.low):
            relation = "greater than" if self.low_open else "at least"
            return f"{self.key} = {written!r}, must be {relation} {self.bound(self.low)}"
        if value > self.high or (self.high_open and value == self.high):
            relation = "less than" if self.high_open else "at most"
            return f"{self.key} = {written!r}, must be {relation} {self.bound(self.high)}"
        return None


# The CRD's ranges (models.Scaling), then the operator-level limits. Order is message order.
_RULES = (
    _Rule("min_replicas", "minReplicas", True, 0, False, 10_000, False),
    _Rule("max_replicas", "maxReplicas", True, 1, False, 10_000, False),
    _Rule("target_occupancy", "targetOccupancy", False, 0, True, 1, False),
    _Rule("tolerance", "tolerance", False, 0, False, 1, True),
    _Rule("stable_window_seconds", "stableWindowSeconds", False, 1, False, 3600, False),
    _Rule("panic_window_seconds", "panicWindowSeconds", False, 1, False, 3600, False),
    _Rule("panic_threshold", "panicThreshold", False, 1, True, 100, False),
    _Rule("max_scale_up_rate", "maxScaleUpRate", False, 1, True, 1000, False),
    _Rule("max_scale_down_rate", "maxScaleDownRate", False, 1, True, 1000, False),
    _Rule("scale_down_delay_seconds", "scaleDownDelaySeconds", False, 0, False, 86_400, False),
    _Rule("tick_seconds", "tickSeconds", False, 0.25, False, 60, False),
    _Rule("stale_after_seconds", "staleAfterSeconds", False, 0, True, 3600, False),
    _Rule(
        "pressure_preemptions_per_second",
        "pressurePreemptionsPerSecond",
        False,
        0,
        False,
        1_000_000,
        False,
    ),
    _Rule("pressure_waiting_requests", "pressureWaitingRequests", True, 1, False, 1_000_000, False),
    _Rule("target_tokens_per_second", "targetTokensPerSecond", False, 0, True, 1e9, False, True),
)
_RULE_BY_KEY = {rule.key: rule for rule in _RULES}
KEYS = tuple(rule.key for rule in _RULES)
"""The camelCase field names `validate` accepts."""


def _typed(rule: _Rule, value: object) -> tuple[int | float | None, str | None]:
    """The value as the field's type, or an error saying what type was expected."""
    # bool is an int in Python, but `true` is never a count or a rate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if rule.integer else "a number"
        return None, f"{rule.key} = {value!r}, must be {kind}"
    if not math.isfinite(value):
        return None, f"{rule.key} = {value!r}, must be a finite number"
    if rule.integer:
        if isinstance(value, float) and not value.is_integer():
            return None, f"{rule.key} = {value!r}, must be an integer"
        return int(value), None
    return float(value), None


def _range_errors(settings: ScalingSettings) -> list[str]:
    """Type, range and cross-field errors of a settings object, in field order."""
    values = {rule.attribute: getattr(settings, rule.attribute) for rule in _RULES}
    errors = []
    for rule in _RULES:
        written = values[rule.attribute]
        if written is None and rule.nullable:
            continue
        typed, error = _typed(rule, written)
        error = error or (rule.range_error(typed, written) if typed is not None else None)
        if error:
            errors.append(error)
    return errors or _cross_errors(values, values)


def _cross_errors(values: Mapping[str, float], written: Mapping[str, object]) -> list[str]:
    """The CRD's CEL rules, on values that each passed their own type and range check."""
    errors = []
    if values["min_replicas"] > values["max_replicas"]:
        errors.append(
            f"minReplicas = {written['min_replicas']!r}, must be less than or equal to "
            f"maxReplicas ({written['max_replicas']!r})"
        )
    if values["panic_window_seconds"] > values["stable_window_seconds"]:
        errors.append(
            f"panicWindowSeconds = {written['panic_window_seconds']!r}, must be less than or "
            f"equal to stableWindowSeconds ({written['stable_window_seconds']!r})"
        )
    return errors


def validate(raw: object) -> ScalingSettings | list[str]:
    """Settings from a raw camelCase mapping, or every problem with it (never raises).

    Absent fields take their defaults (the CRD's); `staleAfterSeconds`, when absent, follows the
    tick (`stale_after_for`). Integral floats are accepted for integer fields (YAML writes
    `4.0` as easily as `4`); booleans, strings, NaN and infinities are not numbers here.
    Cross-field rules (minReplicas <= maxReplicas, panic window <= stable window) are checked
    once every field is valid on its own, so each message is about one real mistake.
    """
    if not isinstance(raw, Mapping):
        return [f"scaling must be a mapping of field names to values, got {type(raw).__name__}"]
    errors: list[str] = []
    # Any: each value was checked against its field's rule just above it is stored.
    values: dict[str, Any] = {}
    written: dict[str, object] = {}  # as given, for messages
    for key, value in raw.items():
        rule = _RULE_BY_KEY.get(key) if isinstance(key, str) else None
        if rule is None:
            errors.append(f"unknown field {key!r}; known fields: {', '.join(KEYS)}")
            continue
        if value is None and rule.nullable:
            values[rule.attribute] = None
            written[rule.attribute] = None
            continue
        typed, error = _typed(rule, value)
        error = error or (rule.range_error(typed, value) if typed is not None else None)
        if error:
            errors.append(error)
        elif typed is not None:
            values[rule.attribute] = typed
            written[rule.attribute] = value
    if errors:
        return errors
    if "stale_after_seconds" not in values:
        tick = values.get("tick_seconds", ScalingSettings.tick_seconds)
        values["stale_after_seconds"] = stale_after_for(tick)
    defaults = ScalingSettings()
    merged = {
        rule.attribute: values.get(rule.attribute, getattr(defaults, rule.attribute))
        for rule in _RULES
    }
    shown = {attribute: written.get(attribute, merged[attribute]) for attribute in merged}
    cross = _cross_errors(merged, shown)
    if cross:
        return cross
    return dataclasses.replace(defaults, **values)


def from_spec(spec: models.Scaling, *, stale_after_seconds: float | None = None) -> ScalingSettings:
    """Settings from a parsed CR's `spec.scaling` (already valid: pydantic and the CRD agree)."""
    return ScalingSettings(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        target_occupancy=spec.target_occupancy,
        tolerance=spec.tolerance,
        stable_window_seconds=spec.stable_window_seconds,
        panic_window_seconds=spec.panic_window_seconds,
        panic_threshold=spec.panic_threshold,
        max_scale_up_rate=spec.max_scale_up_rate,
        max_scale_down_rate=spec.max_scale_down_rate,
        scale_down_delay_seconds=spec.scale_down_delay_seconds,
        tick_seconds=spec.tick_seconds,
        target_tokens_per_second=spec.target_tokens_per_second,
        stale_after_seconds=(
            stale_after_for(spec.tick_seconds)
            if stale_after_seconds is None
            else stale_after_seconds
        ),
    )
