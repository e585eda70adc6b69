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


def _settings(tmp_path: pathlib.Path) -> local.Settings:
    return local.Settings(name="retry", state_dir=tmp_path / "state", runtime=local.NO_RUNTIME)


def test_a_transient_death_starts_again_and_says_why(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "kubelet.log"
    log.write_text(KUBELET_EXDEV + "\n")
    attempts: list[int] = []
    started = object()

    def start_once(*_: object) -> object:
        attempts.append(1)
        if len(attempts) == 1:
            raise local.died_at_start("kubelet", "registering a Ready node", log)
        return started

    said: list[str] = []
    monkeypatch.setattr(local, "_start_once", start_once)
    bins = binaries.Binaries(tmp_path / "bin")
    assert local.start(_settings(tmp_path), bins=bins, progress=said.append) is started
    assert len(attempts) == 2
    assert said == ["kubelet: it could not rename its socket into place; starting again"]


def test_a_transient_death_every_time_gives_up_after_the_last_attempt(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "kubelet.log"
    log.write_text(KUBELET_EXDEV + "\n")
    attempts: list[int] = []

    def start_once(*_: object) -> object:
        attempts.append(1)
        raise local.died_at_start("kubelet", "registering a Ready node", log)

    monkeypatch.setattr(local, "_start_once", start_once)
    bins = binaries.Binaries(tmp_path / "bin")
    with pytest.raises(local.TransientStartError, match="invalid cross-device link"):
        local.start(_settings(tmp_path), bins=bins)
    assert len(attempts) == 3


def test_any_other_death_fails_at_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "kubelet.log"
    log.write_text(CONFIG_WRONG + "\n")
    attempts: list[int] = []

    def start_once(*_: object) -> object:
        attempts.append(1)
        raise local.died_at_start("kubelet", "registering a Ready node", log)

    monkeypatch.setattr(local, "_start_once", start_once)
    bins = binaries.Binaries(tmp_path / "bin")
    with pytest.raises(local.StartError, match="failed to load kubelet config file"):
        local.start(_settings(tmp_path), bins=bins)
    assert len(attempts) == 1
