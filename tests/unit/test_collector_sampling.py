"""Which sidecars are asked each tick (Knative's sample size, a rotating window), and how
their answers come back: one result per pod, errors as values, bounded concurrency.

The collector tests run a small aiohttp server on 127.0.0.1 (a free port) that plays every
kind of sidecar: good, wrong pod, garbage, schema error, HTTP error, slow, oversized.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from kvscale import report
from kvscale_operator.autoscaler import collector, sampling


@pytest.mark.parametrize(
    ("num_pods", "expected"),
    [(0, 0), (1, 1), (3, 3), (4, 4), (5, 4), (10, 7), (15, 8), (100, 14), (500, 15), (2000, 16)],
)
def test_sample_size_is_knatives(num_pods: int, expected: int) -> None:
    assert sampling.sample_size(num_pods) == expected


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_sample_size_refuses_what_is_not_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="num_pods"):
        sampling.sample_size(bad)  # type: ignore[arg-type]


def test_choose_rotates_through_every_pod_in_a_stable_order() -> None:
    pods = [f"p{index}" for index in (3, 1, 4, 0, 2)]
    assert sampling.choose(pods, 0, 2) == ("p0", "p1")
    assert sampling.choose(pods, 1, 2) == ("p2", "p3")
    assert sampling.choose(pods, 2, 2) == ("p4", "p0")  # wraps around
    assert sampling.choose(pods, 7, 5) == ("p0", "p1", "p2", "p3", "p4")
    assert sampling.choose(pods, 0, 9) == ("p0", "p1", "p2", "p3", "p4")
    assert sampling.choose(pods, 0, 0) == ()
    assert sampling.choose(["b", "a", "b"], 0, 5) == ("a", "b")


@given(num_pods=st.integers(1, 300), tick=st.integers(0, 10_000))
def test_every_pod_is_asked_within_ceil_n_over_k_ticks(num_pods: int, tick: int) -> None:
    pods = [f"pod-{index}" for index in range(num_pods)]
    size = sampling.sample_size(num_pods)
    rounds = math.ceil(num_pods / size)
    asked: set[str] = set()
    for offset in range(rounds):
        chosen = sampling.choose(pods, tick + offset, size)
        assert len(chosen) == len(set(chosen)) == size
        asked.update(chosen)
    assert asked == set(pods)


def good(pod: str) -> str:
    return report.OccupancyReport(
        pod=pod,
        health=report.Health.OK,
        sampled_at=100.0,
        checked_at=100.0,
        served_at=100.5,
        age_seconds=0.5,
        block_size=32,
        num_gpu_blocks=65,
        num_used_blocks=16,
        usage_ratio=0.25,
        kv_capacity_tokens=2048,
        num_requests_running=2,
        num_requests_waiting=0,
        preemptions_total=0,
    ).to_json()


class Sidecars:
    """One server playing many sidecars, one per path; counts requests in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay = 0.0

    def app(self) -> web.Application:
        async def answer(request: web.Request) -> web.StreamResponse:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                if self.delay:
                    await asyncio.sleep(self.delay)
                return await self.reply(request.match_info["kind"], request.match_info["pod"])
            finally:
                self.in_flight -= 1

        app = web.Application()
        app.router.add_get("/{kind}/{pod}", answer)
        return app

    async def reply(self, kind: str, pod: str) -> web.StreamResponse:
        if kind == "good":
            return web.Response(text=good(pod), content_type="application/json")
        if kind == "wrong":
            return web.Response(text=good("someone-else"), content_type="application/json")
        if kind == "garbage":
            return web.Response(text="<html>hello</html>")
        if kind == "schema":
            return web.Response(text='{"schema_version": "kvscale.dev/occupancy/v1", "pod": "x"}')
        if kind == "v2":
            return web.Response(text='{"schema_version": "kvscale.dev/occupancy/v2"}')
        if kind == "error":
            return web.Response(status=503, text="engine starting")
        if kind == "slow":
            await asyncio.sleep(2.0)
            return web.Response(text=good(pod))
        if kind == "big":
            return web.Response(text=" " * (collector.MAX_REPORT_BYTES + 10) + good(pod))
        raise AssertionError(kind)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def serving(
    sidecars: Sidecars, scenario: Callable[[str, collector.Collector], Awaitable[None]]
) -> None:
    runner = web.AppRunner(sidecars.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = collector.Collector.session()
    try:
        await scenario(f"http://127.0.0.1:{port}", collector.Collector(session, max_concurrency=3))
    finally:
        await session.close()
        await runner.cleanup()


def test_every_target_gets_one_result_in_order_and_bad_ones_are_values_not_raises() -> None:
    kinds = ["good", "wrong", "garbage", "schema", "v2", "error", "slow", "big"]
    results: list[collector.Result] = []

    async def scenario(base: str, scraper: collector.Collector) -> None:
        targets = [collector.Target(f"pod-{kind}", f"uid-{kind}", f"{base}/{kind}/pod-{kind}")
                   for kind in kinds]  # fmt: skip
        refused = collector.Target(
            "pod-gone", "uid-gone", collector.url("127.0.0.1", closed_port())
        )
        results.extend(await scraper.collect([*targets, refused], timeout_seconds=0.5))

    asyncio.run(serving(Sidecars(), scenario))
    by_pod = {result.target.pod: result for result in results}
    assert [result.target.pod for result in results] == [f"pod-{k}" for k in kinds] + ["pod-gone"]
    ok = by_pod["pod-good"]
    assert ok.report is not None
    assert ok.error is None
    assert ok.failure is None
    assert ok.report.num_used_blocks == 16
    expected = {
        "pod-wrong": (collector.Failure.WRONG_POD, "the report is from pod 'someone-else'"),
        "pod-garbage": (collector.Failure.INVALID_REPORT, "invalid report: not JSON"),
        "pod-schema": (collector.Failure.INVALID_REPORT, "invalid report: health: "),
        "pod-v2": (collector.Failure.INVALID_REPORT, "unsupported major version 'v2'"),
        "pod-error": (collector.Failure.HTTP_STATUS, "HTTP 503"),
        "pod-slow": (collector.Failure.TIMEOUT, "no answer within 0.5 s"),
        "pod-big": (collector.Failure.TOO_LARGE, "answer larger than 65536 bytes"),
        "pod-gone": (collector.Failure.CONNECTION, "connection refused"),
    }
    for pod, (failure, words) in expected.items():
        result = by_pod[pod]
        assert result.report is None, pod
        assert result.failure is failure, pod
        assert result.error is not None, pod
        assert words in result.error, (pod, result.error)


def test_requests_in_flight_stay_within_the_bound_and_reports_parse() -> None:
    sidecars = Sidecars()
    sidecars.delay = 0.05
    results: list[collector.Result] = []

    async def scenario(base: str, scraper: collector.Collector) -> None:
        targets = [collector.Target(f"p{i}", f"u{i}", f"{base}/good/p{i}") for i in range(12)]
        results.extend(await scraper.collect(targets, timeout_seconds=2.0))

    asyncio.run(serving(sidecars, scenario))
    assert sidecars.most_in_flight == 3
    assert all(result.report is not None for result in results)
    assert all(result.seconds >= 0 and result.received_at > 0 for result in results)


def test_no_targets_no_requests() -> None:
    async def scenario(base: str, scraper: collector.Collector) -> None:
        assert await scraper.collect([], timeout_seconds=1.0) == []

    asyncio.run(serving(Sidecars(), scenario))


def test_urls_put_ipv6_pod_ips_in_brackets() -> None:
    assert collector.url("127.1.0.7", 9090) == "http://127.1.0.7:9090/v1/occupancy"
    assert collector.url("fd00::7", 9090) == "http://[fd00::7]:9090/v1/occupancy"


def test_a_collector_needs_at_least_one_slot() -> None:
    async def make() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ValueError, match="max_concurrency"):
                collector.Collector(session, max_concurrency=0)

    asyncio.run(make())
