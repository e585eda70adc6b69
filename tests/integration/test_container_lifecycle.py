"""A container's life as the node agent runs it: real processes, probes, restarts, stopping.

These drive `container.Runner` directly with the `kvscale.local/testbox` image (a tiny HTTP
server) on a loopback address of their own; no API server is involved, so they need nothing
but the project's venv. Waits are deadlines for something to happen, not timing assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from kvscale.localstack.nodeagent import (
    backoff,
    container,
    environment,
    podspec,
    process,
    state,
    status,
)

TESTBOX = "kvscale.local/testbox:1"
PORT = 18080
DEADLINE_S = 60.0
FAST = backoff.Backoff(initial=0.5, maximum=1.0)


def _address() -> str:
    # 127.2.0.0/16 is never a cluster's pod range (those start at 127.4.0.0).
    return f"127.2.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _pod(spec: podspec.Container, policy: str = "Always", grace: int = 5) -> podspec.Pod:
    return podspec.Pod(
        namespace="test",
        name="box",
        uid="uid-1",
        node_name="local-node-0",
        restart_policy=policy,
        containers=(spec,),
        termination_grace_period_seconds=grace,
    )


def _box(*args: str, **fields: object) -> podspec.Container:
    env = (podspec.EnvVar("POD_IP", source=podspec.FieldRef("status.podIP")),)
    base = podspec.Container(name="box", image=TESTBOX, args=("--port", str(PORT), *args), env=env)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


async def _no_sources(refs: set[tuple[str, str]]) -> environment.Sources:
    return environment.Sources()


@contextlib.asynccontextmanager
async def _runner(
    tmp_path: Path,
    spec: podspec.Container,
    *,
    policy: str = "Always",
    role: container.Role = container.Role.MAIN,
    previous: status.ContainerView | None = None,
    adopted: tuple[process.Process, state.Record] | None = None,
) -> AsyncIterator[tuple[container.Runner, asyncio.Task[None]]]:
    """A runner running its container; terminated (grace 1 s) at the end whatever happened."""
    pod = _pod(spec, policy)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        context = container.PodContext(
            pod=lambda: pod,
            pod_ip=_address(),
            host_ip="127.0.0.1",
            directory=tmp_path,
            http=http,
            sources=_no_sources,
            crashloop=FAST,
            notify=lambda: None,
            agent_environment=dict(os.environ),
        )
        runner = container.Runner(context, spec, role, previous=previous, adopted=adopted)
        task = asyncio.create_task(runner.run())
        try:
            yield runner, task
        finally:
            await runner.terminate(1.0, pre_stop=False)
            await asyncio.wait_for(task, DEADLINE_S)


async def _until(
    runner: container.Runner, what: str, check: Callable[[status.ContainerView], bool]
) -> status.ContainerView:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        view = runner.view()
        if check(view):
            return view
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}; last view: {view}")
        await asyncio.sleep(0.1)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_container_becomes_ready_only_when_its_readiness_probe_passes(tmp_path: Path) -> None:
    record = tmp_path / "events"
    ready_probe = podspec.Probe(
        action=podspec.HttpGet(port="http", path="/ready"), period_seconds=1
    )
    spec = _box(
        "--ready-after",
        "2",
        "--record",
        str(record),
        ports={"http": PORT},
        readiness_probe=ready_probe,
    )

    async def scenario() -> None:
        async with _runner(tmp_path, spec) as (runner, _):
            running = await _until(runner, "running", lambda v: isinstance(v.state, status.Running))
            assert running.started
            # Kubelet's initial readiness is failure, so a fresh container is not ready yet.
            assert not running.ready
            await _until(runner, "ready", lambda v: v.ready)
            assert runner.view().restart_count == 0
        assert isinstance(runner.view().state, status.Terminated)

    asyncio.run(scenario())
    assert "sigterm" in _lines(record)
    assert "box.log" in os.listdir(tmp_path)
    assert "box.pid" not in os.listdir(tmp_path)


def test_the_environment_reaches_the_process(tmp_path: Path) -> None:
    spec = _box(
        command=("sh", "-c", "echo ip=$POD_IP url=$URL; exit 0"),
        args=None,
        env=(
            podspec.EnvVar("POD_IP", source=podspec.FieldRef("status.podIP")),
            podspec.EnvVar("URL", "http://$(POD_IP):9"),
        ),
    )

    async def scenario() -> str:
        async with _runner(tmp_path, spec, policy="Never") as (runner, task):
            await asyncio.wait_for(task, DEADLINE_S)
            view = runner.view()
            assert isinstance(view.state, status.Terminated)
            assert (view.state.exit_code, view.state.reason) == (0, "Completed")
            return runner._context.pod_ip

    address = asyncio.run(scenario())
    assert _lines(tmp_path / "box.log") == [f"ip={address} url=http://{address}:9"]


def test_a_crashing_container_is_restarted_with_backoff(tmp_path: Path) -> None:
    spec = _box("--exit-after", "0.2", "--exit-code", "3")

    async def scenario() -> None:
        async with _runner(tmp_path, spec) as (runner, _):
            backing_off = await _until(
                runner,
                "a crash-loop backoff",
                lambda v: (
                    isinstance(v.state, status.Waiting) and v.state.reason == "CrashLoopBackOff"
                ),
            )
            assert backing_off.last_state is not None
            assert backing_off.last_state.exit_code == 3
            assert backing_off.last_state.reason == "Error"
            assert "back-off" in backing_off.state.message  # type: ignore[union-attr]
            await _until(runner, "three restarts", lambda v: v.restart_count >= 3)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("policy", "code", "restarted"),
    [("Never", 3, False), ("OnFailure", 0, False), ("OnFailure", 3, True)],
)
def test_restart_policy_decides_whether_an_exit_is_final(
    tmp_path: Path, policy: str, code: int, restarted: bool
) -> None:
    spec = _box("--exit-after", "0.1", "--exit-code", str(code))

    async def scenario() -> None:
        async with _runner(tmp_path, spec, policy=policy) as (runner, task):
            if restarted:
                await _until(runner, "a restart", lambda v: v.restart_count >= 1)
                assert not task.done()
            else:
                await asyncio.wait_for(task, DEADLINE_S)
                view = runner.view()
                assert isinstance(view.state, status.Terminated)
                assert view.state.exit_code == code
                assert view.restart_count == 0

    asyncio.run(scenario())


def test_a_failing_liveness_probe_restarts_the_container(tmp_path: Path) -> None:
    liveness = podspec.Probe(
        action=podspec.HttpGet(port=PORT, path="/healthz"), period_seconds=1, failure_threshold=2
    )
    spec = _box("--unhealthy-after", "1", liveness_probe=liveness)

    async def scenario() -> None:
        async with _runner(tmp_path, spec) as (runner, _):
            view = await _until(runner, "a restart", lambda v: v.restart_count >= 1)
            assert view.last_state is not None
            # The testbox exits 0 on SIGTERM: killed gracefully.
            assert view.last_state.exit_code == 0

    asyncio.run(scenario())


def test_a_startup_probe_gates_started_and_kills_when_it_fails(tmp_path: Path) -> None:
    never = podspec.Probe(
        action=podspec.Exec(command=("false",)), period_seconds=1, failure_threshold=2
    )
    spec = _box(startup_probe=never)

    async def scenario() -> None:
        async with _runner(tmp_path, spec) as (runner, _):
            first = await _until(runner, "running", lambda v: isinstance(v.state, status.Running))
            assert not first.started
            assert not first.ready
            await _until(runner, "a restart", lambda v: v.restart_count >= 1)

    asyncio.run(scenario())


def test_tcp_and_exec_probes(tmp_path: Path) -> None:
    spec = _box(
        readiness_probe=podspec.Probe(action=podspec.TcpSocket(port=PORT), period_seconds=1),
        liveness_probe=podspec.Probe(
            action=podspec.Exec(command=("sh", "-c", 'test -n "$POD_IP"')), period_seconds=1
        ),
    )

    async def scenario() -> None:
        async with _runner(tmp_path, spec) as (runner, _):
            await _until(runner, "ready", lambda v: v.ready)
            assert runner.view().restart_count == 0

    asyncio.run(scenario())


def test_stopping_runs_pre_stop_then_sigterm_then_sigkill_for_the_whole_group(
    tmp_path: Path,
) -> None:
    record = tmp_path / "events"
    spec = _box(
        "--ignore-sigterm",
        "--spawn-child",
        "--record",
        str(record),
        pre_stop=podspec.HttpGet(port=PORT, path="/prestop"),
        readiness_probe=podspec.Probe(action=podspec.TcpSocket(port=PORT), period_seconds=1),
    )

    async def scenario() -> status.ContainerView:
        async with _runner(tmp_path, spec) as (runner, task):
            await _until(runner, "ready", lambda v: v.ready)
            await runner.terminate(3.0, pre_stop=True)
            await asyncio.wait_for(task, DEADLINE_S)
            return runner.view()

    view = asyncio.run(scenario())
    events = _lines(record)
    assert events.index("prestop") < events.index("sigterm")
    assert "exiting" not in events  # it ignored SIGTERM ...
    assert isinstance(view.state, status.Terminated)
    assert view.state.exit_code == 128 + signal.SIGKILL  # ... so SIGKILL ended it
    child = next(int(line.split()[1]) for line in events if line.startswith("child "))
    assert process.start_ticks(child) is None  # the child died with its group


def test_an_unknown_image_waits_with_err_image_pull(tmp_path: Path) -> None:
    spec = podspec.Container(name="box", image="nginx:1.27")

    async def scenario() -> None:
        async with _runner(tmp_path, spec) as (runner, _):
            view = await _until(
                runner,
                "ErrImagePull",
                lambda v: isinstance(v.state, status.Waiting) and v.state.reason == "ErrImagePull",
            )
            assert "'nginx:1.27'" in view.state.message  # type: ignore[union-attr]
            assert view.restart_count == 0

    asyncio.run(scenario())


def test_a_missing_executable_is_a_start_error(tmp_path: Path) -> None:
    spec = podspec.Container(name="box", image=TESTBOX, command=("/nonexistent/binary",))

    async def scenario() -> None:
        async with _runner(tmp_path, spec, policy="Never") as (runner, task):
            await asyncio.wait_for(task, DEADLINE_S)
            view = runner.view()
            assert isinstance(view.state, status.Terminated)
            assert (view.state.exit_code, view.state.reason) == (128, "StartError")

    asyncio.run(scenario())


def test_an_adopted_process_is_supervised_and_stopped(tmp_path: Path) -> None:
    """A process an earlier agent started: kept running with its status, stopped on request."""
    spec = _box()

    async def scenario() -> None:
        earlier = await process.spawn(
            ["sleep", "300"], dict(os.environ), tmp_path, tmp_path / "box.log"
        )
        record = state.Record(
            pid=earlier.pid, ticks=earlier.ticks, started_at="2030-01-01T00:00:00Z"
        )
        state.write_record(tmp_path, "box", record)
        previous = status.ContainerView(
            name="box",
            image=TESTBOX,
            state=status.Running(started_at=status.parse_time(record.started_at)),  # type: ignore[arg-type]
            restart_count=4,
            started=True,
            ready=True,
        )
        adopted = (process.Adopted(pid=earlier.pid, ticks=earlier.ticks), record)
        async with _runner(tmp_path, spec, previous=previous, adopted=adopted) as (runner, _):
            view = runner.view()
            assert isinstance(view.state, status.Running)
            assert (view.restart_count, view.ready) == (4, True)
            assert process.is_alive(earlier.pid, earlier.ticks)
        # The runner stopped it at the end; it was our child here, so reap it.
        await earlier.wait()
        assert not process.is_alive(earlier.pid, earlier.ticks)
        assert "box.pid" not in os.listdir(tmp_path)

    asyncio.run(scenario())
