"""Leader election over a `coordination.k8s.io/v1` Lease: the decisions. Pure: no I/O.

The protocol is client-go's (`k8s.io/client-go/tools/leaderelection`), so it behaves the way
SREs expect from kube-controller-manager and every controller-runtime operator:

- A candidate takes the Lease when nobody holds it (no Lease, or an empty holder left by a
  clean shutdown), or when it has not seen the Lease change for `leaseDurationSeconds`.
  "Not seen change" is measured on the candidate's own monotonic clock from the moment it
  first saw the current record, never from the timestamps written in it, so clock skew
  between machines cannot make a live leader look expired.
- The holder renews every retry period and steps down when it could not renew within the
  renew deadline, which is shorter than the lease duration: it has stopped acting before
  any other candidate may take over.
- Every write carries the resourceVersion it was computed from, so of two candidates that
  try at once exactly one wins (the other gets 409 Conflict) — the API server is the lock.

Times: `now` values here are a monotonic clock's seconds (for expiry) and a UTC datetime
(for the timestamps written into the Lease, which are informational).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from kvscale_operator import config


@dataclasses.dataclass(frozen=True)
class Record:
    """The Lease's spec and version as read from the API server."""

    holder: str  # "" when nobody holds it
    lease_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    version: str  # metadata.resourceVersion; every write changes it

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Record:
        """From a Lease object (a plain dict); missing fields read as a free Lease."""
        spec = obj.get("spec") or {}
        metadata = obj.get("metadata") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_seconds=duration if isinstance(duration, int) and duration > 0 else 0,
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=transitions if isinstance(transitions, int) else 0,
            version=str(metadata.get("resourceVersion") or ""),
        )


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a candidate last saw of the Lease, and when (its own monotonic clock) it first saw
    that record. A renewal changes the record (renewTime, resourceVersion), which restarts the
    count; a dead holder's record stops changing, and then it expires."""

    record: Record
    seen_at: float


def observe(previous: Observation | None, record: Record, now: float) -> Observation:
    """The observation after reading `record` at monotonic time `now`."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record=record, seen_at=now)


def expired(observation: Observation, now: float) -> bool:
    """The holder has not renewed for the duration it promised (its own leaseDurationSeconds)."""
    return now - observation.seen_at >= observation.record.lease_seconds


def may_take(observation: Observation | None, identity: str, now: float) -> bool:
    """Whether `identity` may write itself into the Lease now (None: there is no Lease)."""
    if observation is None:
        return True
    holder = observation.record.holder
    return holder in ("", identity) or expired(observation, now)


def micro_time(when: datetime.datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claim(
    record: Record | None,
    identity: str,
    election: config.LeaderElection,
    when: datetime.datetime,
) -> dict[str, Any]:
    """The Lease spec that makes (or keeps) `identity` the holder.

    A renewal keeps acquireTime and the transition count; a change of holder sets acquireTime
    and counts a transition (as client-go does, also after a clean release)."""
    stamp = micro_time(when)
    renewing = record is not None and record.holder == identity
    acquired = record.acquire_time if renewing and record is not None else stamp
    transitions = 0 if record is None else record.transitions + (0 if renewing else 1)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": election.lease_whole_seconds,
        "acquireTime": acquired,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def release(record: Record, when: datetime.datetime) -> dict[str, Any]:
    """The Lease spec a leader writes when it stops cleanly: no holder, so a standby takes
    over at its next retry instead of waiting out the lease duration."""
    stamp = micro_time(when)
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": record.transitions,
    }


def overdue(last_renewed: float, election: config.LeaderElection, now: float) -> bool:
    """The leader could not renew within its renew deadline: it must stop acting now."""
    return now - last_renewed >= election.renew_deadline_seconds
