"""Detached processes are recognised by pid and start time, and `stop` ends them for good.

Uses real short-lived `sh`/`sleep` processes: the behaviour under test is the kernel's.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time

import pytest

from kvscale.localstack import process

SH = shutil.which("sh") or "/bin/sh"


def _spawn(tmp_path: pathlib.Path, script: str) -> process.Record:
    return process.spawn([SH, "-c", script], log=tmp_path / "p.log", env=dict(os.environ))


def _wait_for_log(record: process.Record, text: str) -> None:
    for _ in range(200):
        if text in process.tail(record.log):
            return
        if not process.running(record):
            break
        time.sleep(0.05)
    pytest.fail(f"{text!r} never appeared in {record.log}")


def test_spawned_process_leads_its_own_session_and_logs_to_file(tmp_path: pathlib.Path) -> None:
    record = _spawn(tmp_path, "echo out; echo err >&2; exec sleep 30")
    try:
        _wait_for_log(record, "err")

        assert process.running(record)
        assert os.getsid(record.pid) == record.pid
        assert process.tail(record.log).splitlines() == ["out", "err"]
    finally:
        process.stop(record, grace_s=5)


def test_sigterm_ends_a_cooperative_process(tmp_path: pathlib.Path) -> None:
    record = _spawn(tmp_path, "exec sleep 30")

    outcome = process.stop(record, grace_s=5)

    assert outcome is process.Outcome.TERMINATED
    assert not process.running(record)


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: pathlib.Path,
) -> None:
    record = _spawn(tmp_path, "trap '' TERM; echo trapped; while :; do sleep 0.1; done")
    _wait_for_log(record, "trapped")

    outcome = process.stop(record, grace_s=0.5)

    assert outcome is process.Outcome.KILLED
    assert not process.running(record)


def test_children_left_in_the_session_are_killed_too(tmp_path: pathlib.Path) -> None:
    record = _spawn(tmp_path, "sleep 300 & echo child=$!; exec sleep 30")
    _wait_for_log(record, "child=")
    child = int(process.tail(record.log).split("child=")[1].split()[0])
    child_record = dataclasses.replace(
        record, pid=child, start_ticks=process.start_ticks(child) or 0
    )

    process.stop(record, grace_s=5)

    assert not process.running(child_record)
    assert process.session_members(record) == []


def test_a_reused_pid_is_not_the_recorded_process(tmp_path: pathlib.Path) -> None:
    record = _spawn(tmp_path, "exec sleep 30")
    impostor = dataclasses.replace(record, start_ticks=record.start_ticks + 1)
    try:
        assert not process.running(impostor)
        assert process.stop(impostor, grace_s=1) is process.Outcome.NOT_RUNNING
        assert process.running(record)
    finally:
        process.stop(record, grace_s=5)


def test_relative_executables_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="absolute"):
        process.spawn(["sleep", "1"], log=tmp_path / "x.log", env={})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("nonsense", "object"),
        ({"pid": 1, "start_ticks": 0, "argv": [], "log": "/x"}, "pid"),
        ({"pid": 10, "start_ticks": -1, "argv": [], "log": "/x"}, "start_ticks"),
        ({"pid": 10, "start_ticks": 0, "argv": [3], "log": "/x"}, "argv"),
        ({"pid": 10, "start_ticks": 0, "argv": [], "log": None}, "log"),
    ],
)
def test_garbage_records_are_refused_naming_the_field(data: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        process.Record.from_json(data)
