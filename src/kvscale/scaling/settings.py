"""Scaling settings: the CR's `spec.scaling` as a small dataclass, checked in one function. Pure.

`ScalingSettings` mirrors `models.Scaling` field for field (same names in snake_case, same
defaults) and adds the limits the operator owns that the CR does not expose yet: how old a
report may be before it counts as stale, and when a pod's queue or preemptions count as
pressure.

`validate(raw)` is the one place that checks a raw mapping (camelCase keys, as in the CR's YAML
or a `kvscale simulate` config). It never raises on bad input: it returns either the settings
or the list of everything wrong, each message naming the field, its value and the rule, e.g.
``maxScaleUpRate = 0.5, must be greater than 1.0``. Nothing here restates a range or a rule:
the CR fields' ranges and the rules across them are read from `models.Scaling` (its field
annotations and `rules`, the declarations the CRD is generated from), and the operator-level
limits' ranges from their annotations below; so a spec the API server admits is a spec
`validate` accepts (a unit test checks the two agree at every bound).
`from_spec(models.Scaling)` maps an already validated spec. Constructing `ScalingSettings`
directly runs the same checks and raises `ValueError` with the same messages.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, alias_generators

from kvscale.api import models, rule

# A report older than this is stale. Three missed ticks at the default 1 s tick, plus slack for
# the sidecar's own poll interval (0.25 s by default) and the fetch; slower ticks scale it up.
DEFAULT_STALE_AFTER_SECONDS = 5.0
STALE_AFTER_TICKS = 3.0


LOOP_ONLY_FIELDS = frozenset({"mode"})
"""Fields of `spec.scaling` the decision does not see. The mode (Active or Advisory) is the
loop's business: switching it keeps what the autoscaler learned, so capacity learned while
advising carries into Active."""


def stale_after_for(tick_seconds: float) -> float:
    """The default staleness limit for a tick: at least 5 s, and never under three ticks."""
    return max(DEFAULT_STALE_AFTER_SECONDS, STALE_AFTER_TICKS * tick_seconds)


@dataclasses.dataclass(frozen=True)
class ScalingSettings:
    """Everything the decision needs to know about one InferenceDeployment's scaling.

    The CR's fields have its defaults (a test checks) and take their ranges from
    `models.Scaling`; the three fields the CR does not have declare theirs in their annotations.
    """

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
    stale_after_seconds: Annotated[float, Field(gt=0, le=3600)] = DEFAULT_STALE_AFTER_SECONDS
    """Not in the CR. A sample older than this (on the decision's clock) is stale."""
    pressure_preemptions_per_second: Annotated[float, Field(ge=0, le=1_000_000)] = 0.0
    """Not in the CR. A pod preempting faster than this is under pressure (0: any preemption)."""
    pressure_waiting_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 5
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


def _ranges() -> dict[str, rule.Range]:
    """Each field's range by attribute, in field order (the order of messages)."""
    hints = typing.get_type_hints(ScalingSettings, include_extras=True)
    ranges = {}
    for field in dataclasses.fields(ScalingSettings):
        if field.name in models.Scaling.model_fields:
            ranges[field.name] = rule.model_range(models.Scaling, field.name)
        else:
            key = alias_generators.to_camel(field.name)
            ranges[field.name] = rule.range_of(key, hints[field.name])
    return ranges


_RANGES = _ranges()
_ATTRIBUTE_BY_KEY = {field_range.key: attribute for attribute, field_range in _RANGES.items()}
KEYS = tuple(_ATTRIBUTE_BY_KEY)
"""The camelCase field names `validate` accepts."""


def _typed(field_range: rule.Range, value: object) -> tuple[int | float | None, str | None]:
    """The value as the field's type, or an error saying what type was expected."""
    key = field_range.key
    # bool is an int in Python, but `true` is never a count or a rate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if field_range.integer else "a number"
        return None, f"{key} = {value!r}, must be {kind}"
    if not math.isfinite(value):
        return None, f"{key} = {value!r}, must be a finite number"
    if field_range.integer:
        if isinstance(value, float) and not value.is_integer():
            return None, f"{key} = {value!r}, must be an integer"
        return int(value), None
    return float(value), None


def _checked(field_range: rule.Range, value: object) -> tuple[int | float | None, str | None]:
    """The value typed and within its range, or the first error about it."""
    typed, error = _typed(field_range, value)
    if error is None and typed is not None:
        error = field_range.error(typed, value)
    return typed, error


def _range_errors(settings: ScalingSettings) -> list[str]:
    """Type, range and cross-field errors of a settings object, in field order."""
    values = {attribute: getattr(settings, attribute) for attribute in _RANGES}
    errors = []
    for attribute, field_range in _RANGES.items():
        if values[attribute] is None and field_range.nullable:
            continue
        _, error = _checked(field_range, values[attribute])
        if error:
            errors.append(error)
    return errors or _cross_errors(values, values)


def _cross_errors(values: Mapping[str, float], written: Mapping[str, object]) -> list[str]:
    """The CR's rules across fields (`models.Scaling.rules`), on values each in its own range."""
    return [
        cross.explain(models.Scaling, written)
        for cross in models.Scaling.rules
        if not cross.holds(values)
    ]


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
    # Any: each value was checked against its field's range just above it is stored.
    values: dict[str, Any] = {}
    written: dict[str, object] = {}  # as given, for messages
    for key, value in raw.items():
        attribute = _ATTRIBUTE_BY_KEY.get(key) if isinstance(key, str) else None
        if attribute is None:
            errors.append(f"unknown field {key!r}; known fields: {', '.join(KEYS)}")
            continue
        if value is None and _RANGES[attribute].nullable:
            values[attribute] = None
            written[attribute] = None
            continue
        typed, error = _checked(_RANGES[attribute], value)
        if error:
            errors.append(error)
        elif typed is not None:
            values[attribute] = typed
            written[attribute] = value
    if errors:
        return errors
    if "stale_after_seconds" not in values:
        tick = values.get("tick_seconds", ScalingSettings.tick_seconds)
        values["stale_after_seconds"] = stale_after_for(tick)
    defaults = ScalingSettings()
    merged = {
        attribute: values.get(attribute, getattr(defaults, attribute)) for attribute in _RANGES
    }
    shown = {attribute: written.get(attribute, merged[attribute]) for attribute in merged}
    cross = _cross_errors(merged, shown)
    if cross:
        return cross
    return dataclasses.replace(defaults, **values)


def from_spec(spec: models.Scaling, *, stale_after_seconds: float | None = None) -> ScalingSettings:
    """Settings from a parsed CR's `spec.scaling` (already valid: pydantic and the CRD agree)."""
    return ScalingSettings(
        **spec.model_dump(exclude=set(LOOP_ONLY_FIELDS)),
        stale_after_seconds=(
            stale_after_for(spec.tick_seconds)
            if stale_after_seconds is None
            else stale_after_seconds
        ),
    )
