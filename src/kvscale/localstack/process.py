"""Long-running local processes: start them detached, recognise them later, stop them for good.

Does I/O (spawns, signals, reads /proc). A process is identified by its pid *and* its start
time in clock ticks since boot (`proc.read`), so a pid the kernel has since given to another
program is never signalled. Every process starts as the leader of a new session
(setsid): it survives the command that started it, gets no terminal signals, and whatever it
forks without its own setsid can be found again by its session id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import pathlib
import signal
import time
from collections.abc import Mapping, Sequence

from kvscale.localstack import proc

_POLL_S = 0.1
# After SIGKILL the kernel needs a moment to tear a process down (large Go heaps, many threads).
_KILL_WAIT_S = 10.0


class Outcome(enum.Enum):
    """How `stop` ended a process."""

    NOT_RUNNING = "not running"
    TERMINATED = "terminated"  # exited after SIGTERM within the grace period
    KILLED = "killed"  # needed SIGKILL


@dataclasses.dataclass(frozen=True)
class Record:
    """A started process, as kept in a cluster's state file."""

    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    log: pathlib.Path

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "argv": list(self.argv),
            "log": str(self.log),
        }

    @classmethod
    def from_json(cls, data: object) -> Record:
        if not isinstance(data, dict):
            raise ValueError("process record: must be an object")
        pid, ticks, argv, log = (data.get(k) for k in ("pid", "start_ticks", "argv", "log"))
        if not isinstance(pid, int) or pid <= 1:
            raise ValueError(f"process record pid = {pid!r}: must be an integer above 1")
        if not isinstance(ticks, int) or ticks < 0:
            raise ValueError(f"process record start_ticks = {ticks!r}: must be an integer >= 0")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("process record argv: must be a list of strings")
        if not isinstance(log, str):
            raise ValueError(f"process record log = {log!r}: must be a path")
        return cls(pid=pid, start_ticks=ticks, argv=tuple(argv), log=pathlib.Path(log))


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (None when there is no such process)."""
    found = proc.read(pid)
    return None if found is None else found.start_ticks


def spawn(argv: Sequence[str], *, log: pathlib.Path, env: Mapping[str, str]) -> Record:
    """Start `argv` (argv[0] an absolute path) in a new session, output appended to `log`."""
    if not argv or not os.path.isabs(argv[0]):
        raise ValueError(f"argv = {list(argv)!r}: must start with an absolute executable path")
    log.parent.mkdir(parents=True, exist_ok=True)
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawn(argv[0], list(argv), dict(env), file_actions=file_actions, setsid=True)
    ticks = start_ticks(pid)
    if ticks is None:
        # Gone already and reaped by someone else: record it so callers read its log.
        ticks = 0
    return Record(pid=pid, start_ticks=ticks, argv=tuple(argv), log=log)


def _reap(pid: int) -> bool:
    """Collect `pid` if it is our exited child; True when it was."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def running(record: Record) -> bool:
    """Whether the recorded process is alive (not exited, not a zombie, pid not reused)."""
    if _reap(record.pid):
        return False
    found = proc.read(record.pid)
    if found is None or found.start_ticks != record.start_ticks:
        return False
    if found.exited:
        # A zombie leader may still have threads tearing down (holding memory and ports); it
        # is gone once they are. Collect it if it is ours, so no zombie lingers.
        if _live_threads(record.pid):
            return True
        _reap(record.pid)
        return False
    return True


def _live_threads(pid: int) -> bool:
    """Whether any thread of `pid` is still in a state other than zombie or dead."""
    try:
        tasks = list(pathlib.Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False
    for task in tasks:
        found = proc.read_file(task / "stat")
        if found is not None and not found.exited:
            return True
    return False


def _wait_gone(record: Record, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while running(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def session_members(record: Record) -> list[int]:
    """Live processes in the recorded process's session that started no earlier than it."""
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = proc.read(int(entry.name))
        if found is None or found.exited:
            continue
        if found.session == record.pid and found.start_ticks >= record.start_ticks:
            members.append(int(entry.name))
    return members


def _signal_session(record: Record, signum: int) -> None:
    for pid in session_members(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def stop(record: Record, *, grace_s: float) -> Outcome:
    """SIGTERM, wait up to `grace_s`, then SIGKILL the process and anything left in its session.

    Raises RuntimeError if something survives SIGKILL.
    """
    if not running(record):
        # The leader is gone; what it left in its session goes too, unless its pid now belongs
        # to another program (whose session this would be).
        if proc.read(record.pid) is None:
            _signal_session(record, signal.SIGKILL)
        return Outcome.NOT_RUNNING
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return Outcome.NOT_RUNNING
    outcome = Outcome.TERMINATED
    if not _wait_gone(record, grace_s):
        outcome = Outcome.KILLED
        _signal_session(record, signal.SIGKILL)
        _wait_gone(record, _KILL_WAIT_S)
    # Children that stayed in the session outlive their leader unless killed too.
    _signal_session(record, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT_S
    while running(record) or session_members(record):
        if time.monotonic() >= deadline:
            left = [record.pid] if running(record) else session_members(record)
            raise RuntimeError(f"{record.argv[0]}: processes {left} survived SIGKILL")
        time.sleep(_POLL_S)
    return outcome


def tail(path: pathlib.Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file ("" when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
