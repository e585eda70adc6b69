"""Container images mapped to local commands: the one explicit table. Pure lookups.

There is no container runtime here, so an image is a recipe for a local process: an entrypoint
(what the image's ENTRYPOINT would be), default args (its CMD), the directories that go first on
PATH (so `command: [python, ...]` finds the image's interpreter) and extra environment (the
image's ENV). A pod's `command` replaces the entrypoint and drops the default args; its `args`
replace the default args; that is Kubernetes' rule for images.

Entrypoints, bin directories and environments are callables, so a table entry costs nothing
until a container with that image starts: the vLLM entry imports `engine_env` only then, and
the agent runs every other image on machines without the vLLM environment. A callable raises
`ImageUnavailableError` when its local environment is missing; the agent reports that like a failed
pull (`ErrImagePull`), as it does for an image not in the table.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_DEFAULT_REGISTRY = "docker.io"


class ImageUnavailableError(Exception):
    """The image is in the table but its local environment is not there (not built)."""


def _nothing() -> Mapping[str, str]:
    return {}


def _project_python() -> tuple[str, ...]:
    return (sys.executable,)


def _project_bin() -> tuple[str, ...]:
    return (str(Path(sys.executable).parent),)


@dataclasses.dataclass(frozen=True)
class Image:
    """One row of the table: a repository (any tag or digest) and the local process it runs."""

    repository: str
    description: str
    entrypoint: Callable[[], tuple[str, ...]]
    default_args: tuple[str, ...] = ()
    bin_dirs: Callable[[], tuple[str, ...]] = _project_bin
    environment: Callable[[], Mapping[str, str]] = _nothing


def _vllm_entrypoint() -> tuple[str, ...]:
    return (str(_vllm_python()), "-m", "vllm.entrypoints.openai.api_server")


def _vllm_bin() -> tuple[str, ...]:
    return (str(_vllm_python().parent),)


def _vllm_python() -> Path:
    from kvscale.localstack import engine_env

    try:
        return engine_env.vllm_python()
    except Exception as error:
        raise ImageUnavailableError(
            f"the local vLLM environment is not available: {error}"
        ) from error


def _vllm_environment() -> Mapping[str, str]:
    from kvscale.localstack import engine_env

    try:
        return engine_env.engine_environment()
    except Exception as error:
        raise ImageUnavailableError(
            f"the local vLLM environment is not available: {error}"
        ) from error


def _module(name: str, *args: str) -> Callable[[], tuple[str, ...]]:
    def entrypoint() -> tuple[str, ...]:
        return (*_project_python(), "-m", name, *args)

    return entrypoint


def repository(reference: str) -> str:
    """An image reference's repository in canonical form: tag and digest dropped, Docker Hub's
    implicit registry and `library/` made explicit (`nginx:1` -> `docker.io/library/nginx`)."""
    name = reference.strip().split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    parts = name.split("/")
    first = parts[0]
    has_registry = len(parts) > 1 and ("." in first or ":" in first or first == "localhost")
    if not has_registry:
        parts = [_DEFAULT_REGISTRY, *parts]
    if parts[0] == _DEFAULT_REGISTRY and len(parts) == 2:
        parts = [_DEFAULT_REGISTRY, "library", parts[1]]
    return "/".join(parts).lower()


TABLE: tuple[Image, ...] = (
    Image(
        repository=repository("vllm/vllm-openai"),
        description="vLLM's OpenAI-compatible server, from the cached vLLM CPU environment",
        entrypoint=_vllm_entrypoint,
        bin_dirs=_vllm_bin,
        environment=_vllm_environment,
    ),
    Image(
        repository=repository("ghcr.io/kvscale/kvscale"),
        description="the kvscale command (operator, sidecar), from the project's environment",
        entrypoint=_module("kvscale.cli"),
    ),
    Image(
        repository=repository("ghcr.io/kvscale/engine-twin"),
        description="the engine twin (`kvscale twin`), run from the args rendered for vLLM",
        # ENTRYPOINT ["kvscale", "twin"]: the pod's args are the vLLM flags, as for vLLM.
        entrypoint=_module("kvscale.cli", "twin"),
    ),
    Image(
        repository=repository("kvscale.local/testbox"),
        description="a tiny HTTP server whose behaviour tests choose with flags",
        entrypoint=_module("kvscale.localstack.nodeagent.testbox"),
    ),
)


def lookup(reference: str, table: Sequence[Image] = TABLE) -> Image | None:
    """The table's row for an image reference, or None when the image is not known here."""
    wanted = repository(reference)
    for image in table:
        if image.repository == wanted:
            return image
    return None


def command_line(
    entrypoint: Sequence[str],
    default_args: Sequence[str],
    command: Sequence[str] | None,
    args: Sequence[str] | None,
) -> list[str]:
    """The process's argv by Kubernetes' rule: `command` replaces the entrypoint and drops the
    image's default args; `args` replace the default args. An empty list counts as unset, as in
    the container runtimes."""
    if command:
        return [*command, *(args or ())]
    return [*entrypoint, *(args or default_args)]
