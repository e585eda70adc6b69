"""The sidecar's settings and their validation from command-line arguments. Pure.

`from_args` is the one place arguments are checked; each error names the flag and says what
would be valid, e.g. "--rate-window = 0.3 must be at least twice --poll-interval = 0.25".
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from urllib import parse as urlparse

DEFAULT_POLL_INTERVAL = 0.25
# The scrape deadline is not the poll interval: a busy vLLM answers /metrics after 0.2 s now and
# then (seen in `make demo`), and an answer that comes late is a sample, not a dead engine. A
# scrape that runs past the interval pushes the next one back; scrapes never overlap.
DEFAULT_TIMEOUT = 1.0
# Scrapes in a row without an answer before the engine is `unreachable`: one lost answer is
# noise, three are an engine that is gone or hung. With the defaults a dead or hung engine is
# unreachable within 3 * max(0.25, 1.0) + 1.0 = 4 s (`Settings.unreachable_within`), under the
# operator's 5 s staleness limit.
DEFAULT_UNREACHABLE_AFTER = 3
DEFAULT_RATE_WINDOW = 5.0
# Token throughput is a load level, not an alarm: a longer window than the preemption rate's
# keeps Poisson noise in arrivals (a few large prompts in one 5 s window) from reading as a
# load step. `kvscale simulate` on the Azure traces: 5 s windows bought 15-20% more GPU-hours
# for the same SLO attainment than 15 s windows (docs/simulation.md).
DEFAULT_THROUGHPUT_WINDOW = 15.0
# Latency quantiles need observations: at 2 requests/s a 30 s window holds about 60 first
# tokens, enough for a p90 (six above it); shorter windows make p90 the largest of a handful.
# Without the flag a slow poll stretches the window to four polls: the operator renders no
# --latency-window, and a pod must not fail on the sidecar's own default.
DEFAULT_LATENCY_WINDOW = 30.0
LATENCY_WINDOW_POLLS = 4
DEFAULT_LISTEN = "127.0.0.1:8081"
# vLLM's /metrics is ~50 KB; anything near this limit is not a vLLM engine's.
MAX_BODY_BYTES = 8 << 20


class SettingsError(ValueError):
    """A setting is invalid; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the sidecar needs to run."""

    engine_url: str
    """The engine's base URL, no trailing slash; /metrics and /health are appended."""
    listen_host: str
    listen_port: int
    """0 picks a free port (tests)."""
    pod: str
    namespace: str | None
    model: str | None
    """Served model name for reports; None takes the engine's `model_name` label."""
    poll_interval: float = DEFAULT_POLL_INTERVAL
    """Seconds between the starts of two scrapes; scrapes never overlap."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one scrape (/health then /metrics) may take; may exceed poll_interval."""
    unreachable_after: int = DEFAULT_UNREACHABLE_AFTER
    """Scrapes in a row without an answer before an engine that was up is `unreachable`."""
    rate_window: float = DEFAULT_RATE_WINDOW
    """Seconds of samples that rates (preemptions, prefix hits, offload) are computed over."""
    throughput_window: float = DEFAULT_THROUGHPUT_WINDOW
    """Seconds of samples that token throughput (prompt and generated tokens/s) is over."""
    latency_window: float = DEFAULT_LATENCY_WINDOW
    """Seconds of histogram snapshots that latency quantiles (TTFT, ITL, queue) are over."""
    max_body_bytes: int = MAX_BODY_BYTES

    @property
    def unreachable_within(self) -> float:
        """Seconds from an engine's death or hang until its report says `unreachable`, at most.

        Scrapes start at most max(poll_interval, timeout) apart (a late one pushes the next
        back) and each ends within `timeout`. The first scrape that starts after the engine
        fails starts within one such gap; the `unreachable_after`-th failure in a row ends
        within (unreachable_after - 1) gaps and one timeout after that.
        """
        return self.unreachable_after * max(self.poll_interval, self.timeout) + self.timeout

    @property
    def health_url(self) -> str:
        return f"{self.engine_url}/health"

    @property
    def metrics_url(self) -> str:
        return f"{self.engine_url}/metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `kvscale sidecar` flags."""
    parser.add_argument(
        "--engine-url", required=True, help="engine base URL; /metrics and /health are appended"
    )
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="HOST:PORT to serve on (%(default)s)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help="seconds between scrapes (%(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds one scrape (/health then /metrics) may take; a longer one is a missed "
        "scrape (%(default)s)",
    )
    parser.add_argument(
        "--unreachable-after",
        type=int,
        default=DEFAULT_UNREACHABLE_AFTER,
        help="missed scrapes in a row before an engine that was up is reported unreachable "
        "(%(default)s)",
    )
    parser.add_argument(
        "--rate-window",
        type=float,
        default=DEFAULT_RATE_WINDOW,
        help="seconds of samples rates are computed over (%(default)s)",
    )
    parser.add_argument(
        "--throughput-window",
        type=float,
        default=DEFAULT_THROUGHPUT_WINDOW,
        help="seconds of samples token throughput is computed over (%(default)s)",
    )
    parser.add_argument(
        "--latency-window",
        type=float,
        default=None,
        help=f"seconds of samples latency quantiles are computed over (default: "
        f"{DEFAULT_LATENCY_WINDOW:g}, or {LATENCY_WINDOW_POLLS} poll intervals if longer)",
    )
    parser.add_argument("--pod", default=None, help="pod name (default: $POD_NAME, else host)")
    parser.add_argument("--namespace", default=None, help="namespace (default: $POD_NAMESPACE)")
    parser.add_argument(
        "--model", default=None, help="served model name (default: the engine's model_name label)"
    )


def from_args(args: argparse.Namespace, env: Mapping[str, str], hostname: str) -> Settings:
    """Validate `kvscale sidecar` arguments; pod and namespace default from the downward API."""
    host, port = parse_listen(args.listen)
    pod = args.pod or env.get("POD_NAME") or hostname
    if not pod:
        raise SettingsError("--pod: empty, and neither POD_NAME nor the host name is set")
    settings = Settings(
        engine_url=parse_engine_url(args.engine_url),
        listen_host=host,
        listen_port=port,
        pod=pod,
        namespace=args.namespace or env.get("POD_NAMESPACE") or None,
        model=args.model or None,
        poll_interval=_positive("--poll-interval", args.poll_interval),
        timeout=_positive("--timeout", args.timeout),
        unreachable_after=_at_least_one("--unreachable-after", args.unreachable_after),
        rate_window=_positive("--rate-window", args.rate_window),
        throughput_window=_positive("--throughput-window", args.throughput_window),
        latency_window=(
            max(DEFAULT_LATENCY_WINDOW, LATENCY_WINDOW_POLLS * args.poll_interval)
            if args.latency_window is None
            else _positive("--latency-window", args.latency_window)
        ),
    )
    if settings.rate_window < 2 * settings.poll_interval:
        raise SettingsError(
            f"--rate-window = {settings.rate_window:g} must be at least twice --poll-interval "
            f"= {settings.poll_interval:g}, or a rate never has two samples"
        )
    for flag, window in (
        ("--throughput-window", settings.throughput_window),
        ("--latency-window", settings.latency_window),
    ):
        if window < 2 * settings.poll_interval:
            raise SettingsError(
                f"{flag} = {window:g} must be at least twice --poll-interval = "
                f"{settings.poll_interval:g}, or a window never has two samples"
            )
    return settings


def parse_engine_url(value: str) -> str:
    """An http(s) base URL with a host, returned without a trailing slash."""
    parts = urlparse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"--engine-url = {value!r} must be an http:// or https:// URL with a host, "
            "e.g. http://10.0.0.7:8000"
        )
    if parts.query or parts.fragment:
        raise SettingsError(f"--engine-url = {value!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - urllib checks the port only when it is read
    except ValueError:
        raise SettingsError(f"--engine-url = {value!r} has an invalid port") from None
    return value.rstrip("/")


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) to serve on."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        raise SettingsError(f"--listen = {value!r} must be HOST:PORT, e.g. 127.0.0.1:8081")
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"--listen = {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"--listen = {value!r}: port {port} is outside 0..65535")
    return host, port


def _at_least_one(flag: str, value: int) -> int:
    if value < 1:
        raise SettingsError(f"{flag} = {value} must be a whole number of scrapes, at least 1")
    return value


def _positive(flag: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"{flag} = {value:g} must be a number of seconds greater than 0")
    return value
