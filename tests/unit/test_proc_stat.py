"""A process is named by its pid and its start time, read from /proc/<pid>/stat."""

from __future__ import annotations

import os

import pytest

from kvscale.localstack import proc

# Fields 1-22 of a real stat line, with a command name that holds a space and a ')'.
_LINE = "4242 (my (odd) cmd) S 1 4240 4240 0 -1 4194560 107 0 0 0 1 0 0 0 20 0 1 0 98765 0 0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_LINE, proc.Stat(state="S", pgid=4240, session=4240, start_ticks=98765)),
        (_LINE.replace(") S", ") Z"), proc.Stat("Z", 4240, 4240, 98765)),
        ("4242 (cut) S 1 4240", None),  # torn down while read: too few fields
    ],
)
def test_parse(text: str, expected: proc.Stat | None) -> None:
    assert proc.parse(text) == expected


@pytest.mark.parametrize(
    ("state", "exited"), [("R", False), ("S", False), ("Z", True), ("X", True)]
)
def test_exited_means_zombie_or_dead(state: str, exited: bool) -> None:
    assert proc.Stat(state, 1, 1, 0).exited is exited


def test_read_names_this_process_and_no_other() -> None:
    mine = proc.read(os.getpid())
    assert mine is not None
    assert mine.pgid == os.getpgid(0)
    assert mine.session == os.getsid(0)
    assert not mine.exited
    # Above the kernel's pid_max (at most 2**22): no process can have it.
    assert proc.read(2**22 + 1) is None
