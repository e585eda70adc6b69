"""The agent's on-disk state: one directory per pod with its logs and process records. I/O.

Layout (under `<state-dir>/pods/`):

    <namespace>_<pod>_<uid>/<container>.log   stdout and stderr, appended across restarts
    <namespace>_<pod>_<uid>/<container>.pid   JSON {"pid", "ticks", "startedAt"} while it runs

Namespaces, pod names and container names are DNS names, so `_` separates them unambiguously.
A record is written when a container starts and removed when it exits; the records a crashed
agent leaves behind are how its successor finds processes to adopt or to kill.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

_RECORD_SUFFIX = ".pid"


@dataclasses.dataclass(frozen=True)
class Record:
    """A running container process: its group (pid), identity (start ticks) and start time."""

    pid: int
    ticks: int
    started_at: str


@dataclasses.dataclass(frozen=True)
class Found:
    """A record found on disk, with the pod it belongs to."""

    pod_dir: Path
    uid: str
    container: str
    record: Record


def pod_dir(pods_dir: Path, namespace: str, name: str, uid: str) -> Path:
    return pods_dir / f"{namespace}_{name}_{uid}"


def make_pod_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


def log_path(directory: Path, container: str) -> Path:
    return directory / f"{container}.log"


def write_record(directory: Path, container: str, record: Record) -> None:
    """Record a started process (atomically: a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{container}{_RECORD_SUFFIX}"
    partial = directory / f".{container}{_RECORD_SUFFIX}.tmp"
    partial.write_text(
        json.dumps({"pid": record.pid, "ticks": record.ticks, "startedAt": record.started_at})
    )
    os.replace(partial, final)


def remove_record(directory: Path, container: str) -> None:
    (directory / f"{container}{_RECORD_SUFFIX}").unlink(missing_ok=True)


def _read(path: Path) -> Record | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, ticks, started = data.get("pid"), data.get("ticks"), data.get("startedAt")
    if not isinstance(pid, int) or not isinstance(ticks, int) or not isinstance(started, str):
        return None
    if pid <= 1:
        return None
    return Record(pid=pid, ticks=ticks, started_at=started)


def scan(pods_dir: Path) -> list[Found]:
    """Every readable process record under `pods_dir`; unreadable ones are removed."""
    found: list[Found] = []
    if not pods_dir.is_dir():
        return found
    for directory in sorted(pods_dir.iterdir()):
        parts = directory.name.split("_")
        if not directory.is_dir() or len(parts) != 3:
            continue
        for path in sorted(directory.glob(f"*{_RECORD_SUFFIX}")):
            record = _read(path)
            if record is None:
                path.unlink(missing_ok=True)
                continue
            container = path.name.removesuffix(_RECORD_SUFFIX)
            found.append(Found(pod_dir=directory, uid=parts[2], container=container, record=record))
    return found
