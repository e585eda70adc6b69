"""A process's identity and state, read from `/proc/<pid>/stat`. Reads /proc (Linux only).

A pid alone does not name a process: the kernel gives a freed pid to the next program. A pid
*and* its start time in clock ticks since boot (field 22) do, so the cluster's process records
recognise their processes through `read` and never signal a stranger that inherited a pid.
"""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class Stat:
    """The fields of one `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) used here."""

    state: str
    """Field 3: R running, S sleeping, D disk wait, Z zombie, X dead, ..."""
    pgid: int
    """Field 5: the process group id."""
    session: int
    """Field 6: the session id."""
    start_ticks: int
    """Field 22: when the process started, in clock ticks since boot."""

    @property
    def exited(self) -> bool:
        """A zombie or dead process: it has exited, though its pid is not yet free."""
        return self.state in ("Z", "X")


def parse(text: str) -> Stat | None:
    """The fields of a stat line, or None when it is cut short."""
    # The command name (field 2) is parenthesised and may hold spaces or ')'; fields after the
    # last ')' cannot.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return Stat(
        state=fields[0], pgid=int(fields[2]), session=int(fields[3]), start_ticks=int(fields[19])
    )


def read_file(path: pathlib.Path) -> Stat | None:
    """A stat file's fields; None when the process (or thread) is gone."""
    try:
        return parse(path.read_text())
    except OSError:  # FileNotFoundError, or ProcessLookupError while it is torn down
        return None


def read(pid: int) -> Stat | None:
    """The process's fields; None when there is no process with this pid."""
    return read_file(pathlib.Path(f"/proc/{pid}/stat"))
