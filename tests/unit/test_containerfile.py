"""The Containerfile's invariants: a non-root numeric user, a BASE_IMAGE argument, the runtime
lock only (no dev or extra dependencies), a read-only-root-friendly environment, and a runtime
lock that pins exactly the package's base dependencies as the dev lock installed them."""

from __future__ import annotations

import pathlib
import re
import shlex
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kvscale.api import models

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Containerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Containerfile ends inside a continued line"
    result = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def _stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Stage name -> (what it starts FROM, its instructions after FROM), in file order."""
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in _instructions():
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = []
            stages[name] = (words[0], current)
        elif current is not None:
            current.append((keyword, arguments))
    return stages


def _image(target: str | None = None) -> list[tuple[str, str]]:
    """What one target's image is made of: its stage's instructions after those of the stages
    it is built FROM (the default target is the last stage, as `docker build` picks)."""
    stages = _stages()
    name = target or list(stages)[-1]
    parent, instructions = stages[name]
    inherited = _image(parent) if parent in stages else []
    return inherited + instructions


# The images users deploy: the default target (the kvscale image) and the engine twin.
TARGETS = (None, "engine-twin")


def _lock(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not an exact pin"
            pins[canonicalize_name(package)] = version
    return pins


def test_base_image_is_an_argument_declared_before_the_first_stage() -> None:
    instructions = _instructions()
    assert instructions[0][0] == "ARG"
    assert instructions[0][1].startswith("BASE_IMAGE=")
    stages = _stages()
    assert len(stages) >= 2, "the image is built in a builder stage and copied into a clean one"
    # Every stage starts from the base or from an earlier stage, never from another image.
    for name, (parent, _) in stages.items():
        earlier = list(stages)[: list(stages).index(name)]
        assert parent == "${BASE_IMAGE}" or parent in earlier, f"stage {name} FROM {parent}"
    assert set(TARGETS[1:]) <= stages.keys()


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_has_its_own_entry_point(target: str | None) -> None:
    entrypoints = [arguments for keyword, arguments in _image(target) if keyword == "ENTRYPOINT"]
    assert entrypoints, f"{target or 'default'}: no ENTRYPOINT"
    expected = '["kvscale", "twin"]' if target == "engine-twin" else '["kvscale"]'
    assert entrypoints[-1] == expected


@pytest.mark.parametrize("target", TARGETS)
def test_the_images_run_as_a_numeric_non_root_user(target: str | None) -> None:
    users = [arguments for keyword, arguments in _image(target) if keyword == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    user, _, group = users[-1].partition(":")
    assert user.isdigit()
    assert int(user) != 0
    assert group == "" or (group.isdigit() and int(group) != 0)


@pytest.mark.parametrize("target", TARGETS)
def test_the_runtime_writes_no_bytecode_and_keeps_temporary_files_in_tmp(
    target: str | None,
) -> None:
    env = " ".join(arguments for keyword, arguments in _image(target) if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "TMPDIR=/tmp" in env
    assert "HOME=/tmp" in env


@pytest.mark.parametrize("target", TARGETS)
def test_the_image_carries_a_version_label(target: str | None) -> None:
    labels = " ".join(arguments for keyword, arguments in _image(target) if keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_only_the_runtime_lock_is_installed_and_without_a_resolver() -> None:
    runs = [arguments for keyword, arguments in _instructions() if keyword == "RUN"]
    installs = [
        shlex.split(command)
        for run in runs
        for command in run.split("&&")
        if " install " in f" {command} "
    ]
    assert installs
    for words in installs:
        assert "--no-deps" in words, f"pip may resolve more than the lock: {words}"
        assert not any("[" in word for word in words), f"an extra is installed: {words}"
        assert not any(re.search(r"dev\.lock|requirements\.txt", word) for word in words)
    copied = " ".join(arguments for keyword, arguments in _instructions() if keyword == "COPY")
    assert "requirements/runtime.lock" in copied
    assert "dev.lock" not in copied


def test_runtime_lock_pins_the_base_dependencies_and_nothing_of_the_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _lock("runtime.lock")
    dev = _lock("dev.lock")
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in runtime, f"runtime.lock misses the base dependency {name}"
        assert requirement.specifier.contains(runtime[name]), f"{name}=={runtime[name]}"
    # The same pins as the dev lock: one resolution, two views of it.
    assert {name: dev.get(name) for name in runtime} == runtime
    extras = {
        canonicalize_name(Requirement(text).name)
        for name, texts in project["optional-dependencies"].items()
        for text in texts
        if not text.startswith("kvscale")
    }
    assert not extras & runtime.keys(), f"extras in the runtime lock: {extras & runtime.keys()}"


def test_default_images_name_the_built_image_at_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"ghcr.io/kvscale/kvscale:{version}" == models.DEFAULT_SIDECAR_IMAGE
    chart = yaml.safe_load((ROOT / "charts" / "kvscale" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "kvscale" / "values.yaml").read_text())
    # The chart's empty tag means its appVersion, which must be the package's version.
    assert chart["appVersion"] == version
    repository = values["image"]["repository"]
    tag = values["image"]["tag"] or chart["appVersion"]
    assert f"{repository}:{tag}" == models.DEFAULT_SIDECAR_IMAGE
