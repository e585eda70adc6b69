"""Field ranges and rules across fields, declared once and worded for each reader. Pure: no I/O.

A field's range is declared once, in its pydantic annotation (`Field(ge=0, le=10_000)`); a rule
across fields is declared once, as a value in its model's `rules`. Everything else derives from
those declarations:

- the CRD generator (`kvscale.api.crd`) writes the ranges as OpenAPI bounds and each rule as a
  CEL rule (`Rule.cel`) the API server enforces at admission;
- the models' validator checks each rule (`Rule.holds`) with the CEL rule's message, so objects
  parsed in tests and by `kvscale simulate` obey what the API server enforces;
- `kvscale.scaling.settings` reads the ranges (`range_of`) and words a broken range or rule
  Knative-style, naming the field, its value and the bound: ``maxScaleUpRate = 0.5, must be
  greater than 1.0`` (`Range.error`, `Rule.explain`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import annotated_types
import pydantic


@dataclasses.dataclass(frozen=True)
class Range:
    """The type and bounds of one numeric field, with its wire (camelCase) name for messages."""

    key: str
    integer: bool  # True: an int field, whose bounds read as integers
    nullable: bool  # True: None (unset) is a valid value and skips the checks
    low: float | None = None
    low_open: bool = False  # True: the value must be greater than `low`; False: at least `low`
    high: float | None = None
    high_open: bool = False  # True: the value must be less than `high`; False: at most `high`

    def bound(self, value: float) -> str:
        return str(int(value)) if self.integer else repr(float(value))

    def error(self, value: float, written: object) -> str | None:
        """The error for a value out of range, showing it as it was `written`; else None."""
        low, high = self.low, self.high
        if low is not None and (value < low or (self.low_open and value == low)):
            relation = "greater than" if self.low_open else "at least"
            return f"{self.key} = {written!r}, must be {relation} {self.bound(low)}"
        if high is not None and (value > high or (self.high_open and value == high)):
            relation = "less than" if self.high_open else "at most"
            return f"{self.key} = {written!r}, must be {relation} {self.bound(high)}"
        return None

    def low_cel(self) -> str | None:
        """The lower bound as a CEL comparison (`> 0`, `>= 1`), or None without one."""
        if self.low is None:
            return None
        bound = self.bound(self.low) if self.integer else f"{self.low:g}"
        return f"{'>' if self.low_open else '>='} {bound}"


def range_of(key: str, annotation: Any, metadata: Iterable[object] = ()) -> Range:
    """The range of a field from its type annotation and pydantic metadata.

    `Optional[Annotated[float, Field(gt=0)]]` (how an optional bounded field is written) keeps
    its bounds inside the annotation, so both places are read. Raises TypeError for a field
    that is neither an int nor a float: ranges are only about numbers.
    """
    found = list(metadata)
    nullable = False
    options = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in options:
        nullable = True
        [annotation] = [option for option in options if option is not type(None)]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            found += extra.metadata if isinstance(extra, pydantic.fields.FieldInfo) else [extra]
    if annotation not in (int, float):
        raise TypeError(f"{key}: a range needs an int or a float field, not {annotation!r}")
    limits: dict[str, Any] = {}
    for item in found:
        if isinstance(item, annotated_types.Gt):
            limits |= {"low": item.gt, "low_open": True}
        elif isinstance(item, annotated_types.Ge):
            limits |= {"low": item.ge, "low_open": False}
        elif isinstance(item, annotated_types.Lt):
            limits |= {"high": item.lt, "high_open": True}
        elif isinstance(item, annotated_types.Le):
            limits |= {"high": item.le, "high_open": False}
    return Range(key, annotation is int, nullable, **limits)


def alias(model: type[pydantic.BaseModel], attribute: str) -> str:
    """A field's wire name (its alias), which CEL rules and messages use."""
    field = model.model_fields[attribute]
    return field.alias or attribute


def model_range(model: type[pydantic.BaseModel], attribute: str) -> Range:
    """The range of one field of a model, named by its wire name."""
    field = model.model_fields[attribute]
    return range_of(alias(model, attribute), field.annotation, field.metadata)


@dataclasses.dataclass(frozen=True)
class AtMost:
    """`field` <= `limit`, two fields of one object (minReplicas <= maxReplicas)."""

    field: str  # Python attribute names
    limit: str

    def cel(self, model: type[pydantic.BaseModel]) -> tuple[str, str, str | None]:
        """(rule, message, fieldPath): the error is reported at `field`, the one to fix."""
        field = alias(model, self.field)
        return f"self.{field} <= self.{alias(model, self.limit)}", self.message(model), f".{field}"

    def message(self, model: type[pydantic.BaseModel]) -> str:
        return (
            f"{alias(model, self.field)} must be less than or equal to {alias(model, self.limit)}"
        )

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the rule holds for values keyed by attribute name."""
        return bool(values[self.field] <= values[self.limit])

    def explain(self, model: type[pydantic.BaseModel], written: Mapping[str, object]) -> str:
        """The broken rule, Knative-style, with both values as they were written."""
        return (
            f"{alias(model, self.field)} = {written[self.field]!r}, must be less than or equal "
            f"to {alias(model, self.limit)} ({written[self.limit]!r})"
        )


@dataclasses.dataclass(frozen=True)
class RequiredWhen:
    """`field` must be set when `switch` has `value` (policy swap needs swapSpaceGiB)."""

    field: str  # Python attribute names
    switch: str
    value: str

    def cel(self, model: type[pydantic.BaseModel]) -> tuple[str, str, str | None]:
        """(rule, message, fieldPath); CEL also checks the field's lower bound, if it has one."""
        field, switch = alias(model, self.field), alias(model, self.switch)
        low = model_range(model, self.field).low_cel()
        present = (
            f"has(self.{field})" if low is None else f"(has(self.{field}) && self.{field} {low})"
        )
        return f"self.{switch} != '{self.value}' || {present}", self.message(model), f".{field}"

    def message(self, model: type[pydantic.BaseModel]) -> str:
        low = model_range(model, self.field).low_cel()
        need = "is required" if low is None else f"is required and must be {low}"
        return f"{alias(model, self.field)} {need} when {alias(model, self.switch)} is {self.value}"

    def holds(self, values: Mapping[str, Any]) -> bool:
        # The field's own bound is checked with the field; here only its presence.
        return values[self.switch] != self.value or values[self.field] is not None

    def explain(self, model: type[pydantic.BaseModel], written: Mapping[str, object]) -> str:
        return (
            f"{alias(model, self.field)} = {written[self.field]!r}, must be set when "
            f"{alias(model, self.switch)} is {self.value}"
        )


@dataclasses.dataclass(frozen=True)
class ExactlyOne:
    """Exactly one of `fields` is set: the members of a one-of (a volume is a hostPath or a
    PersistentVolumeClaim, never both or neither)."""

    fields: tuple[str, ...]  # Python attribute names, at least two

    def cel(self, model: type[pydantic.BaseModel]) -> tuple[str, str, str | None]:
        """(rule, message, fieldPath): reported at the object, since no one member is wrong."""
        counts = " + ".join(f"(has(self.{alias(model, name)}) ? 1 : 0)" for name in self.fields)
        return f"{counts} == 1", self.message(model), None

    def message(self, model: type[pydantic.BaseModel]) -> str:
        return f"exactly one of {', '.join(alias(model, name) for name in self.fields)} must be set"

    def holds(self, values: Mapping[str, Any]) -> bool:
        return sum(values[name] is not None for name in self.fields) == 1

    def explain(self, model: type[pydantic.BaseModel], written: Mapping[str, object]) -> str:
        shown = ", ".join(f"{alias(model, name)} = {written[name]!r}" for name in self.fields)
        return f"{shown}: exactly one must be set"


Rule = AtMost | RequiredWhen | ExactlyOne
"""A rule across fields of one object."""


def broken(
    model: type[pydantic.BaseModel], rules: Iterable[Rule], values: Mapping[str, Any]
) -> list[str]:
    """The messages of the rules that `values` (keyed by attribute name) break, in order."""
    return [rule.message(model) for rule in rules if not rule.holds(values)]
