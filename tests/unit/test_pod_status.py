"""Pod status (phase, conditions, container statuses) is computed from container states."""

from __future__ import annotations

import datetime

import pytest

from kvscale.localstack.nodeagent import status

T0 = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=30)
T2 = T0 + datetime.timedelta(seconds=90)


def waiting(reason: str = "ContainerCreating") -> status.Waiting:
    return status.Waiting(reason)


def running() -> status.Running:
    return status.Running(started_at=T0)


def exited(code: int) -> status.Terminated:
    return status.Terminated(
        exit_code=code, reason="Completed" if code == 0 else "Error", finished_at=T1, started_at=T0
    )


def c(
    state: status.State,
    *,
    ready: bool = False,
    last: status.Terminated | None = None,
    name: str = "c",
    sidecar: bool = False,
    started: bool = False,
    restarts: int = 0,
) -> status.ContainerView:
    return status.ContainerView(
        name=name,
        image="kvscale.local/testbox:1",
        state=state,
        last_state=last,
        ready=ready,
        started=started or ready,
        sidecar=sidecar,
        restart_count=restarts,
    )


def pod(
    *containers: status.ContainerView,
    policy: str = "Always",
    init: tuple[status.ContainerView, ...] = (),
) -> status.PodView:
    return status.PodView(
        restart_policy=policy,
        containers=containers,
        init_containers=init,
        pod_ip="127.1.0.2",
        host_ip="127.0.0.1",
        start_time=T0,
    )


@pytest.mark.parametrize(
    ("view", "phase"),
    [
        (pod(c(waiting())), "Pending"),
        (pod(c(waiting("ErrImagePull"))), "Pending"),
        (pod(c(running()), c(waiting(), name="d")), "Pending"),
        (pod(c(running())), "Running"),
        (pod(c(running()), c(exited(0), name="d"), policy="Never"), "Running"),
        # A container waiting to be restarted counts as stopped.
        (pod(c(waiting("CrashLoopBackOff"), last=exited(1))), "Running"),
        (pod(c(exited(0)), policy="Always"), "Running"),
        (pod(c(exited(0)), c(exited(0), name="d"), policy="Never"), "Succeeded"),
        (pod(c(exited(0)), policy="OnFailure"), "Succeeded"),
        (pod(c(exited(1)), policy="Never"), "Failed"),
        (pod(c(exited(0)), c(exited(2), name="d"), policy="Never"), "Failed"),
        (pod(c(exited(1)), policy="OnFailure"), "Running"),
        # Init containers.
        (pod(c(waiting("PodInitializing")), init=(c(running(), name="i"),)), "Pending"),
        (pod(c(waiting("PodInitializing")), init=(c(exited(1), name="i"),)), "Pending"),
        (
            pod(c(waiting("PodInitializing")), init=(c(exited(1), name="i"),), policy="Never"),
            "Failed",
        ),
        (pod(c(running()), init=(c(exited(0), name="i"),)), "Running"),
        (pod(c(running()), init=(c(running(), name="s", sidecar=True, started=True),)), "Running"),
        (
            pod(c(waiting("PodInitializing")), init=(c(running(), name="s", sidecar=True),)),
            "Pending",
        ),
    ],
)
def test_phase(view: status.PodView, phase: str) -> None:
    assert status.phase(view) == phase


def test_a_terminal_phase_never_changes() -> None:
    assert status.phase(pod(c(running())), previous_phase="Succeeded") == "Succeeded"
    assert status.phase(pod(c(waiting())), previous_phase="Failed") == "Failed"
    assert status.phase(pod(c(running())), previous_phase="Pending") == "Running"


def conditions(rendered: dict[str, object]) -> dict[str, dict[str, object]]:
    items = rendered["conditions"]
    assert isinstance(items, list)
    return {str(item["type"]): item for item in items}


def test_ready_when_every_container_is_ready() -> None:
    rendered = status.render(
        pod(c(running(), ready=True), c(running(), ready=True, name="d")), {}, T0
    )
    found = conditions(rendered)
    assert {k: v["status"] for k, v in found.items()} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    assert rendered["phase"] == "Running"
    assert rendered["podIP"] == "127.1.0.2"
    assert rendered["podIPs"] == [{"ip": "127.1.0.2"}]
    assert rendered["hostIP"] == "127.0.0.1"
    assert rendered["startTime"] == "2030-01-01T12:00:00Z"


def test_unready_containers_are_named() -> None:
    rendered = status.render(
        pod(c(running(), name="a"), c(running(), ready=True, name="b"), c(waiting(), name="z")),
        {},
        T0,
    )
    ready = conditions(rendered)["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [a z]"


def test_pending_init_containers_are_named() -> None:
    view = pod(
        c(waiting("PodInitializing")), init=(c(exited(0), name="one"), c(running(), name="two"))
    )
    found = conditions(status.render(view, {}, T0))
    assert found["Initialized"]["reason"] == "ContainersNotInitialized"
    assert found["Initialized"]["message"] == "containers with incomplete status: [two]"


def test_readiness_gates_hold_ready_until_their_condition_is_true() -> None:
    view = status.PodView(
        restart_policy="Always",
        containers=(c(running(), ready=True),),
        pod_ip="127.1.0.2",
        readiness_gates=("example.com/lb",),
    )
    unset = conditions(status.render(view, {}, T0))
    assert unset["ContainersReady"]["status"] == "True"
    assert unset["Ready"]["status"] == "False"
    assert unset["Ready"]["reason"] == "ReadinessGatesNotReady"
    gate = {"conditions": [{"type": "example.com/lb", "status": "True"}]}
    assert conditions(status.render(view, gate, T0))["Ready"]["status"] == "True"


def test_finished_pods_are_not_ready() -> None:
    found = conditions(status.render(pod(c(exited(0)), policy="Never"), {}, T0))
    assert found["Ready"]["status"] == "False"
    assert found["Ready"]["reason"] == "PodCompleted"


def test_transition_times_move_only_when_a_status_changes() -> None:
    first = status.render(pod(c(running())), {}, T0)
    again = status.render(pod(c(running())), first, T1)
    assert again == first  # nothing changed: nothing to write
    became_ready = status.render(pod(c(running(), ready=True)), first, T2)
    before, after = conditions(first), conditions(became_ready)
    assert after["Ready"]["lastTransitionTime"] == "2030-01-01T12:01:30Z"
    assert after["Initialized"]["lastTransitionTime"] == before["Initialized"]["lastTransitionTime"]
    assert "reason" not in after["Ready"]


def test_container_statuses() -> None:
    crashed = exited(1)
    rendered = status.render(
        pod(
            c(waiting("CrashLoopBackOff"), last=crashed, name="a", restarts=3),
            c(running(), ready=True, name="b"),
            c(exited(0), name="c"),
        ),
        {},
        T0,
    )
    entries = rendered["containerStatuses"]
    assert isinstance(entries, list)
    a, b, done = entries
    assert a == {
        "name": "a",
        "image": "kvscale.local/testbox:1",
        "imageID": "kvscale.local/testbox:1",
        "ready": False,
        "restartCount": 3,
        "started": False,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": "2030-01-01T12:00:00Z",
                "finishedAt": "2030-01-01T12:00:30Z",
            }
        },
    }
    assert b["state"] == {"running": {"startedAt": "2030-01-01T12:00:00Z"}}
    assert (b["ready"], b["started"], b["lastState"]) == (True, True, {})
    assert done["state"]["terminated"]["exitCode"] == 0
    assert "initContainerStatuses" not in rendered


def test_a_pod_without_an_address_says_it_is_not_ready_to_start() -> None:
    view = status.PodView(
        restart_policy="Always",
        containers=(c(waiting()),),
        reason="PodIPExhausted",
        message="no free address",
    )
    rendered = status.render(view, {}, T0)
    assert conditions(rendered)["PodReadyToStartContainers"]["status"] == "False"
    assert "podIP" not in rendered
    assert (rendered["reason"], rendered["message"]) == ("PodIPExhausted", "no free address")


def test_written_statuses_read_back_as_the_same_views() -> None:
    views = (
        c(waiting("CrashLoopBackOff"), last=exited(1), name="a", restarts=3),
        c(running(), ready=True, name="b"),
        c(exited(0), name="c"),
    )
    rendered = status.render(pod(*views), {}, T0)
    back = status.previous_containers(rendered)
    assert [back[v.name] for v in views] == [
        status.ContainerView(
            name=v.name,
            image=v.image,
            state=v.state,
            last_state=v.last_state,
            restart_count=v.restart_count,
            started=v.started,
            ready=v.ready,
        )
        for v in views
    ]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "garbage",
        [{"name": "a"}],
        [{"name": "a", "state": {"running": {"startedAt": "yesterday"}}}],
        [
            {
                "name": "a",
                "state": {"terminated": {"exitCode": "1", "finishedAt": "2030-01-01T00:00:00Z"}},
            }
        ],
        [{"state": {"running": {"startedAt": "2030-01-01T00:00:00Z"}}}],
    ],
)
def test_unreadable_previous_statuses_are_ignored(raw: object) -> None:
    assert status.previous_containers({"containerStatuses": raw}) == {}
