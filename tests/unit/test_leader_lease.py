"""Leader election's decisions over a Lease: who may take it, when a holder expires, what is
written on claim, renewal and release, and how the timing flags are checked."""

from __future__ import annotations

import datetime

import pytest

from kvscale import cli
from kvscale_operator import config
from kvscale_operator.leadership import lease

ELECTION = config.LeaderElection(namespace="kvscale-system")
T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=datetime.UTC)


def record(
    holder: str, *, version: str = "7", seconds: int = 15, transitions: int = 2
) -> lease.Record:
    return lease.Record(
        holder=holder,
        lease_seconds=seconds,
        acquire_time="2026-01-02T03:00:00.000000Z",
        renew_time="2026-01-02T03:04:00.000000Z",
        transitions=transitions,
        version=version,
    )


@pytest.mark.parametrize(
    ("holder", "seen_at", "now", "may"),
    [
        ("", 100.0, 100.0, True),  # released: free at once
        ("me", 100.0, 100.0, True),  # our own: renew
        ("other", 100.0, 100.0, False),  # just seen
        ("other", 100.0, 114.9, False),  # not yet its duration
        ("other", 100.0, 115.0, True),  # unchanged for its whole duration: expired
    ],
)
def test_who_may_take_the_lease(holder: str, seen_at: float, now: float, may: bool) -> None:
    seen = lease.Observation(record(holder), seen_at)
    assert lease.may_take(seen, "me", now) is may


def test_no_lease_at_all_may_be_created() -> None:
    assert lease.may_take(None, "me", 0.0) is True


def test_a_renewal_restarts_the_count_and_a_dead_holder_expires() -> None:
    first = lease.observe(None, record("other", version="7"), now=100.0)
    again = lease.observe(first, record("other", version="7"), now=110.0)
    assert again.seen_at == 100.0  # the same record: the clock keeps running
    renewed = lease.observe(again, record("other", version="8"), now=112.0)
    assert renewed.seen_at == 112.0  # a new version: the holder is alive
    assert not lease.may_take(renewed, "me", 126.0)
    assert lease.may_take(renewed, "me", 127.0)


def test_expiry_uses_the_duration_the_holder_wrote_not_ours() -> None:
    seen = lease.Observation(record("other", seconds=60), 0.0)
    assert not lease.may_take(seen, "me", 59.0)
    assert lease.may_take(seen, "me", 60.0)


def test_claiming_a_new_lease_starts_at_zero_transitions() -> None:
    spec = lease.claim(None, "me", ELECTION, T0)
    assert spec == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-02T03:04:05.000600Z",
        "renewTime": "2026-01-02T03:04:05.000600Z",
        "leaseTransitions": 0,
    }


def test_renewing_keeps_the_acquire_time_and_the_transition_count() -> None:
    spec = lease.claim(record("me"), "me", ELECTION, T0)
    assert spec["acquireTime"] == "2026-01-02T03:00:00.000000Z"
    assert spec["renewTime"] == "2026-01-02T03:04:05.000600Z"
    assert spec["leaseTransitions"] == 2


@pytest.mark.parametrize("previous", ["other", ""])
def test_taking_over_counts_a_transition(previous: str) -> None:
    spec = lease.claim(record(previous), "me", ELECTION, T0)
    assert spec["holderIdentity"] == "me"
    assert spec["acquireTime"] == "2026-01-02T03:04:05.000600Z"
    assert spec["leaseTransitions"] == 3


def test_release_leaves_no_holder_and_keeps_the_count() -> None:
    spec = lease.release(record("me"), T0)
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2


def test_micro_time_always_has_six_fraction_digits() -> None:
    # The API server's MicroTime parser refuses a timestamp without them.
    whole = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert lease.micro_time(whole) == "2026-01-01T00:00:00.000000Z"
    east = datetime.datetime(2026, 1, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert lease.micro_time(east) == "2026-01-01T00:00:00.000000Z"


def test_the_leader_steps_down_at_its_renew_deadline() -> None:
    assert not lease.overdue(last_renewed=100.0, election=ELECTION, now=109.9)
    assert lease.overdue(last_renewed=100.0, election=ELECTION, now=110.0)


def test_a_record_parses_from_a_lease_object_and_garbage_reads_as_free() -> None:
    parsed = lease.Record.parse(
        {
            "metadata": {"resourceVersion": "42"},
            "spec": {
                "holderIdentity": "pod-a_1",
                "leaseDurationSeconds": 15,
                "leaseTransitions": 4,
            },
        }
    )
    assert (parsed.holder, parsed.lease_seconds, parsed.transitions, parsed.version) == (
        "pod-a_1",
        15,
        4,
        "42",
    )
    garbage = lease.Record.parse(
        {"spec": {"leaseDurationSeconds": "soon", "leaseTransitions": None}}
    )
    assert (garbage.holder, garbage.lease_seconds, garbage.transitions) == ("", 0, 0)


def election(*argv: str) -> config.LeaderElection | None:
    args = cli.build_parser().parse_args(["operator", *argv])
    return config.Settings.from_args(args).leader_election


def test_leader_election_is_off_unless_asked_for() -> None:
    assert election() is None


def test_leader_election_flags_are_read() -> None:
    found = election(
        "--leader-elect", "--leader-elect-resource-namespace", "ops",
        "--leader-elect-resource-name", "kv", "--leader-elect-lease-duration", "30",
        "--leader-elect-renew-deadline", "20", "--leader-elect-retry-period", "4",
    )  # fmt: skip
    assert found == config.LeaderElection(
        namespace="ops", name="kv", lease_seconds=30, renew_deadline_seconds=20, retry_seconds=4
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), r"--leader-elect-resource-namespace: is required with --leader-elect"),
        (
            ("--leader-elect-resource-namespace", "ops", "--leader-elect-lease-duration", "10"),
            r"--leader-elect-lease-duration = 10, must be greater than "
            r"--leader-elect-renew-deadline \(10\)",
        ),
        (
            ("--leader-elect-resource-namespace", "ops", "--leader-elect-retry-period", "10"),
            r"--leader-elect-renew-deadline = 10, must be greater than "
            r"--leader-elect-retry-period \(10\)",
        ),
        (
            ("--leader-elect-resource-namespace", "ops", "--leader-elect-retry-period", "0"),
            r"--leader-elect-retry-period = 0, must be greater than 0",
        ),
    ],
)
def test_timing_that_cannot_be_safe_is_refused_by_flag(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        election("--leader-elect", *argv)


def test_a_fractional_lease_duration_is_written_rounded_up() -> None:
    assert (
        config.LeaderElection(
            namespace="n", lease_seconds=2.5, renew_deadline_seconds=2, retry_seconds=1
        ).lease_whole_seconds
        == 3
    )
