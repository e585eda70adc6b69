"""The Containerfile's invariants: a non-root numeric user, a BASE_IMAGE argument, the runtime
lock only (no dev or extra dependencies), a read-only-root-friendly environment, and a runtime
lock that pins exactly the package's base dependencies as the dev lock installed them."""

from __future__ import annotations

import pathlib
import re
import shlex
import tomllib

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


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


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
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "the image is built in a builder stage and copied into a clean one"
    assert all(stage.split()[0] == "${BASE_IMAGE}" for stage in stages)


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = [arguments for keyword, arguments in _final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    user, _, group = users[-1].partition(":")
    assert user.isdigit()
    assert int(user) != 0
    assert group == "" or (group.isdigit() and int(group) != 0)


def test_the_runtime_writes_no_bytecode_and_keeps_temporary_files_in_tmp() -> None:
    env = " ".join(arguments for keyword, arguments in _final_stage() if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "TMPDIR=/tmp" in env
    assert "HOME=/tmp" in env


def test_the_image_carries_a_version_label() -> None:
    labels = " ".join(arguments for keyword, arguments in _final_stage() if keyword == "LABEL")
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
