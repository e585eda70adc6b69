"""`spec.slo`: latency targets at a percentile, as Kubernetes-style durations, validated with
the field named (the API server checks the same pattern and minProperties from the CRD)."""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest

from kvscale.api import crd, models

DURATIONS = [
    pytest.param("2s", 2.0, id="seconds"),
    pytest.param("100ms", 0.1, id="milliseconds"),
    pytest.param("0.5s", 0.5, id="fraction"),
    pytest.param(".25s", 0.25, id="leading-dot"),
    pytest.param("1.5m", 90.0, id="minutes"),
    pytest.param("007s", 7.0, id="leading-zeros"),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert re.fullmatch(models.DURATION_PATTERN, text)
    assert models.duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["0s", "0.0s", "0ms", "2", "s", "-1s", "1h", "1m30s", "2 s", "1e3ms", "2S", ""]
)
def test_durations_that_are_not_positive_single_unit_ones_are_refused(text: str) -> None:
    assert not re.fullmatch(models.DURATION_PATTERN, text)
    with pytest.raises(pydantic.ValidationError) as caught:
        models.LatencyTarget.model_validate({"p90": text})
    assert caught.value.errors()[0]["loc"] == ("p90",)


def test_targets_are_percentile_fractions_and_seconds_lowest_first() -> None:
    target = models.LatencyTarget.model_validate({"p99": "5s", "p50": "800ms"})
    assert target.targets() == ((0.5, 0.8), (0.99, 5.0))


def test_the_issues_example_parses() -> None:
    spec = models.InferenceDeploymentSpec.model_validate(
        {"model": {"name": "m"}, "slo": {"ttft": {"p90": "2s"}, "itl": {"p90": "100ms"}}}
    )
    assert spec.slo is not None
    assert spec.slo.ttft is not None
    assert spec.slo.itl is not None
    assert spec.slo.ttft.targets() == ((0.9, 2.0),)
    assert spec.slo.itl.targets() == ((0.9, 0.1),)


def test_without_slo_the_spec_is_as_before() -> None:
    spec = models.InferenceDeploymentSpec.model_validate({"model": {"name": "m"}})
    assert spec.slo is None
    assert "slo" not in spec.model_dump(by_alias=True, exclude_none=True)


REFUSED: list[Any] = [
    pytest.param({"ttft": {}}, ("slo", "ttft"), "set at least one of p50", id="no-percentile"),
    pytest.param({}, ("slo",), "set at least one of ttft, itl, tpot", id="no-target"),
    pytest.param({"ttft": {"p90": "0s"}}, ("slo", "ttft", "p90"), "pattern", id="zero"),
    pytest.param({"ttft": {"p85": "1s"}}, ("slo", "ttft", "p85"), "Extra", id="unknown-pct"),
    pytest.param({"e2e": {"p90": "1s"}}, ("slo", "e2e"), "Extra", id="unknown-signal"),
]


@pytest.mark.parametrize(("slo", "loc", "says"), REFUSED)
def test_bad_slos_are_refused_naming_the_field(
    slo: dict[str, Any], loc: tuple[str, ...], says: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        models.InferenceDeploymentSpec.model_validate({"model": {"name": "m"}, "slo": slo})
    [error] = caught.value.errors()
    assert error["loc"] == loc
    assert says in error["msg"]


def test_the_crd_asks_the_api_server_for_the_same_rules() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    slo = spec["spec"]["properties"]["slo"]
    assert slo["minProperties"] == 1
    for signal in ("ttft", "itl"):
        target = slo["properties"][signal]
        assert target["minProperties"] == 1
        assert set(target["properties"]) == {"p50", "p90", "p95", "p99"}
        assert {p["pattern"] for p in target["properties"].values()} == {models.DURATION_PATTERN}
