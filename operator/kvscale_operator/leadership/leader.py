"""Leader election between replicas of the operator: campaign for, hold and release a Lease.
Does I/O.

`Elector` reads and writes one `coordination.k8s.io/v1` Lease; what it may write and when
leadership is over are decided by `lease` (pure). `lead` is the whole life of an elected
replica, for `main`: wait for the Lease (serving nothing but liveness and readiness), run
the operator while holding it, and

- on SIGTERM/SIGINT: stop the operator, then release the Lease so a standby takes over at
  its next retry (about `retry_seconds`) instead of after the lease duration;
- on losing the Lease (another holder, or no renewal within the renew deadline): stop the
  operator at once and return `LOST`, so the process exits non-zero and its pod restarts as
  a fresh candidate — the same choice client-go's controllers make, because a replica that
  is unsure whether it leads must not write.

Only one replica runs kopf handlers at a time, so two replicas never both apply, scale or
write status.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import httpx2
import lightkube
from lightkube import AsyncClient, generic_resource

from kvscale_operator import config, utc
from kvscale_operator.leadership import lease

log = logging.getLogger("kvscale_operator")

# A generic resource keeps the Lease as plain JSON: lightkube's typed model would re-format
# the MicroTime fields (dropping ".000000"), which the API server's parser refuses.
LeaseResource = generic_resource.create_namespaced_resource(
    "coordination.k8s.io", "v1", "Lease", "leases"
)

# Errors one attempt may meet that a later attempt may not: API errors and transport errors.
_TRANSIENT = (lightkube.ApiError, httpx2.HTTPError, OSError, TimeoutError)


def identity(environ: Mapping[str, str] = os.environ) -> str:
    """This process's name in the Lease: its pod's name (`POD_NAME` from the downward API,
    else the hostname a container gets) plus a random suffix, so two processes on one host
    (or a restarted pod) never mistake each other's leadership."""
    name = environ.get("POD_NAME") or environ.get("HOSTNAME") or socket.gethostname()
    return f"{name}_{uuid.uuid4().hex[:8]}"


class Outcome(enum.Enum):
    """How an elected run ended."""

    STOPPED = "stopped"  # a signal (or the operator returning) ended it; the Lease is released
    LOST = "lost"  # leadership was lost; the operator was stopped


class Elector:
    """One candidate for one Lease (see the module docstring)."""

    def __init__(
        self,
        client: AsyncClient,
        election: config.LeaderElection,
        me: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = utc.now,
    ) -> None:
        self._client = client
        self._election = election
        self.identity = me
        self._monotonic = monotonic
        self._wall = wall
        self._seen: lease.Observation | None = None

    @property
    def stop_grace_seconds(self) -> float:
        """How long a replica that lost the Lease waits for kopf to stop before cancelling
        it: the time left before another candidate may take over."""
        election = self._election
        return max(0.5, election.lease_seconds - election.renew_deadline_seconds)

    @property
    def holder(self) -> str:
        """The holder as last seen ("" when free or not read yet)."""
        return self._seen.record.holder if self._seen is not None else ""

    async def _read(self) -> dict[str, Any] | None:
        try:
            found: Any = await self._client.get(
                LeaseResource, self._election.name, namespace=self._election.namespace
            )
        except lightkube.ApiError as error:
            if error.status.code == 404:
                return None
            raise
        result: dict[str, Any] = found.to_dict()
        return result

    async def _write(self, record: lease.Record | None, spec: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self._election.name,
            "namespace": self._election.namespace,
        }
        if record is not None:
            # The precondition that makes the API server the lock: a write computed from an
            # older version fails with 409 Conflict.
            metadata["resourceVersion"] = record.version
        body = LeaseResource.from_dict(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": metadata,
                "spec": spec,
            }
        )
        if record is None:
            written: Any = await self._client.create(body)
        else:
            written = await self._client.replace(body)
        result: dict[str, Any] = written.to_dict()
        return result

    async def try_once(self) -> bool:
        """One attempt to take or renew the Lease; True when this process holds it now.

        Raises the transient errors (API, transport) for the caller to count against its
        deadline; a lost race (409) is a plain False."""
        found = await self._read()
        now = self._monotonic()
        record = lease.Record.parse(found) if found is not None else None
        self._seen = lease.observe(self._seen, record, now) if record is not None else None
        if not lease.may_take(self._seen, self.identity, now):
            return False
        spec = lease.claim(record, self.identity, self._election, self._wall())
        try:
            written = await self._write(record, spec)
        except lightkube.ApiError as error:
            if error.status.code == 409:  # someone else wrote first (or created it first)
                return False
            raise
        self._seen = lease.Observation(lease.Record.parse(written), self._monotonic())
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Campaigns until this process holds the Lease (True) or `stop` is set (False)."""
        reported = None
        while not stop.is_set():
            try:
                if await self.try_once():
                    log.info(
                        f"leader election: {self.identity} now holds lease "
                        f"{self._election.namespace}/{self._election.name}"
                    )
                    return True
                if self.holder != reported:
                    reported = self.holder
                    log.info(
                        f"leader election: lease {self._election.namespace}/"
                        f"{self._election.name} is held by {self.holder or 'nobody'}; waiting"
                    )
            except _TRANSIENT as error:
                log.warning(f"leader election: could not read or write the lease: {error}")
            # Jitter (client-go: up to 1.2x) keeps candidates from retrying in lockstep.
            await _wait(stop, self._election.retry_seconds * random.uniform(1.0, 1.2))
        return False

    async def hold(self) -> str:
        """Renews every retry period while it can; returns why leadership ended."""
        election = self._election
        last_renewed = self._monotonic()
        problem = "no answer"
        while True:
            await asyncio.sleep(election.retry_seconds)
            remaining = election.renew_deadline_seconds - (self._monotonic() - last_renewed)
            try:
                renewed = await asyncio.wait_for(self.try_once(), timeout=max(remaining, 0.1))
            except _TRANSIENT as error:
                renewed, problem = False, str(error) or type(error).__name__
            if renewed:
                last_renewed = self._monotonic()
                continue
            if self.holder not in ("", self.identity):
                return f"the lease is now held by {self.holder}"
            if lease.overdue(last_renewed, election, self._monotonic()):
                return (
                    f"could not renew the lease within {election.renew_deadline_seconds:g}s "
                    f"({problem})"
                )

    async def release(self) -> None:
        """Gives the Lease up if this process still holds it; errors are only logged (the
        Lease then expires on its own)."""
        try:
            found = await self._read()
            if found is None:
                return
            record = lease.Record.parse(found)
            if record.holder != self.identity:
                return
            await self._write(record, lease.release(record, self._wall()))
            log.info(f"leader election: released lease {self._election.name}")
        except _TRANSIENT as error:
            log.warning(f"leader election: could not release the lease: {error}")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def lead(
    elector: Elector, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
) -> Outcome:
    """Waits for the Lease, then runs `run(stop)` while holding it (see the module docstring).

    `run` must return soon after `stop` is set (kopf's `stop_flag`)."""
    stop = asyncio.Event()
    # Until kopf installs its own handlers (which then stop it), a signal ends the campaign.
    _on_signals(stop)
    if not await elector.acquire(stop):
        return Outcome.STOPPED
    operator = asyncio.create_task(run(stop), name="operator")
    holding = asyncio.create_task(elector.hold(), name="leader lease")
    try:
        done, _ = await asyncio.wait({operator, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding in done:
            log.error(f"leader election: lost leadership: {holding.result()}; stopping")
            stop.set()
            # A replica unsure of its leadership must not write: give kopf a moment to stop
            # cleanly, then cancel whatever is still running.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(operator, elector.stop_grace_seconds)
            return Outcome.LOST
        operator.result()  # re-raise what stopped the operator, if anything did
        return Outcome.STOPPED
    finally:
        for task in (operator, holding):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(operator, holding, return_exceptions=True)
        await elector.release()
