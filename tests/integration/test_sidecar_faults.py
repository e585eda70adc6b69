"""The sidecar against an engine that misbehaves: every fault gives a clear state, serving goes on.

The engine here is a small in-process HTTP server that answers like vLLM (its /metrics is a real
vLLM capture from tests/data) or fails the way a test asks: not up yet, killed, garbage,
truncated, a renamed metric, bytes that are not text, an oversized body, HTTP errors, hanging,
answering slowly, and now and then too slowly. The sidecar runs in-process through
`kvscale_sidecar.main.start` with a fast poll, and is read over HTTP like the operator reads it.
Waits have deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from kvscale import report
from kvscale_sidecar import main, settings, vllm_metrics

CAPTURE = pathlib.Path(__file__).resolve().parent.parent / "data" / "vllm_metrics_idle.txt"
HOST = "127.0.0.1"
POLL = 0.05
TIMEOUT = 0.04
MAX_BODY = 200_000
DEADLINE_S = 15.0
GRACE = settings.DEFAULT_UNREACHABLE_AFTER
# For the slow engine: a deadline well past the interval, and answers between the two.
SLOW_TIMEOUT = 0.5
SLOW_ANSWER = 0.15


def _capture() -> str:
    if not CAPTURE.is_file():
        pytest.fail(f"{CAPTURE} is missing; `make engine-env` saves it", pytrace=False)
    return CAPTURE.read_text()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclasses.dataclass
class FakeEngine:
    """Answers /health and /metrics like vLLM, or fails as `mode` says."""

    port: int
    mode: str = "ok"
    text: str = dataclasses.field(default_factory=_capture)
    delay: float = 0.0
    """Seconds "slow" waits before every /metrics answer, and "flaky" before all but every
    GRACE-th one: as many misses in a row as the grace allows, then an answer."""
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _metrics_requests: int = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def kill(self) -> None:
        """Stop answering at once, like a killed process: connections close, nothing listens."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hang(self) -> None:
        await self._release.wait()

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "hang":
            await self._hang()
        if self.mode == "health-503":
            return web.Response(status=503)
        if self.mode == "health-404":
            return web.Response(status=404, text="Not Found")
        return web.Response()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        text = self.text
        self._metrics_requests += 1
        match self.mode:
            case "slow":
                await asyncio.sleep(self.delay)
            case "flaky" if self._metrics_requests % GRACE:
                await asyncio.sleep(self.delay)
            case "hang-metrics":
                await self._hang()
            case "garbage":
                return web.Response(text="<html><body>502 Bad Gateway</body></html>")
            case "renamed":
                text = text.replace(vllm_metrics.NUM_REQUESTS_WAITING + "{", "vllm:queued{")
                text = text.replace(vllm_metrics.NUM_REQUESTS_WAITING + " ", "vllm:queued ")
            case "truncated-text":
                text = text[: text.index(vllm_metrics.CACHE_CONFIG_INFO + "{") + 40]
            case "cut-short":
                body = text.encode()
                response = web.StreamResponse()
                response.content_length = len(body)
                await response.prepare(request)
                await response.write(body[: len(body) // 2])
                assert request.transport is not None
                request.transport.close()
                return response
            case "not-utf8":
                return web.Response(body=b"\xff\xfe" + text.encode("utf-16-le"))
            case "huge":
                return web.Response(text=text + "#" * (MAX_BODY + 1))
            case "status-500":
                return web.Response(status=500, text="Internal Server Error")
        return web.Response(text=text, content_type="text/plain")


@dataclasses.dataclass
class Scene:
    engine: FakeEngine
    sidecar: main.Running
    client: aiohttp.ClientSession

    async def occupancy(self) -> report.OccupancyReport:
        async with self.client.get(self.sidecar.url + "/v1/occupancy") as response:
            assert response.status == 200
            return report.from_json(await response.read())

    async def status(self, path: str) -> tuple[int, str]:
        async with self.client.get(self.sidecar.url + path) as response:
            return response.status, await response.text()

    async def until(
        self, check: Callable[[report.OccupancyReport], bool], what: str
    ) -> report.OccupancyReport:
        """Poll the report until `check` holds; fail after a deadline with the last report."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            current = await self.occupancy()
            if check(current):
                return current
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {what}; last report: {current.to_json()}")
            await asyncio.sleep(POLL / 2)


async def _scene(engine_up: bool, mode: str, deadline: float) -> AsyncGenerator[Scene, None]:
    engine = FakeEngine(port=_free_port(), mode=mode)
    if engine_up:
        await engine.start()
    config = settings.Settings(
        engine_url=f"http://{HOST}:{engine.port}",
        listen_host=HOST,
        listen_port=0,
        pod="engine-0",
        namespace="test",
        model=None,
        poll_interval=POLL,
        timeout=deadline,
        rate_window=1.0,
        max_body_bytes=MAX_BODY,
    )
    sidecar = await main.start(config)
    client = aiohttp.ClientSession()
    try:
        yield Scene(engine, sidecar, client)
    finally:
        await client.close()
        await sidecar.stop()
        await engine.kill()


def _run(
    scenario: Callable[[Scene], Awaitable[None]],
    engine_up: bool = True,
    mode: str = "ok",
    deadline: float = TIMEOUT,
) -> None:
    async def go() -> None:
        scenes = _scene(engine_up, mode, deadline)
        scene = await anext(scenes)
        try:
            await scenario(scene)
        finally:
            await scenes.aclose()

    asyncio.run(go())


def _is(health: report.Health) -> Callable[[report.OccupancyReport], bool]:
    return lambda current: current.health is health


def test_engine_not_up_yet_is_starting_then_ok() -> None:
    async def scenario(scene: Scene) -> None:
        starting = await scene.until(
            lambda current: current.checked_at is not None, "a first scrape attempt"
        )
        assert starting.health is report.Health.STARTING
        assert "connection refused" in starting.reason
        assert starting.num_used_blocks is None
        assert (await scene.status("/healthz"))[0] == 200
        status, text = await scene.status("/readyz")
        assert status == 503
        assert "starting" in text
        await scene.engine.start()
        up = await scene.until(_is(report.Health.OK), "ok once the engine is up")
        assert up.usage_ratio == 0.0
        assert up.num_gpu_blocks == vllm_metrics.parse(_capture()).num_gpu_blocks
        assert (await scene.status("/readyz"))[0] == 200

    _run(scenario, engine_up=False)


def test_503_before_the_engine_was_ever_up_is_starting() -> None:
    async def scenario(scene: Scene) -> None:
        starting = await scene.until(
            lambda current: current.health is report.Health.STARTING and "503" in current.reason,
            "starting on 503",
        )
        assert "HTTP 503 (the engine is not serving)" in starting.reason
        scene.engine.mode = "ok"
        await scene.until(_is(report.Health.OK), "ok once /health says 200")

    # The engine answers 503 from its very first request.
    _run(scenario, mode="health-503")


def test_engine_killed_is_unreachable_and_the_report_ages() -> None:
    async def scenario(scene: Scene) -> None:
        up = await scene.until(_is(report.Health.OK), "ok")
        await scene.engine.kill()
        gone = await scene.until(_is(report.Health.UNREACHABLE), "unreachable after the kill")
        assert "connection refused" in gone.reason
        assert f"{GRACE} scrapes in a row without an answer" in gone.reason
        assert gone.scrape_status is report.ScrapeStatus.MISSED
        assert gone.missed_scrapes is not None
        assert gone.missed_scrapes >= GRACE
        assert gone.sampled_at is not None
        assert up.sampled_at is not None
        assert gone.sampled_at >= up.sampled_at
        later = await scene.until(
            lambda current: current.checked_at != gone.checked_at, "another scrape attempt"
        )
        # Still unreachable, same last sample, older; the last numbers are kept, not zeroed.
        assert later.health is report.Health.UNREACHABLE
        assert later.sampled_at == gone.sampled_at
        assert later.age_seconds is not None
        assert gone.age_seconds is not None
        assert later.age_seconds > gone.age_seconds
        assert later.num_gpu_blocks == up.num_gpu_blocks
        assert (await scene.status("/healthz"))[0] == 200
        assert (await scene.status("/readyz"))[0] == 503
        status, metrics = await scene.status("/metrics")
        assert status == 200
        assert 'kvscale_engine_health{state="unreachable"} 1.0' in metrics
        # It comes back.
        await scene.engine.start()
        await scene.until(_is(report.Health.OK), "ok after the engine returns")

    _run(scenario)


FAULTS = [
    pytest.param("garbage", "no vllm:* sample at all (it begins '<html>", id="garbage"),
    pytest.param("renamed", vllm_metrics.NUM_REQUESTS_WAITING + ": missing", id="renamed-metric"),
    pytest.param("truncated-text", "unparseable /metrics line", id="truncated-text"),
    pytest.param("cut-short", "body cut short", id="truncated-transfer"),
    pytest.param("not-utf8", "not UTF-8", id="not-utf8"),
    pytest.param("huge", f"body larger than {MAX_BODY} bytes", id="oversized"),
    pytest.param("status-500", "answered HTTP 500", id="http-500"),
    pytest.param("health-404", "/health answered HTTP 404", id="health-404"),
]


@pytest.mark.parametrize(("mode", "says"), FAULTS)
def test_bad_answers_are_bad_metrics_naming_the_problem(mode: str, says: str) -> None:
    async def scenario(scene: Scene) -> None:
        good = await scene.until(_is(report.Health.OK), "ok")
        scene.engine.mode = mode
        bad = await scene.until(_is(report.Health.BAD_METRICS), f"bad_metrics on {mode}")
        assert says in bad.reason
        # The numbers are the last good sample's, never zeros made up from a bad answer.
        assert bad.num_gpu_blocks == good.num_gpu_blocks
        assert bad.sampled_at is not None
        assert good.sampled_at is not None
        assert bad.sampled_at >= good.sampled_at
        status, text = await scene.status("/readyz")
        assert status == 503
        assert "bad_metrics" in text
        assert (await scene.status("/healthz"))[0] == 200
        scene.engine.mode = "ok"
        await scene.until(_is(report.Health.OK), f"recovery after {mode}")

    _run(scenario)


@pytest.mark.parametrize("mode", ["hang", "hang-metrics"])
def test_a_hanging_engine_times_out_and_the_sidecar_keeps_serving(mode: str) -> None:
    async def scenario(scene: Scene) -> None:
        await scene.until(_is(report.Health.OK), "ok")
        scene.engine.mode = mode
        # Every report before the verdict says ok with fewer misses than the grace: a hang and
        # a slow answer look alike until the grace runs out.
        seen = [await scene.occupancy()]
        while seen[-1].health is report.Health.OK:
            seen.append(await scene.occupancy())
            await asyncio.sleep(POLL / 4)
        hung = seen[-1]
        assert hung.health is report.Health.UNREACHABLE, hung.to_json()
        assert f"no answer within {TIMEOUT:g} s" in hung.reason
        assert hung.missed_scrapes is not None
        assert hung.missed_scrapes >= GRACE
        before = [current.missed_scrapes or 0 for current in seen[:-1]]
        assert all(missed < GRACE for missed in before)
        # Polls go on (one timeout each) and every request to the sidecar is answered.
        for _ in range(5):
            current = await scene.occupancy()
            assert current.health is report.Health.UNREACHABLE
        timeouts = [
            line
            for line in (await scene.status("/metrics"))[1].splitlines()
            if line.startswith('kvscale_sidecar_scrapes_total{outcome="timeout"}')
        ]
        assert timeouts
        assert float(timeouts[0].rsplit(" ", 1)[1]) >= 1
        scene.engine.mode = "ok"
        scene.engine._release.set()
        await scene.until(_is(report.Health.OK), "ok after the hang ends")

    _run(scenario)


def test_503_after_being_up_is_unreachable() -> None:
    async def scenario(scene: Scene) -> None:
        await scene.until(_is(report.Health.OK), "ok")
        scene.engine.mode = "health-503"
        down = await scene.until(_is(report.Health.UNREACHABLE), "unreachable on 503")
        assert "HTTP 503 (the engine is not serving)" in down.reason

    _run(scenario)


def test_a_slow_engine_keeps_reporting_samples_and_is_never_unreachable() -> None:
    async def scenario(scene: Scene) -> None:
        await scene.until(_is(report.Health.OK), "ok")
        # Every /metrics answer now comes after the poll interval, within the deadline.
        scene.engine.mode = "slow"
        scene.engine.delay = SLOW_ANSWER
        first = await scene.until(
            lambda current: current.scrape_status is report.ScrapeStatus.SLOW, "a slow scrape"
        )
        samples: list[float] = []
        while len(samples) < 5:
            current = await scene.occupancy()
            assert current.health is report.Health.OK, current.to_json()
            assert current.scrape_status is not report.ScrapeStatus.MISSED, current.to_json()
            assert current.sampled_at is not None
            if not samples or current.sampled_at > samples[-1]:
                samples.append(current.sampled_at)
            await asyncio.sleep(POLL)
        # Fresh samples kept coming: each slow answer is one.
        assert first.sampled_at is not None
        assert samples[-1] > first.sampled_at
        assert "more than the poll interval" in (current.scrape_detail or "")
        assert scene.sidecar.sampler.outcome_counts["timeout"] == 0
        assert (await scene.status("/readyz"))[0] == 200

    _run(scenario, deadline=SLOW_TIMEOUT)


def test_an_engine_that_answers_just_before_the_grace_runs_out_is_never_unreachable() -> None:
    async def scenario(scene: Scene) -> None:
        await scene.until(_is(report.Health.OK), "ok")
        # GRACE - 1 /metrics answers in a row come after the deadline, then one in time.
        scene.engine.mode = "flaky"
        scene.engine.delay = 3 * TIMEOUT
        counts = scene.sidecar.sampler.outcome_counts
        reports = []
        while counts["timeout"] < 3 * (GRACE - 1):
            reports.append(await scene.occupancy())
            await asyncio.sleep(POLL / 2)
        assert all(current.health is report.Health.OK for current in reports)
        missed = [c for c in reports if c.scrape_status is report.ScrapeStatus.MISSED]
        assert missed, "no report was served between a miss and the next answer"
        assert all(0 < (current.missed_scrapes or 0) < GRACE for current in missed)
        # Between two misses the engine answered: samples went on.
        assert reports[-1].sampled_at is not None
        assert reports[0].sampled_at is not None
        assert reports[-1].sampled_at > reports[0].sampled_at
        _, metrics = await scene.status("/metrics")
        assert 'kvscale_engine_health{state="ok"} 1.0' in metrics
        assert "kvscale_sidecar_missed_scrapes " in metrics

    _run(scenario)
