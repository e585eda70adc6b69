"""One load run: replay requests, watch the deployment, keep the timeline, say what happens.
Does I/O (through `replayer` and `watcher`) and prints through the `say` it is given.

`drive(kubeconfig, settings, requests, say)`:
1. polls the deployment once, so the first requests have ready pods to go to;
2. starts the replay (t = 0) and, every `poll_s`, polls the deployment, records a timeline
   sample, prints each new operator decision (Event) as it appears and a live line every
   `print_every_s`;
3. after the last request has finished, keeps watching while the deployment scales back
   down: until it is at `min_replicas` with nothing starting or terminating, or `quiet_s`
   has passed;
4. returns the timeline and every request's outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
from collections.abc import Callable, Sequence

import aiohttp
import lightkube

from kvscale import trace
from kvscale.loadgen import progress, replayer, router, summary, timeline, view, watcher

Say = Callable[[str], None]
# Events other than scaling actions (a sidecar's report going missing and coming back, say) can
# flap every few seconds on a busy machine: each reason is printed at most once in this long.
_REPEAT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """One run. Validated on construction (and by the replayer's and watcher's settings)."""

    watch: watcher.Settings
    send: replayer.Settings
    default_capacity_tokens: int
    """KV tokens an engine is assumed to hold until its report says (for the router)."""
    max_load: float | None
    """The router's saturation limit (see `router`); None sends every request at once."""
    min_replicas: int
    load_s: float
    """The replay's length: its last request is sent about this long after t = 0."""
    quiet_s: float
    """After the last request finished, watch the scale-down at most this long."""
    poll_s: float = 1.0
    print_every_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("load_s", "poll_s", "print_every_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)}: must be > 0")
        if self.quiet_s < 0:
            raise ValueError(f"quiet_s = {self.quiet_s}: must be >= 0")


@dataclasses.dataclass(frozen=True)
class Result:
    record: timeline.Timeline
    outcomes: list[summary.Outcome]
    load_s: float


def _settled(snapshot: view.Snapshot, min_replicas: int) -> bool:
    """Back at the floor: nothing wanted beyond it, nothing starting or leaving."""
    floor = max(1, min_replicas)
    desired = snapshot.desired
    ready = snapshot.in_phase(view.Phase.READY)
    moving = [pod for pod in snapshot.pods if pod.phase is not view.Phase.READY]
    return desired is not None and desired <= floor and len(ready) <= floor and not moving


class _Monitor:
    def __init__(self, watch: watcher.PodWatcher, record: timeline.Timeline, say: Say) -> None:
        self.watch = watch
        self.record = record
        self.say = say
        self.failing = False
        self._said: dict[str, float] = {}

    async def poll(self, counters: timeline.Counters) -> view.Snapshot | None:
        try:
            snapshot = await self.watch.poll()
        except watcher.WatchError as error:
            if not self.failing:
                self.say(f"  ! cannot read the deployment (will keep trying): {error}")
            self.failing = True
            return None
        self.failing = False
        for note in self.record.observe(snapshot, counters):
            if self._worth_saying(note):
                self.say(f"  [{note.t:+5.0f}s] {note.reason}: {note.message}")
        return snapshot

    def _worth_saying(self, note: timeline.Note) -> bool:
        """Scaling actions always; other news once per reason per `_REPEAT_S`; nothing older
        than the load (those events are the set-up's, and stay in the timeline)."""
        if note.t < 0:
            return False
        if note.reason in (view.SCALED_UP, view.SCALED_DOWN):
            return True
        last = self._said.get(note.reason)
        if last is not None and note.t - last < _REPEAT_S:
            return False
        self._said[note.reason] = note.t
        return True

    def last_action(self) -> timeline.Mark | None:
        return self.record.marks[-1] if self.record.marks else None


async def _drive(
    kubeconfig: pathlib.Path,
    settings: Settings,
    requests: Sequence[trace.TraceRequest],
    say: Say,
) -> Result:
    # trust_env=False: never pick up a proxy from the environment; everything here is loopback.
    client = lightkube.AsyncClient(lightkube.KubeConfig.from_file(kubeconfig), trust_env=False)
    # Kept-alive connections are dropped before the engine's server (uvicorn: 5 s) closes them,
    # so a request rarely meets a connection closed under it.
    connector = aiohttp.TCPConnector(limit=settings.send.max_in_flight, keepalive_timeout=3.0)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as send_session,
            aiohttp.ClientSession() as watch_session,
        ):
            watch = watcher.PodWatcher(client, watch_session, settings.watch)
            await watch.poll()
            origin_wall, origin = time.time(), time.monotonic()
            record = timeline.Timeline(origin_wall)
            monitor = _Monitor(watch, record, say)
            send = replayer.Replayer(
                send_session,
                settings.send,
                router.Router(settings.default_capacity_tokens, settings.max_load),
                watch.candidates,
            )
            replay = asyncio.create_task(send.run(requests, origin))
            quiet_deadline: float | None = None
            next_print = 0.0
            tick = 0
            while True:
                tick += 1
                snapshot = await monitor.poll(send.counters)
                now = time.monotonic() - origin
                if snapshot is not None and record.samples and now >= next_print:
                    say("  " + progress.line(record.samples[-1], monitor.last_action()))
                    next_print = now + settings.print_every_s
                if replay.done() and quiet_deadline is None:
                    quiet_deadline = now + settings.quiet_s
                    say(
                        f"  [{now:+5.0f}s] every request has finished; watching the scale-down "
                        f"(at most {settings.quiet_s:.0f}s)"
                    )
                if quiet_deadline is not None and snapshot is not None:
                    if _settled(snapshot, settings.min_replicas):
                        say(f"  [{now:+5.0f}s] back at {settings.min_replicas} replica(s)")
                        break
                    if now >= quiet_deadline:
                        say(f"  [{now:+5.0f}s] quiet period over; not (yet) back at the minimum")
                        break
                await asyncio.sleep(max(0.0, origin + tick * settings.poll_s - time.monotonic()))
            outcomes = await replay
    finally:
        await client.close()
    return Result(record, outcomes, settings.load_s)


def drive(
    kubeconfig: pathlib.Path,
    settings: Settings,
    requests: Sequence[trace.TraceRequest],
    say: Say,
) -> Result:
    """Run the load and the watch to the end (see the module docstring)."""
    return asyncio.run(_drive(kubeconfig, settings, requests, say))
