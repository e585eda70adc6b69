"""A cluster's state file round-trips, and a damaged one is refused with a clear message."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from kvscale.localstack import cluster as local
from kvscale.localstack import components, layout, node, process


def _handle(state_dir: pathlib.Path) -> local.Cluster:
    log = layout.Layout(state_dir).log(components.ETCD)
    return local.Cluster(
        name="unit",
        state_dir=state_dir,
        ports=components.Ports(2379, 2380, 6443, 10257, 10259),
        pod_cidr="127.25.43.0/24",
        service_cidr="10.96.0.0/16",
        etcd_data_dir=pathlib.Path("/dev/shm/kvscale-unit-etcd-x"),
        nodes=2,
        gpus_per_node=2,
        node_prefix="local-node",
        processes={components.ETCD: process.Record(1234, 99, ("/bin/etcd", "--x"), log)},
        timings={"etcd": 0.5, "total": 9.0},
        started_at="2030-01-01T00:00:00+00:00",
    )


def test_state_round_trips_through_json(tmp_path: pathlib.Path) -> None:
    handle = _handle(tmp_path)

    assert local.Cluster.from_json(tmp_path, json.loads(json.dumps(handle.to_json()))) == handle


def test_nothing_recorded_loads_as_none(tmp_path: pathlib.Path) -> None:
    assert local.load(tmp_path) is None


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda d: d.update(format=99), "format"),
        (lambda d: d.pop("ports"), "ports"),
        (lambda d: d.update(nodes="two"), "nodes"),
        (lambda d: d["processes"]["etcd"].update(pid="x"), "pid"),
        (lambda d: d["ports"].update(apiserver=70000), "ports.apiserver"),
    ],
)
def test_damaged_state_is_refused_naming_the_field(
    tmp_path: pathlib.Path, damage: object, field: str
) -> None:
    document = _handle(tmp_path).to_json()
    assert callable(damage)
    damage(document)
    layout.Layout(tmp_path).state_file.write_text(json.dumps(document))

    with pytest.raises(local.ClusterError, match=field):
        local.load(tmp_path)


def test_unparsable_state_is_refused(tmp_path: pathlib.Path) -> None:
    layout.Layout(tmp_path).state_file.write_text("{not json")

    with pytest.raises(local.ClusterError, match="cannot be read"):
        local.load(tmp_path)


def test_env_puts_the_project_tools_first_and_the_kubeconfig(tmp_path: pathlib.Path) -> None:
    env = _handle(tmp_path).env()

    assert env["KUBECONFIG"] == str(tmp_path / "kubeconfig")
    assert env["PATH"].split(":")[0].endswith("bin")
    assert pathlib.Path(env["PATH"].split(":")[0], "kubectl").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"nodes": 0}, "nodes"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"node_prefix": "a b"}, "node_prefix"),
        ({"service_cidr": "nope"}, "cidr"),
        ({"start_timeout_s": 0}, "start_timeout_s"),
        ({"runtime": "node-agent"}, "runtime"),
        ({"state_dir": pathlib.Path("/" + "s" * 80)}, "state directory"),
    ],
)
def test_bad_settings_name_the_field(
    tmp_path: pathlib.Path, overrides: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"name": "ok", "state_dir": tmp_path, **overrides}
    with pytest.raises(ValueError, match=field):
        local.Settings(**arguments)  # type: ignore[arg-type]


def test_images_load_only_into_a_real_node_and_only_from_archives_that_exist(
    tmp_path: pathlib.Path,
) -> None:
    control_plane_only = dataclasses.replace(_handle(tmp_path), runtime=local.NO_RUNTIME)
    with pytest.raises(local.ClusterError, match="has no node \\(runtime 'none'\\)"):
        local.load_images(control_plane_only, [tmp_path / "image.tar"])
    real = dataclasses.replace(control_plane_only, runtime=local.KUBELET_RUNTIME)
    with pytest.raises(local.ClusterError, match=r"not found: .*absent\.tar"):
        local.load_images(real, [tmp_path / "absent.tar"])


def _save(handle: local.Cluster) -> None:
    layout.Layout(handle.state_dir).state_file.write_text(json.dumps(handle.to_json()))


@pytest.mark.parametrize(
    ("component", "words"),
    [
        (node.KUBELET, "only etcd, kube-apiserver"),  # holds pods: not a drill's
        (components.SCHEDULER, "no such process recorded"),
    ],
)
def test_an_outage_drill_refuses_what_it_cannot_stop_and_start_alone(
    tmp_path: pathlib.Path, component: str, words: str
) -> None:
    _save(_handle(tmp_path))

    for step in (local.stop_component, local.start_component):
        with pytest.raises(local.ClusterError, match=words):
            step(tmp_path, component)


def test_a_component_still_running_is_not_started_twice(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "etcd.log"
    running = process.spawn(["/bin/sleep", "30"], log=log, env={})
    try:
        handle = _handle(tmp_path)
        _save(dataclasses.replace(handle, processes={components.ETCD: running}))

        with pytest.raises(local.ClusterError, match="is running"):
            local.start_component(tmp_path, components.ETCD)
        assert local.stop_component(tmp_path, components.ETCD, grace_s=5) in (
            process.Outcome.TERMINATED,
            process.Outcome.KILLED,
        )
        assert not process.running(running)
    finally:
        process.stop(running, grace_s=1)
