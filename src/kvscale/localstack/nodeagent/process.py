"""Container processes: start one in its own process group, wait for it, signal the group.

Every container runs as the leader of a new session (so of a new process group): signalling the
group reaches everything the container started (vLLM spawns an engine core and workers), and
when the leader exits the rest of the group is killed, as a container's processes die with its
PID 1. Processes are identified by pid and their start time in clock ticks since boot
(`kvscale.localstack.proc`) so a recycled pid is never mistaken for a container.

Linux only (reads /proc). Does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from kvscale.localstack import proc

# How often an adopted process (started by an earlier agent, so not our child) is checked.
ADOPTED_POLL_SECONDS = 0.5
# Runtimes report a process killed by signal N as exit code 128 + N.
SIGNAL_EXIT_BASE = 128


def _running(pid: int) -> proc.Stat | None:
    """The process's stat; None when it is gone or has exited (a zombie)."""
    found = proc.read(pid)
    return None if found is None or found.exited else found


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when it is gone or a zombie."""
    found = _running(pid)
    return None if found is None else found.start_ticks


def group_may_be_ours(pgid: int, ticks: int) -> bool:
    """Whether process group `pgid`, whose leader started at `ticks`, can still hold our
    processes. Its leader may be gone with members left; but when the pid now belongs to
    another group leader, the kernel only allowed that because our group had emptied."""
    found = _running(pgid)
    if found is None:
        return True
    return found.start_ticks == ticks or found.pgid != pgid


def is_alive(pid: int, ticks: int) -> bool:
    """True when `pid` is still the process that started at `ticks`."""
    return start_ticks(pid) == ticks


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


class Process(Protocol):
    """A running container process, whether this agent started it or adopted it."""

    @property
    def pid(self) -> int: ...

    @property
    def ticks(self) -> int: ...

    async def wait(self) -> int | None:
        """The exit code (128 + signal when killed by one); None when it cannot be known."""
        ...


@dataclasses.dataclass
class Spawned:
    """A process this agent started (its child): the exit code is known."""

    handle: asyncio.subprocess.Process
    ticks: int

    @property
    def pid(self) -> int:
        return self.handle.pid

    async def wait(self) -> int | None:
        code = await self.handle.wait()
        return SIGNAL_EXIT_BASE - code if code < 0 else code


@dataclasses.dataclass
class Adopted:
    """A process an earlier agent started: polled, its exit code unknown."""

    pid: int
    ticks: int

    async def wait(self) -> int | None:
        # Not our child, so no exit notification exists: polling is the only way to know.
        while is_alive(self.pid, self.ticks):  # noqa: ASYNC110
            await asyncio.sleep(ADOPTED_POLL_SECONDS)
        return None


async def spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> Spawned:
    """Start `argv` as a new process-group leader, stdout and stderr appended to `log_path`.
    Both directories must exist. Raises OSError when it cannot start (no such executable)."""
    with log_path.open("ab") as log:
        handle = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    ticks = start_ticks(handle.pid)
    # A process that exited at once has no /proc entry left; 0 never matches a live process.
    return Spawned(handle=handle, ticks=ticks if ticks is not None else 0)


async def _exited(process: Process, seconds: float) -> bool:
    if seconds <= 0:
        return False
    try:
        await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        return False
    return True


def kill_leftovers(process: Process) -> None:
    """SIGKILL what is left of a process's group after its leader exited, as the rest of a
    container dies with its PID 1."""
    if group_may_be_ours(process.pid, process.ticks):
        signal_group(process.pid, signal.SIGKILL)


async def stop(process: Process, grace_seconds: float) -> None:
    """SIGTERM to the group, up to `grace_seconds` for the leader to exit, then SIGKILL to
    whatever of the group is left. Returns once the leader is gone."""
    if signal_group(process.pid, signal.SIGTERM) and not await _exited(process, grace_seconds):
        signal_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 30)
    kill_leftovers(process)


async def stop_recorded(pid: int, ticks: int, grace_seconds: float) -> None:
    """Stop a process group known only from a record (an orphan), if it still runs."""
    if is_alive(pid, ticks):
        await stop(Adopted(pid=pid, ticks=ticks), grace_seconds)
    elif group_may_be_ours(pid, ticks):
        signal_group(pid, signal.SIGKILL)
