"""Removing the real node's cgroups while runc removes its containers' cgroups under our feet.

CI once failed in a teardown: killing the pods set off runc deleting a container's cgroup while
the teardown walked the tree, and the walk raised FileNotFoundError. These tests stand in a
temporary directory for one cgroup hierarchy and make directories vanish mid-walk the same way.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from kvscale.localstack import namespace, node


def _tree(root: pathlib.Path) -> dict[str, pathlib.Path]:
    dirs = {
        "pod": root / "kubepods" / "burstable" / "pod1",
        "ctr_a": root / "kubepods" / "burstable" / "pod1" / "a",
        "ctr_b": root / "kubepods" / "burstable" / "pod1" / "b",
    }
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    (dirs["ctr_a"] / "cgroup.procs").write_text("101\n102\n")
    (dirs["ctr_b"] / "cgroup.procs").write_text("103\n")
    (dirs["pod"] / "cgroup.procs").write_text("")
    return dirs


def _plan(tmp_path: pathlib.Path) -> node.Plan:
    return node.Plan(
        cluster="teardown-test",
        root=tmp_path / "state" / "node",
        addresses=node.Addresses.for_port(6443),
        service_cidr="10.96.0.0/16",
        apiserver_port=6443,
        node_name="local-node-0",
        gpus=0,
    )


def _node_cgroups(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[node.Plan, pathlib.Path, dict[str, pathlib.Path]]:
    """A node's plan, its cgroup in one stand-in hierarchy (the only one `hierarchies` lists),
    and the pod and container cgroups made below it."""
    hierarchy = tmp_path / "unified"
    plan = _plan(tmp_path)
    group = hierarchy / plan.cgroup_root.lstrip("/")
    monkeypatch.setattr(namespace, "hierarchies", lambda: [hierarchy])
    return plan, group, _tree(group)


def _vanishing(victim: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `victim` disappear just before the walk lists it, as runc's delete would."""
    real_scandir = os.scandir

    def scandir(path: Any) -> Iterator[os.DirEntry[str]]:
        if pathlib.Path(path) == victim and victim.exists():
            for child in victim.iterdir():
                child.unlink()
            victim.rmdir()
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_the_tree_lists_children_before_parents(tmp_path: pathlib.Path) -> None:
    dirs = _tree(tmp_path / "node")
    order = namespace._cgroup_tree(tmp_path / "node")
    assert order[-1] == tmp_path / "node"
    assert order.index(dirs["ctr_a"]) < order.index(dirs["pod"])
    assert order.index(dirs["ctr_b"]) < order.index(dirs["pod"])
    assert set(order) == {tmp_path / "node"} | {
        p for p in (tmp_path / "node").rglob("*") if p.is_dir()
    }
    assert len(order) == 6  # node, kubepods, burstable, pod1, a, b: each once


def test_pids_are_read_from_every_cgroup_and_a_vanished_one_is_skipped(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = _tree(tmp_path / "node")
    assert sorted(namespace._pids(tmp_path / "node")) == [101, 102, 103]
    _vanishing(dirs["ctr_a"], monkeypatch)
    assert sorted(namespace._pids(tmp_path / "node")) == [103]


def test_removal_goes_bottom_up_and_a_cgroup_runc_removed_first_is_not_a_problem(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, group, dirs = _node_cgroups(tmp_path, monkeypatch)
    for directory in dirs.values():
        (directory / "cgroup.procs").unlink()  # a real cgroup's files go with its rmdir
    _vanishing(dirs["ctr_b"], monkeypatch)
    assert namespace._remove_cgroups(plan) == []
    assert not group.exists()


def test_a_cgroup_that_cannot_go_is_named(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, group, dirs = _node_cgroups(tmp_path, monkeypatch)
    (dirs["ctr_b"] / "cgroup.procs").unlink()
    left = namespace._remove_cgroups(plan)
    # ctr_a still holds a file (a live process, on a real cgroup): it and its ancestors stay.
    assert any(entry.startswith(f"{dirs['ctr_a']}:") for entry in left)
    assert not dirs["ctr_b"].exists()
    assert group.exists()
