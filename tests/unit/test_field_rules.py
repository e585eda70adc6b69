"""One declaration of a range or a cross-field rule, read as CEL, as a check and as a message."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pydantic
import pytest
from pydantic import Field

from kvscale.api import crd, models, rule


class Pair(models._Model):
    """A stand-in model: one rule of each kind, one bounded and one unbounded optional field."""

    rules: ClassVar[tuple[rule.Rule, ...]] = (
        rule.AtMost("low_count", "high_count"),
        rule.RequiredWhen("size_gib", "mode", "big"),
        rule.RequiredWhen("label_count", "mode", "labelled"),
        rule.ExactlyOne(("host_path", "claim_name")),
    )

    low_count: Annotated[int, Field(ge=0, le=10)] = 0
    high_count: Annotated[int, Field(ge=1, le=10)] = 1
    mode: str = "small"
    size_gib: Annotated[float, Field(gt=0.5, le=4)] | None = None
    label_count: int | None = None
    host_path: str | None = "/data"
    claim_name: str | None = None


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("low_count", rule.Range("lowCount", True, False, 0, False, 10, False)),
        ("high_count", rule.Range("highCount", True, False, 1, False, 10, False)),
        ("size_gib", rule.Range("sizeGib", False, True, 0.5, True, 4, False)),
        ("label_count", rule.Range("labelCount", True, True)),
    ],
)
def test_range_is_read_from_the_annotation(attribute: str, expected: rule.Range) -> None:
    assert rule.model_range(Pair, attribute) == expected


def test_a_range_needs_a_number() -> None:
    with pytest.raises(TypeError, match=r"^mode: a range needs an int or a float field"):
        rule.model_range(Pair, "mode")


@pytest.mark.parametrize(
    ("field_range", "value", "error"),
    [
        (rule.Range("n", True, False, 0, False, 10, False), -1, "n = -1, must be at least 0"),
        (rule.Range("n", True, False, 0, True, 10, True), 0, "n = 0, must be greater than 0"),
        (rule.Range("n", True, False, 0, True, 10, True), 10, "n = 10, must be less than 10"),
        (rule.Range("x", False, False, 0, False, 1, False), 1.5, "x = 1.5, must be at most 1.0"),
        (rule.Range("x", False, False, 0, False, 1, False), 1.0, None),
        (rule.Range("x", False, False), 1e300, None),  # no bounds, nothing to break
    ],
)
def test_range_error_names_field_value_and_bound(
    field_range: rule.Range, value: float, error: str | None
) -> None:
    assert field_range.error(value, value) == error


def test_cel_is_generated_from_the_declarations() -> None:
    assert crd.cel_rules(Pair) == (
        (
            "self.lowCount <= self.highCount",
            "lowCount must be less than or equal to highCount",
            ".lowCount",
        ),
        # The field's own lower bound is repeated in CEL and in the message.
        (
            "self.mode != 'big' || (has(self.sizeGib) && self.sizeGib > 0.5)",
            "sizeGib is required and must be > 0.5 when mode is big",
            ".sizeGib",
        ),
        (
            "self.mode != 'labelled' || has(self.labelCount)",
            "labelCount is required when mode is labelled",
            ".labelCount",
        ),
        # No one member of a one-of is wrong: the error names the object.
        (
            "(has(self.hostPath) ? 1 : 0) + (has(self.claimName) ? 1 : 0) == 1",
            "exactly one of hostPath, claimName must be set",
            None,
        ),
    )


@pytest.mark.parametrize(
    ("wire", "messages"),
    [
        ({}, []),
        ({"lowCount": 3, "highCount": 3}, []),
        ({"lowCount": 4, "highCount": 3}, ["lowCount must be less than or equal to highCount"]),
        ({"mode": "big", "sizeGib": 1}, []),
        ({"mode": "labelled"}, ["labelCount is required when mode is labelled"]),
        # hostPath defaults to /data: a claim beside it makes two; a null is dropped, as the
        # API server drops it, and the default is the one.
        ({"claimName": "models"}, ["exactly one of hostPath, claimName must be set"]),
        ({"hostPath": None}, []),
        (
            {"lowCount": 5, "mode": "big"},
            [
                "lowCount must be less than or equal to highCount",
                "sizeGib is required and must be > 0.5 when mode is big",
            ],
        ),
    ],
)
def test_the_model_checks_every_rule(wire: dict[str, Any], messages: list[str]) -> None:
    if not messages:
        Pair.model_validate(wire)
        return
    with pytest.raises(pydantic.ValidationError) as caught:
        Pair.model_validate(wire)
    [error] = caught.value.errors()
    assert error["msg"] == "Value error, " + "; ".join(messages)


def test_explain_words_a_broken_rule_knative_style() -> None:
    at_most, required, _, one_of = Pair.rules
    written = {"low_count": 5, "high_count": 2.0, "mode": "big", "size_gib": None}
    assert at_most.explain(Pair, written) == (
        "lowCount = 5, must be less than or equal to highCount (2.0)"
    )
    assert required.explain(Pair, written) == "sizeGib = None, must be set when mode is big"
    assert one_of.explain(Pair, {"host_path": "/data", "claim_name": "models"}) == (
        "hostPath = '/data', claimName = 'models': exactly one must be set"
    )
    assert not one_of.holds({"host_path": None, "claim_name": None})
    assert one_of.holds({"host_path": None, "claim_name": "models"})
