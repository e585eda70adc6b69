"""`kvscale sidecar` flags: defaults, the downward-API environment, and precise refusals."""

from __future__ import annotations

import argparse

import pytest

from kvscale import cli
from kvscale_sidecar import settings


def _args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["sidecar", *argv])


def test_defaults_and_downward_api_environment() -> None:
    config = settings.from_args(
        _args("--engine-url", "http://10.1.2.3:8000/"),
        env={"POD_NAME": "chat-0", "POD_NAMESPACE": "serving"},
        hostname="ignored",
    )
    assert config.engine_url == "http://10.1.2.3:8000"
    assert config.metrics_url == "http://10.1.2.3:8000/metrics"
    assert config.health_url == "http://10.1.2.3:8000/health"
    assert config.poll_interval == settings.DEFAULT_POLL_INTERVAL == 0.25
    # A late answer is a sample: the deadline is longer than the interval, and an engine that
    # stopped answering is unreachable within the stated bound, under the operator's 5 s.
    assert config.timeout == settings.DEFAULT_TIMEOUT > config.poll_interval
    assert config.unreachable_after == settings.DEFAULT_UNREACHABLE_AFTER
    assert config.unreachable_within == 3 * 1.0 + 1.0
    assert (config.listen_host, config.listen_port) == settings.parse_listen(
        settings.DEFAULT_LISTEN
    )
    assert config.pod == "chat-0"
    assert config.namespace == "serving"
    assert config.model is None


def test_flags_win_over_environment_and_host_name_is_the_last_resort() -> None:
    flagged = settings.from_args(
        _args("--engine-url", "http://e:1", "--pod", "a", "--namespace", "b", "--model", "m"),
        env={"POD_NAME": "x", "POD_NAMESPACE": "y"},
        hostname="h",
    )
    assert (flagged.pod, flagged.namespace, flagged.model) == ("a", "b", "m")
    bare = settings.from_args(_args("--engine-url", "http://e:1"), env={}, hostname="h")
    assert (bare.pod, bare.namespace) == ("h", None)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.1.0.5:9000", ("127.1.0.5", 9000)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert settings.parse_listen(listen) == expected


REFUSED = [
    pytest.param(
        ["--engine-url", "10.0.0.1:8000"], "--engine-url = '10.0.0.1:8000' must be", id="no-scheme"
    ),
    pytest.param(["--engine-url", "ftp://e"], "must be an http:// or https:// URL", id="ftp"),
    pytest.param(["--engine-url", "http://e:99999"], "invalid port", id="bad-port"),
    pytest.param(["--engine-url", "http://e/?x=1"], "query or fragment", id="query"),
    pytest.param(
        ["--engine-url", "http://e", "--listen", "8081"],
        "--listen = '8081' must be HOST:PORT",
        id="listen-no-host",
    ),
    pytest.param(
        ["--engine-url", "http://e", "--listen", "h:http"],
        "port 'http' is not a number",
        id="listen-name",
    ),
    pytest.param(
        ["--engine-url", "http://e", "--listen", "h:70000"], "outside 0..65535", id="listen-range"
    ),
    pytest.param(
        ["--engine-url", "http://e", "--poll-interval", "0"],
        "--poll-interval = 0 must be",
        id="zero-interval",
    ),
    pytest.param(
        ["--engine-url", "http://e", "--timeout", "nan"],
        "--timeout = nan must be",
        id="nan-timeout",
    ),
    pytest.param(
        ["--engine-url", "http://e", "--unreachable-after", "0"],
        "--unreachable-after = 0 must be a whole number of scrapes, at least 1",
        id="no-grace-at-all",
    ),
    pytest.param(
        ["--engine-url", "http://e", "--rate-window", "0.3"],
        "--rate-window = 0.3 must be at least twice --poll-interval",
        id="window-too-short",
    ),
    pytest.param(
        ["--engine-url", "http://e", "--throughput-window", "0.4"],
        "--throughput-window = 0.4 must be at least twice --poll-interval",
        id="throughput-window-too-short",
    ),
    pytest.param(
        ["--engine-url", "http://e", "--throughput-window", "-1"],
        "--throughput-window = -1 must be",
        id="negative-throughput-window",
    ),
]


def test_throughput_has_its_own_longer_window() -> None:
    made = settings.from_args(
        _args("--engine-url", "http://e"), env={"POD_NAME": "p"}, hostname="h"
    )
    assert (made.rate_window, made.throughput_window) == (5.0, 15.0)
    made = settings.from_args(
        _args("--engine-url", "http://e", "--throughput-window", "30"),
        env={"POD_NAME": "p"},
        hostname="h",
    )
    assert made.throughput_window == 30.0


@pytest.mark.parametrize(
    ("argv", "within"),
    [
        # Deadline under the interval: scrapes start an interval apart.
        (["--poll-interval", "1", "--timeout", "0.5", "--unreachable-after", "2"], 2 * 1 + 0.5),
        # Deadline over the interval: a hung engine's scrapes start a deadline apart.
        (["--poll-interval", "0.25", "--timeout", "2", "--unreachable-after", "1"], 1 * 2 + 2),
    ],
)
def test_the_detection_bound_follows_interval_deadline_and_grace(
    argv: list[str], within: float
) -> None:
    made = settings.from_args(_args("--engine-url", "http://e", *argv), env={}, hostname="h")
    assert made.unreachable_within == pytest.approx(within)


@pytest.mark.parametrize(("argv", "says"), REFUSED)
def test_invalid_flags_are_refused_naming_the_flag(argv: list[str], says: str) -> None:
    with pytest.raises(settings.SettingsError) as caught:
        settings.from_args(_args(*argv), env={"POD_NAME": "p"}, hostname="h")
    assert says in str(caught.value)


def test_cli_reports_a_bad_flag_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sidecar", "--engine-url", "nope"]) == 2
    assert "kvscale sidecar: --engine-url = 'nope'" in capsys.readouterr().err
