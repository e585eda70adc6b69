"""Fetches the sidecars' occupancy reports, concurrently, by pod IP. Does I/O (HTTP).

One `Collector` per operator process, over one `aiohttp.ClientSession` (connections are kept
alive between ticks, so a steady deployment costs one request per pod per tick, no handshake).
`collect(targets, timeout_seconds)` asks every target at once, at most `max_concurrency`
requests in flight across the whole process, each bounded by its own timeout (the loop uses
one shorter than its tick), and returns one `Result` per target in the targets' order. It never
raises for a bad pod: a refused connection, a timeout, an HTTP error, an oversized body, a
document that is not a valid report (`kvscale.report.from_json`) or a report from another pod
(a pod IP reused by a new pod) is a `Result` with an `error` and a short `reason` for metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Callable, Sequence

import aiohttp

from kvscale import report

DEFAULT_MAX_CONCURRENCY = 256
MAX_REPORT_BYTES = 64 * 1024
"""A v1 report is about 1 KB; anything much larger is not one."""


class Failure(enum.StrEnum):
    """Why a report could not be had (the `reason` label of the scrape error metric)."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    HTTP_STATUS = "http_status"
    TOO_LARGE = "too_large"
    INVALID_REPORT = "invalid_report"
    WRONG_POD = "wrong_pod"


@dataclasses.dataclass(frozen=True)
class Target:
    """One sidecar to ask."""

    pod: str
    uid: str
    url: str


def url(ip: str, port: int) -> str:
    """The occupancy URL of a sidecar at a pod IP (IPv6 addresses in brackets)."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{report.PATH}"


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of asking one sidecar."""

    target: Target
    report: report.OccupancyReport | None
    """The parsed report; None when `error` says why not."""
    error: str | None
    """What went wrong, in words (naming the field for an invalid report)."""
    failure: Failure | None
    received_at: float
    """The collector's clock when the answer (or the failure) came."""
    seconds: float
    """How long the request took."""


class Collector:
    """Asks sidecars for their reports; see the module docstring."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency = {max_concurrency!r}, must be at least 1")
        self._session = session
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = clock

    @staticmethod
    def session(max_concurrency: int = DEFAULT_MAX_CONCURRENCY) -> aiohttp.ClientSession:
        """The one session an operator process uses (call from inside the event loop)."""
        connector = aiohttp.TCPConnector(limit=max_concurrency, keepalive_timeout=30)
        # trust_env=False: pod IPs are reached directly, never through a proxy from the env.
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            headers={"User-Agent": "kvscale-operator", "Accept": "application/json"},
        )

    async def collect(self, targets: Sequence[Target], timeout_seconds: float) -> list[Result]:
        """One result per target, in order; never raises for a bad target."""
        if not targets:
            return []
        limit = aiohttp.ClientTimeout(total=timeout_seconds)
        return list(await asyncio.gather(*(self._fetch(target, limit) for target in targets)))

    async def _fetch(self, target: Target, limit: aiohttp.ClientTimeout) -> Result:
        async with self._slots:
            started = self._clock()
            found, error, failure = await self._ask(target, limit)
            ended = self._clock()
        return Result(target, found, error, failure, ended, ended - started)

    async def _ask(
        self, target: Target, limit: aiohttp.ClientTimeout
    ) -> tuple[report.OccupancyReport | None, str | None, Failure | None]:
        try:
            async with self._session.get(target.url, timeout=limit) as response:
                if response.status != 200:
                    return None, f"HTTP {response.status}", Failure.HTTP_STATUS
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(16 * 1024):
                    size += len(chunk)
                    if size > MAX_REPORT_BYTES:
                        break
                    chunks.append(chunk)
        except TimeoutError:
            return None, f"no answer within {limit.total:g} s", Failure.TIMEOUT
        except (aiohttp.ClientError, OSError) as error:
            return None, _connection_error(error), Failure.CONNECTION
        if size > MAX_REPORT_BYTES:
            return None, f"answer larger than {MAX_REPORT_BYTES} bytes", Failure.TOO_LARGE
        try:
            found = report.from_json(b"".join(chunks))
        except report.ReportError as error:
            return None, f"invalid report: {error}", Failure.INVALID_REPORT
        if found.pod != target.pod:
            return (
                None,
                f"the report is from pod {found.pod!r}: the address belongs to another pod",
                Failure.WRONG_POD,
            )
        return found, None, None


def _connection_error(error: BaseException) -> str:
    """A connection error in a few stable words (no addresses or errno noise)."""
    if isinstance(error, aiohttp.ClientConnectorError):
        cause = error.os_error
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect: {cause.strerror or type(cause).__name__}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the sidecar closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    return f"request failed: {type(error).__name__}"
