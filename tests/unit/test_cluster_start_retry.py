"""A component that dies at start for a reason a fresh start clears is started again; others fail.

The signs are lines the components really logged on these hosts (CI, 2026-12-04: kubelet exited
when it could not rename its pod-resources socket into place).
"""

from __future__ import annotations

import pathlib

import pytest

from kvscale.localstack import binaries
from kvscale.localstack import cluster as local

KUBELET_EXDEV = (
    'E1204 22:06:30.061192   31173 server.go:260] "Failed to create listener for podResources '
    'endpoint" err="failed to move temporary file to addr \\"/tmp/x/node/kubelet/pod-resources/'
    'kubelet.sock\\": rename /tmp/x/node/kubelet/pod-resources/3214899913 /tmp/x/node/kubelet/'
    'pod-resources/kubelet.sock: invalid cross-device link"'
)
PORT_TAKEN = "listen tcp 127.0.0.1:6443: bind: address already in use"
CONFIG_WRONG = 'E1204 run.go:72] "command failed" err="failed to load kubelet config file"'


@pytest.mark.parametrize(
    ("last_line", "retry"),
    [
        (KUBELET_EXDEV, "it could not rename its socket into place; starting again"),
        (PORT_TAKEN, "its port was taken meanwhile; choosing new ports"),
        (CONFIG_WRONG, None),
    ],
)
def test_what_the_log_says_decides_whether_a_start_is_retried(
    tmp_path: pathlib.Path, last_line: str, retry: str | None
) -> None:
    log = tmp_path / "kubelet.log"
    log.write_text(f"I1204 server.go:1285] Started kubelet\n{last_line}\n")
    error = local.died_at_start("kubelet", "registering a Ready node", log)
    assert str(error).startswith("kubelet: exited while waiting for it to be registering a Ready")
    assert last_line in str(error)
    if retry is None:
        assert not isinstance(error, local.TransientStartError)
    else:
        assert isinstance(error, local.TransientStartError)
        assert error.retry == retry


def _start_dying(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    last_line: str,
    deaths: int,
    attempts: list[int],
) -> list[str]:
    """Start a cluster whose first `deaths` attempts die with `last_line` in kubelet's log, and
    the next succeeds; each attempt is appended to `attempts` (readable when start raises).
    Returns what start said."""
    log = tmp_path / "kubelet.log"
    log.write_text(last_line + "\n")
    started = object()

    def start_once(*_: object) -> object:
        attempts.append(1)
        if len(attempts) <= deaths:
            raise local.died_at_start("kubelet", "registering a Ready node", log)
        return started

    monkeypatch.setattr(local, "_start_once", start_once)
    settings = local.Settings(name="retry", state_dir=tmp_path / "state", runtime=local.NO_RUNTIME)
    said: list[str] = []
    bins = binaries.Binaries(tmp_path / "bin")
    assert local.start(settings, bins=bins, progress=said.append) is started
    return said


def test_a_transient_death_starts_again_and_says_why(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []
    said = _start_dying(tmp_path, monkeypatch, KUBELET_EXDEV, 1, attempts)
    assert len(attempts) == 2
    assert said == ["kubelet: it could not rename its socket into place; starting again"]


def test_a_transient_death_every_time_gives_up_after_the_last_attempt(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []
    with pytest.raises(local.TransientStartError, match="invalid cross-device link"):
        _start_dying(tmp_path, monkeypatch, KUBELET_EXDEV, 3, attempts)
    assert len(attempts) == 3


def test_any_other_death_fails_at_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []
    with pytest.raises(local.StartError, match="failed to load kubelet config file"):
        _start_dying(tmp_path, monkeypatch, CONFIG_WRONG, 1, attempts)
    assert len(attempts) == 1
