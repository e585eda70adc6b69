"""Images map to local commands through one table, with Kubernetes' command/args rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kvscale.localstack.nodeagent import images


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("vllm/vllm-openai:v0.32.0", "docker.io/vllm/vllm-openai"),
        ("vllm/vllm-openai", "docker.io/vllm/vllm-openai"),
        ("docker.io/vllm/vllm-openai:latest", "docker.io/vllm/vllm-openai"),
        ("vllm/vllm-openai@sha256:" + "a" * 64, "docker.io/vllm/vllm-openai"),
        ("vllm/vllm-openai:v1@sha256:" + "b" * 64, "docker.io/vllm/vllm-openai"),
        ("nginx:1.27", "docker.io/library/nginx"),
        ("docker.io/library/nginx", "docker.io/library/nginx"),
        ("ghcr.io/kvscale/kvscale:0.1.0", "ghcr.io/kvscale/kvscale"),
        ("localhost:5000/team/app:v2", "localhost:5000/team/app"),
        ("registry.example:5000/app", "registry.example:5000/app"),
        ("kvscale.local/testbox:latest", "kvscale.local/testbox"),
        ("GHCR.IO/KVSCALE/KVSCALE:0.1.0", "ghcr.io/kvscale/kvscale"),
    ],
)
def test_repository(reference: str, repository: str) -> None:
    assert images.repository(reference) == repository


@pytest.mark.parametrize(
    ("reference", "found"),
    [
        ("vllm/vllm-openai:v0.32.0", "docker.io/vllm/vllm-openai"),
        ("ghcr.io/kvscale/kvscale:0.1.0", "ghcr.io/kvscale/kvscale"),
        ("kvscale.local/testbox:any", "kvscale.local/testbox"),
        ("nginx:1.27", None),
        ("ghcr.io/kvscale/other:0.1.0", None),
        ("vllm/vllm-openai-rocm:v0.32.0", None),
    ],
)
def test_lookup(reference: str, found: str | None) -> None:
    row = images.lookup(reference)
    assert (row.repository if row else None) == found


def test_the_project_images_run_with_the_agents_python() -> None:
    kvscale = images.lookup("ghcr.io/kvscale/kvscale:0.1.0")
    testbox = images.lookup("kvscale.local/testbox:1")
    assert kvscale is not None
    assert testbox is not None
    assert kvscale.entrypoint() == (sys.executable, "-m", "kvscale.cli")
    assert testbox.entrypoint() == (sys.executable, "-m", "kvscale.localstack.nodeagent.testbox")
    assert kvscale.bin_dirs() == (str(Path(sys.executable).parent),)
    assert kvscale.environment() == {}


def test_a_missing_vllm_environment_is_reported_as_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Point the engine environment at an empty cache: the image is known, but not built here.
    monkeypatch.setenv("KVSCALE_CACHE", str(tmp_path))
    vllm = images.lookup("vllm/vllm-openai:v0.32.0")
    assert vllm is not None
    with pytest.raises(images.ImageUnavailableError, match="vLLM environment"):
        vllm.entrypoint()


ENTRYPOINT = ("python", "-m", "server")
DEFAULT_ARGS = ("--default",)


@pytest.mark.parametrize(
    ("command", "args", "argv"),
    [
        (None, None, ["python", "-m", "server", "--default"]),
        (None, ["--port", "1"], ["python", "-m", "server", "--port", "1"]),
        (["sh", "-c", "true"], None, ["sh", "-c", "true"]),
        (["sh", "-c"], ["echo hi"], ["sh", "-c", "echo hi"]),
        ([], [], ["python", "-m", "server", "--default"]),
        ([], ["--x"], ["python", "-m", "server", "--x"]),
    ],
)
def test_command_line(command: list[str] | None, args: list[str] | None, argv: list[str]) -> None:
    assert images.command_line(ENTRYPOINT, DEFAULT_ARGS, command, args) == argv
