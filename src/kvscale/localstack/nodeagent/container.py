"""One container's life: start it, probe it, restart it with backoff, stop it. Does I/O.

A `Runner` owns one container of one pod. `run()` starts the process (resolving the image and
the environment first), supervises it with its probes, and on exit either stops (restart policy
says so, or the pod is being stopped) or waits out kubelet's crash-loop backoff and starts it
again. `terminate()` runs the preStop hook, sends SIGTERM to the process group, waits the grace
period and sends SIGKILL. Probes run as their own tasks, each on its own schedule, so a slow
probe never delays another container's or another probe kind's.

The runner keeps the container's state (waiting/running/terminated, last state, restart count,
started, ready) and calls `notify()` whenever it changes; the pod worker renders and writes the
pod status from `view()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp

from kvscale.localstack.nodeagent import (
    action,
    backoff,
    environment,
    expansion,
    images,
    podspec,
    probe,
    process,
    state,
    status,
)

log = logging.getLogger(__name__)

# kubelet gives a container at least this long after SIGTERM, even when preStop used it all.
MIN_GRACE_SECONDS = 2.0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Role(enum.Enum):
    """Which list the container is in, which decides its restart policy."""

    MAIN = "main"
    INIT = "init"
    SIDECAR = "sidecar"  # an init container with restartPolicy Always


def effective_policy(role: Role, pod_policy: str) -> str:
    """The restart policy a container runs under (kubelet: init containers are retried on
    failure unless the pod's policy is Never; sidecars always restart)."""
    if role is Role.SIDECAR:
        return "Always"
    if role is Role.INIT:
        return "Never" if pod_policy == "Never" else "OnFailure"
    return pod_policy


async def _no_credentials() -> Mapping[str, str]:
    return {}


@dataclasses.dataclass
class PodContext:
    """What a container needs from its pod and from the agent."""

    pod: Callable[[], podspec.Pod]
    pod_ip: str
    host_ip: str
    directory: Path
    http: aiohttp.ClientSession
    sources: Callable[[set[tuple[str, str]]], Awaitable[environment.Sources]]
    crashloop: backoff.Backoff
    notify: Callable[[], None]
    agent_environment: Mapping[str, str]
    table: Sequence[images.Image] = images.TABLE
    # The pod's service-account variables (KUBECONFIG), see `account`; a ConfigError when
    # they cannot be had.
    credentials: Callable[[], Awaitable[Mapping[str, str]]] = _no_credentials


@dataclasses.dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


class Runner:
    """One container's process, probes and restarts (see the module docstring)."""

    def __init__(
        self,
        context: PodContext,
        spec: podspec.Container,
        role: Role,
        *,
        previous: status.ContainerView | None = None,
        adopted: tuple[process.Process, state.Record] | None = None,
        initial_reason: str = "ContainerCreating",
    ) -> None:
        self.spec = spec
        self.role = role
        self._context = context
        self._policy = effective_policy(role, context.pod().restart_policy)
        self._state: status.State = status.Waiting(initial_reason)
        self._last_state: status.Terminated | None = None
        self._restart_count = 0
        self._has_run = False
        self._failures = 0
        self._process: process.Process | None = None
        # True while _supervise() watches the process (and so removes its record on exit).
        self._supervised = False
        self._container_id = ""
        self._started = False
        self._readiness: probe.Tracker | None = None
        self._kept_readiness: bool | None = None
        self._env: dict[str, str] = {}
        self._stopping = False
        self._active = False
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self.started_event = asyncio.Event()
        self._pending_exit: status.Terminated | None = None
        self._adopted = adopted
        if adopted is not None:
            # Known from the start, so terminate() reaches it even before run() supervises it.
            self._process = adopted[0]
        if previous is not None:
            self._resume(previous, adopted is not None)
        elif adopted is not None:
            self._has_run = True

    # -- state ---------------------------------------------------------------------------

    def _resume(self, previous: status.ContainerView, adopted: bool) -> None:
        """Carry on from the status an earlier agent wrote."""
        self._restart_count = previous.restart_count
        self._last_state = previous.last_state
        self._container_id = previous.container_id
        ran = not isinstance(previous.state, status.Waiting) or previous.last_state is not None
        self._has_run = ran or previous.restart_count > 0
        if adopted:
            # Keep reporting what the earlier agent saw until our own probes say otherwise.
            self._kept_readiness = previous.ready
            self._started = previous.started
            if isinstance(previous.state, status.Running):
                self._state = previous.state
            return
        if isinstance(previous.state, status.Running):
            self._pending_exit = status.Terminated(
                exit_code=137,
                reason="ContainerStatusUnknown",
                finished_at=utcnow(),
                started_at=previous.state.started_at,
                message="The container could not be located when the node agent restarted",
            )
        elif isinstance(previous.state, status.Terminated):
            self._pending_exit = previous.state
        elif previous.last_state is not None:
            # It was waiting to be restarted; restart it.
            self._pending_exit = previous.last_state
        if self._pending_exit is not None:
            self._state = self._pending_exit

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def succeeded(self) -> bool:
        return isinstance(self._state, status.Terminated) and self._state.exit_code == 0

    def view(self) -> status.ContainerView:
        running = isinstance(self._state, status.Running)
        started = running and self._started
        readiness = self._readiness.passing if self._readiness is not None else True
        return status.ContainerView(
            name=self.spec.name,
            image=self.spec.image,
            state=self._state,
            last_state=self._last_state,
            restart_count=self._restart_count,
            started=started,
            ready=started and readiness,
            container_id=self._container_id,
            sidecar=self.role is Role.SIDECAR,
        )

    def pod_initializing_done(self) -> None:
        """Init containers finished: a main container waiting on them is being created now."""
        if self._state == status.Waiting("PodInitializing"):
            self._state = status.Waiting("ContainerCreating")
            self._context.notify()

    def _set(self, new_state: status.State) -> None:
        self._state = new_state
        self._context.notify()

    def _name(self) -> str:
        return f"{self._context.pod().key}/{self.spec.name}"

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the container is done for good (policy) or `terminate()` was called."""
        self._active = True
        try:
            if not self._stopping:
                await self._loop()
        finally:
            self._done.set()
            self._context.notify()

    async def _loop(self) -> None:
        exit_state = self._pending_exit
        if self._adopted is not None:
            adopted, record = self._adopted
            started = status.parse_time(record.started_at) or utcnow()
            if isinstance(self._state, status.Running):
                started = self._state.started_at
            # The environment exec probes and hooks run with, as the process got it.
            launch = await self._prepare()
            self._env = launch.env if launch is not None else {}
            exit_state = await self._supervise(adopted, started)
        while True:
            if exit_state is not None:
                if self._stopping or not backoff.restarts(self._policy, exit_state.exit_code):
                    self._set(exit_state)
                    return
                self._last_state = exit_state
                delay = self._context.crashloop.delay(self._failures)
                if delay > 0:
                    pod = self._context.pod()
                    self._set(
                        status.Waiting(
                            "CrashLoopBackOff",
                            f"back-off {delay:g}s restarting failed container={self.spec.name} "
                            f"pod={pod.name}_{pod.namespace}({pod.uid})",
                        )
                    )
                    if not await self._pause(delay):
                        return
            launch = await self._prepare()
            attempts = 1
            while launch is None:
                if not await self._pause(self._context.crashloop.delay(attempts + 1)):
                    return
                attempts += 1
                launch = await self._prepare()
            if self._stopping:
                return
            exit_state = await self._start(launch)

    async def _pause(self, seconds: float) -> bool:
        """Sleep, cut short by `terminate()`; False when the runner is stopping."""
        if self._stopping:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        return not self._stopping

    async def _prepare(self) -> Launch | None:
        """The command line and environment, or None (and a waiting state) when it cannot
        start yet: an image not in the table or not built, a missing ConfigMap or Secret."""
        spec, context = self.spec, self._context
        image = images.lookup(spec.image, context.table)
        if image is None:
            known = ", ".join(row.repository for row in context.table)
            self._waiting(
                "ErrImagePull",
                f"image {spec.image!r} is not in the node agent's image table (known: {known})",
            )
            return None
        try:
            entrypoint = image.entrypoint()
            bin_dirs = image.bin_dirs()
            image_env = image.environment()
        except images.ImageUnavailableError as error:
            self._waiting("ErrImagePull", f"image {spec.image!r}: {error}")
            return None
        pod = context.pod()
        try:
            sources = await context.sources(environment.references(spec))
            # Under the container's own variables, like a runtime's: the pod spec may override.
            image_env = {**image_env, **await context.credentials()}
            env = environment.container_environment(
                pod, spec, context.pod_ip, context.host_ip, sources
            )
        except environment.ConfigError as error:
            self._waiting("CreateContainerConfigError", str(error))
            return None
        for note in env.notes:
            log.warning("%s: %s", self._name(), note)
        if spec.working_dir:
            log.info(
                "%s: workingDir %r ignored (no image filesystem)", self._name(), spec.working_dir
            )
        command = expansion.expand_all(spec.command, env.variables) if spec.command else None
        args = expansion.expand_all(spec.args, env.variables) if spec.args else None
        return Launch(
            argv=images.command_line(entrypoint, image.default_args, command, args),
            env=environment.process_environment(
                context.agent_environment, image_env, bin_dirs, env.variables, pod.name
            ),
        )

    def _waiting(self, reason: str, message: str) -> None:
        if self._state != status.Waiting(reason, message):
            log.warning("%s: %s: %s", self._name(), reason, message)
            self._set(status.Waiting(reason, message))

    async def _start(self, launch: Launch) -> status.Terminated:
        if self._has_run:
            self._restart_count += 1
        self._has_run = True
        self._env = launch.env
        now = utcnow()
        log_file = state.log_path(self._context.directory, self.spec.name)
        try:
            spawned = await process.spawn(
                launch.argv, launch.env, self._context.directory, log_file
            )
        except OSError as error:
            log.warning("%s: cannot start %s: %s", self._name(), launch.argv[:1], error)
            exit_state = status.Terminated(
                exit_code=128,
                reason="StartError",
                finished_at=utcnow(),
                started_at=now,
                message=f"failed to start {launch.argv[:1]}: {error}",
            )
            self._failures = self._context.crashloop.failures_after(self._failures, 0)
            return exit_state
        log.info("%s: started pid %d: %s", self._name(), spawned.pid, launch.argv)
        state.write_record(
            self._context.directory,
            self.spec.name,
            state.Record(pid=spawned.pid, ticks=spawned.ticks, started_at=status.rfc3339(now)),
        )
        self._container_id = f"local://{spawned.pid}"
        self._started = False
        self._kept_readiness = None
        return await self._supervise(spawned, now)

    async def _supervise(
        self, running: process.Process, started_at: datetime.datetime
    ) -> status.Terminated:
        """Probe the process until it exits; the exit as a terminated state."""
        self._process = running
        self._supervised = True
        loop = asyncio.get_running_loop()
        began = loop.time()
        spec = self.spec
        if spec.startup_probe is None:
            self._started = True
        if spec.readiness_probe is not None:
            self._readiness = probe.Tracker.for_probe(
                spec.readiness_probe, probe.Kind.READINESS, self._kept_readiness
            )
        if self._started:
            self.started_event.set()
        self._set(status.Running(started_at=started_at))
        stopper = None
        if self._stopping:
            # terminate() came while the process was being started: it could not signal it.
            stopper = asyncio.create_task(process.stop(running, MIN_GRACE_SECONDS))
        probes = asyncio.create_task(self._probe(running, began))
        try:
            code = await running.wait()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes
            if stopper is not None:
                await stopper
        process.kill_leftovers(running)
        state.remove_record(self._context.directory, spec.name)
        self._process = None
        self._supervised = False
        self._started = False
        self._readiness = None
        run_seconds = loop.time() - began
        self._failures = self._context.crashloop.failures_after(self._failures, run_seconds)
        finished = utcnow()
        if code is None:
            exit_state = status.Terminated(
                exit_code=137,
                reason="ContainerStatusUnknown",
                finished_at=finished,
                started_at=started_at,
                message="exit code unknown: the process was adopted after a node agent restart",
            )
        else:
            exit_state = status.Terminated(
                exit_code=code,
                reason="Completed" if code == 0 else "Error",
                finished_at=finished,
                started_at=started_at,
            )
        log.info("%s: exited with code %s after %.1fs", self._name(), code, run_seconds)
        self._state = exit_state
        return exit_state

    # -- probes --------------------------------------------------------------------------

    def _handler_context(self) -> action.Context:
        return action.Context(
            pod_ip=self._context.pod_ip,
            container=self.spec,
            env=self._env,
            cwd=self._context.directory,
            http=self._context.http,
        )

    async def _results(
        self, spec: podspec.Probe, began: float, on_result: Callable[[action.Outcome], bool]
    ) -> None:
        """Run a probe on its schedule, handing each outcome to `on_result` until it returns
        False. The initial delay counts from the container's start."""
        loop = asyncio.get_running_loop()
        delay = began + spec.initial_delay_seconds - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            outcome = await action.run(spec.action, self._handler_context(), spec.timeout_seconds)
            if not on_result(outcome):
                return
            await asyncio.sleep(spec.period_seconds)

    async def _probe(self, running: process.Process, began: float) -> None:
        spec = self.spec
        if spec.startup_probe is not None and not self._started:
            startup = probe.Tracker.for_probe(spec.startup_probe, probe.Kind.STARTUP)
            failed: list[action.Outcome] = []

            def on_startup(outcome: action.Outcome) -> bool:
                nonlocal startup
                startup = startup.observe(outcome.ok)
                if startup.passing:
                    return False
                if startup.last is False and startup.run >= startup.failure_threshold:
                    failed.append(outcome)
                    return False
                return True

            await self._results(spec.startup_probe, began, on_startup)
            if failed:
                await self._kill_unhealthy(running, "startup", spec.startup_probe, failed[0])
                return
            self._started = True
            self.started_event.set()
            log.info("%s: startup probe passed", self._name())
            self._context.notify()
        checks = []
        if spec.readiness_probe is not None:
            checks.append(self._readiness_loop(spec.readiness_probe, began))
        if spec.liveness_probe is not None:
            checks.append(self._liveness_loop(running, spec.liveness_probe, began))
        if checks:
            await asyncio.gather(*checks)

    async def _readiness_loop(self, spec: podspec.Probe, began: float) -> None:
        def on_result(outcome: action.Outcome) -> bool:
            tracker = self._readiness
            if tracker is None:
                return False
            updated = tracker.observe(outcome.ok)
            self._readiness = updated
            if updated.passing != tracker.passing:
                log.info(
                    "%s: readiness probe now %s (%s)",
                    self._name(),
                    "passing" if updated.passing else "failing",
                    outcome.detail,
                )
                self._context.notify()
            return True

        await self._results(spec, began, on_result)

    async def _liveness_loop(
        self, running: process.Process, spec: podspec.Probe, began: float
    ) -> None:
        liveness = probe.Tracker.for_probe(spec, probe.Kind.LIVENESS)
        failed: list[action.Outcome] = []

        def on_result(outcome: action.Outcome) -> bool:
            nonlocal liveness
            liveness = liveness.observe(outcome.ok)
            if not liveness.passing:
                failed.append(outcome)
                return False
            return True

        await self._results(spec, began, on_result)
        if failed:
            await self._kill_unhealthy(running, "liveness", spec, failed[0])

    async def _kill_unhealthy(
        self, running: process.Process, kind: str, spec: podspec.Probe, outcome: action.Outcome
    ) -> None:
        """kubelet kills a container whose liveness or startup probe failed (preStop, SIGTERM,
        grace, SIGKILL); the restart policy then decides whether it comes back."""
        log.warning(
            "%s: %s probe failed %d times (%s); killing it",
            self._name(),
            kind,
            spec.failure_threshold,
            outcome.detail,
        )
        grace = spec.termination_grace_period_seconds
        if grace is None:
            grace = self._context.pod().termination_grace_period_seconds
        await self._kill(running, float(grace), pre_stop=True)

    # -- stopping ------------------------------------------------------------------------

    async def _kill(self, running: process.Process, grace: float, *, pre_stop: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hook = self.spec.pre_stop
        if pre_stop and hook is not None and grace > 0:
            outcome = await action.run(hook, self._handler_context(), grace)
            if outcome.ok:
                log.info("%s: preStop hook done", self._name())
            else:
                log.warning("%s: preStop hook failed: %s", self._name(), outcome.detail)
        remaining = max(deadline - loop.time(), MIN_GRACE_SECONDS)
        await process.stop(running, remaining)

    async def terminate(self, grace: float, *, pre_stop: bool) -> None:
        """Stop the container for good: no more restarts; a running process gets its preStop
        hook (when `pre_stop`), SIGTERM, `grace` seconds and SIGKILL."""
        self._stopping = True
        self._wake.set()
        running = self._process
        if running is not None:
            await self._kill(running, grace, pre_stop=pre_stop)
        if running is not None and not self._supervised:
            # An adopted process stopped before run() took it over: its record goes too.
            state.remove_record(self._context.directory, self.spec.name)
        if self._active:
            await self._done.wait()
