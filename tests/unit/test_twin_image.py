"""The node agent runs the engine-twin image as `kvscale twin` with the pod's (vLLM) args."""

from __future__ import annotations

import sys

from kvscale.localstack.nodeagent import images


def test_the_twin_image_runs_kvscale_twin_with_the_rendered_vllm_args() -> None:
    image = images.lookup("ghcr.io/kvscale/engine-twin:0.1.0")
    assert image is not None
    args = ["--model", "meta-llama/Meta-Llama-3-8B", "--host", "127.1.0.3", "--port", "8000"]
    argv = images.command_line(image.entrypoint(), image.default_args, None, args)
    assert argv == [sys.executable, "-m", "kvscale.cli", "twin", *args]
    assert image.environment() == {}  # no vLLM environment needed


def test_any_tag_or_digest_of_the_twin_image_is_the_same_recipe() -> None:
    assert images.lookup("ghcr.io/kvscale/engine-twin@sha256:" + "0" * 64) is not None
    assert images.lookup("ghcr.io/kvscale/engine-twin") is not None
