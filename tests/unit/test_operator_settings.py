"""The operator's settings from `kvscale operator`'s arguments, and Kubernetes quantities."""

from __future__ import annotations

import pathlib

import pytest

from kvscale import cli
from kvscale_operator import config
from kvscale_operator.reconciler import quantity


def settings(*argv: str) -> config.Settings:
    return config.Settings.from_args(cli.build_parser().parse_args(["operator", *argv]))


def test_defaults_watch_everything_and_serve_nothing() -> None:
    found = settings()
    assert found.kubeconfig is None
    assert found.namespaces == ()
    assert (found.metrics_port, found.health_port) == (0, 0)
    assert found.field_manager == "kvscale-operator"
    assert found.scale_field_manager == "kvscale-autoscaler"
    assert found.annotation_prefix == "kvscale.dev"


def test_arguments_are_read() -> None:
    found = settings(
        "--kubeconfig", "/tmp/kc", "--namespace", "a", "--namespace", "b", "--namespace", "a",
        "--metrics-port", "9100", "--verbose",
    )  # fmt: skip
    assert found.kubeconfig == pathlib.Path("/tmp/kc")
    assert found.namespaces == ("a", "b")
    assert found.metrics_port == 9100
    assert found.verbose is True


def test_a_port_out_of_range_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"--metrics-port = 70000, must be between 0 \(off\)"):
        settings("--metrics-port", "70000")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8Gi", 8 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1.5Gi", 1.5 * 2**30),
        ("500m", 0.5),
        ("2", 2.0),
        ("1G", 1e9),
        ("1e9", 1e9),
        ("1E3", 1e3),
        ("0.5", 0.5),
        (".5", 0.5),
    ],
)
def test_quantities_parse_to_base_units(text: str, value: float) -> None:
    assert quantity.parse(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "Gi", "8Gb", "8 Xi", "abc", "1..2"])
def test_what_is_not_a_quantity_is_none(text: str) -> None:
    assert quantity.parse(text) is None
