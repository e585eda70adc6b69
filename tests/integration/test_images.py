"""The kvscale and engine-twin images, built by scripts/build-images.sh and run with runc.

The module builds both images (`binaries.ensure_images()`, cached by content), unpacks each OCI
archive into a root filesystem (index.json, manifest, config, layers, OCI whiteouts) and runs
it with `runc` under a bundle written here: read-only root, a tmpfs on /tmp, the image's user,
environment and entry point, memory and pids limits. Nothing is mocked: the checks are what
the image does when it runs. Needs root (runc, mounts, cgroups). See docs/images.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support import oci
from tests.support.oci import Image, Runc

from kvscale.localstack import binaries

pytestmark = [pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
USER = "65532:65532"
SERVE_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
MB = 1_000_000


def _progress(line: str) -> None:
    print(f"[images] {line}", file=sys.stderr, flush=True)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> binaries.Images:
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (buildah, runc, mounts, cgroups)", pytrace=False)
    if shutil.which("runc") is None:
        pytest.fail("the image tests run the images with runc: install it (apt-get install runc)")
    started = time.monotonic()
    try:
        built = binaries.ensure_images()
    except binaries.BinariesError as exc:
        pytest.fail(f"the images cannot be built: {exc}", pytrace=False)
    _progress(f"ensure_images() took {time.monotonic() - started:.1f}s")
    for archive in built.archives:
        _progress(f"{archive.name}: {archive.stat().st_size / MB:.1f} MB")
    return built


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("kvscale-images")


def _unpack(name: str, archive: pathlib.Path, under: pathlib.Path) -> Image:
    started = time.monotonic()
    image = oci.unpack(name, archive, under / name / "rootfs")
    _progress(
        f"{name}: archive {archive.stat().st_size / MB:.1f} MB, unpacked root filesystem "
        f"{oci.tree_size(image.rootfs) / MB:.1f} MB (unpacked in {time.monotonic() - started:.1f}s)"
    )
    return image


@pytest.fixture(scope="module")
def kvscale_image(images: binaries.Images, unpacked: pathlib.Path) -> Image:
    return _unpack("kvscale", images.kvscale, unpacked)


@pytest.fixture(scope="module")
def twin_image(images: binaries.Images, unpacked: pathlib.Path) -> Image:
    return _unpack("engine-twin", images.engine_twin, unpacked)


@pytest.fixture(scope="module")
def runc(unpacked: pathlib.Path) -> Iterator[Runc]:
    handle = Runc(state=unpacked / "runc-state", bundles=unpacked / "bundles")
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture(scope="module")
def lock_pins() -> set[str]:
    """requirements/runtime.lock's pins plus kvscale itself, as canonical `name==version`."""
    return oci.lock_pins(ROOT / "requirements" / "runtime.lock") | {f"kvscale=={VERSION}"}


def _distributions(runc: Runc, image: Image) -> set[str]:
    return oci.distributions(runc, image, "/opt/kvscale/bin/python")


# --- the unpacker itself ----------------------------------------------------------------------


def _layer(entries: dict[str, bytes | None]) -> bytes:
    """A layer tar: a file per bytes value, a directory per None."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as layer:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                layer.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                layer.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_unpack_applies_layers_and_whiteouts(tmp_path: pathlib.Path) -> None:
    # The buildah images have no whiteouts (two layers, nothing deleted): a made-up archive
    # checks the unpacker's handling of them, of both layer media types and of the config.
    lower = _layer({"a": None, "a/keep": b"1", "a/gone": b"2", "b": None, "b/old": b"3"})
    upper = _layer({"a/.wh.gone": b"", "b/.wh..wh..opq": b"", "b/new": b"4", "c": b"5"})
    blobs: dict[str, bytes] = {}

    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    layers = [
        descriptor("application/vnd.oci.image.layer.v1.tar+gzip", gzip.compress(lower)),
        descriptor("application/vnd.oci.image.layer.v1.tar", upper),
    ]
    diff_ids = [f"sha256:{hashlib.sha256(tar).hexdigest()}" for tar in (lower, upper)]
    config = {"config": {"User": "1:2", "Entrypoint": ["x"]}, "rootfs": {"diff_ids": diff_ids}}
    manifest = {
        "schemaVersion": 2,
        "config": descriptor(
            "application/vnd.oci.image.config.v1+json", json.dumps(config).encode()
        ),
        "layers": layers,
    }
    manifest_descriptor = descriptor(
        "application/vnd.oci.image.manifest.v1+json", json.dumps(manifest).encode()
    )
    archive = tmp_path / "made.oci.tar"
    with tarfile.open(archive, "w") as out:
        files = {f"blobs/sha256/{digest}": data for digest, data in blobs.items()}
        files["index.json"] = json.dumps({"manifests": [manifest_descriptor]}).encode()
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))

    image = oci.unpack("made", archive, tmp_path / "rootfs")
    found = sorted(str(p.relative_to(image.rootfs)) for p in image.rootfs.rglob("*"))
    assert found == ["a", "a/keep", "b", "b/new", "c"]
    assert (image.rootfs / "b" / "new").read_bytes() == b"4"
    assert image.user == "1:2"
    assert image.entrypoint == ["x"]


# --- the kvscale image ---------------------------------------------------------------------------


def test_kvscale_image_config(kvscale_image: Image) -> None:
    assert kvscale_image.entrypoint == ["kvscale"]
    assert kvscale_image.cmd == ["--help"]
    assert kvscale_image.user == USER
    env = dict(item.partition("=")[::2] for item in kvscale_image.env)
    assert env["PATH"].startswith("/opt/kvscale/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["TMPDIR"] == "/tmp"
    assert env["HOME"] == "/tmp"
    labels = kvscale_image.labels
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "kvscale"


def test_kvscale_runs_as_its_user(runc: Runc, kvscale_image: Image) -> None:
    assert oci.ok(runc.run(kvscale_image, ["id", "-u"], entrypoint=False)).strip() == "65532"
    assert oci.ok(runc.run(kvscale_image, ["id", "-g"], entrypoint=False)).strip() == "65532"


def test_kvscale_version(runc: Runc, kvscale_image: Image) -> None:
    assert oci.ok(runc.run(kvscale_image, ["--version"])).strip() == f"kvscale {VERSION}"


def test_kvscale_default_command_and_components_start(runc: Runc, kvscale_image: Image) -> None:
    # The image's own Cmd (`--help`), then each component's parser: every import resolves on
    # a read-only root with no bytecode to write.
    assert "operator" in oci.ok(runc.run(kvscale_image))
    for component in ("operator", "sidecar", "twin"):
        assert "usage:" in oci.ok(runc.run(kvscale_image, [component, "--help"]))


def test_kvscale_root_is_read_only(runc: Runc, kvscale_image: Image) -> None:
    result = runc.run(kvscale_image, ["sh", "-c", "touch /x"], entrypoint=False)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    # /tmp (TMPDIR and HOME) is the writable place.
    script = "import tempfile; tempfile.NamedTemporaryFile().write(b'x'); print('ok')"
    assert oci.ok(runc.run(kvscale_image, ["python3", "-c", script], entrypoint=False)) == "ok\n"


def test_kvscale_packages_are_the_lock(
    runc: Runc, kvscale_image: Image, lock_pins: set[str]
) -> None:
    found = _distributions(runc, kvscale_image)
    assert found == lock_pins, (
        f"in the image, not pinned: {sorted(found - lock_pins)}; "
        f"pinned, not in the image: {sorted(lock_pins - found)}"
    )


# --- the engine-twin image -----------------------------------------------------------------------


def test_twin_image_config(twin_image: Image, kvscale_image: Image) -> None:
    assert twin_image.entrypoint == ["kvscale", "twin"]
    assert twin_image.cmd == []
    assert twin_image.user == USER
    assert twin_image.env == kvscale_image.env
    assert twin_image.labels["org.opencontainers.image.version"] == VERSION
    assert twin_image.labels["org.opencontainers.image.title"] == "kvscale-engine-twin"


def test_twin_runs_as_its_user(runc: Runc, twin_image: Image) -> None:
    assert oci.ok(runc.run(twin_image, ["id", "-u"], entrypoint=False)).strip() == "65532"


def test_twin_packages_are_the_lock(runc: Runc, twin_image: Image, lock_pins: set[str]) -> None:
    found = _distributions(runc, twin_image)
    assert found == lock_pins, (
        f"in the image, not pinned: {sorted(found - lock_pins)}; "
        f"pinned, not in the image: {sorted(lock_pins - found)}"
    )


def test_twin_serves_vllm_api(runc: Runc, twin_image: Image) -> None:
    port = oci.free_port()
    base = f"http://127.0.0.1:{port}"
    flags = [
        "--host", "127.0.0.1", "--port", str(port),
        "--model", "kvscale/tiny-llama", "--served-model-name", "tiny",
        "--num-gpu-blocks-override", "256", "--block-size", "16", "--max-model-len", "2048",
    ]  # fmt: skip
    with runc.serve(twin_image, twin_image.entrypoint + flags) as twin:
        took = twin.wait_healthy(f"{base}/health", SERVE_TIMEOUT_S)
        _progress(f"engine-twin answered /health {took:.1f}s after runc run")

        # The serving process: the image's user, on a read-only root, PID 1 of its namespace.
        status = pathlib.Path(f"/proc/{twin.pid}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uids) == {"65532"}
        nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
        assert nspid[-1] == "1"
        assert oci.cgroup_memory_limit(twin.pid) == oci.MEMORY_LIMIT

        status_code, body = oci.http(
            f"{base}/v1/completions", {"model": "tiny", "prompt": "hello", "max_tokens": 4}
        )
        assert status_code == 200
        completion = json.loads(body)
        assert completion["choices"], completion
        assert completion["choices"][0]["text"], completion
        assert completion["usage"]["completion_tokens"] == 4

        status_code, body = oci.http(f"{base}/metrics")
        assert status_code == 200
        metrics = body.decode()
        assert oci.metric(metrics, "vllm:num_requests_running") == 0
        assert oci.metric(metrics, "vllm:num_requests_waiting") == 0
        assert oci.metric(metrics, "vllm:generation_tokens_total") == 4
        assert 'model_name="tiny"' in metrics

        # SIGTERM (what the kubelet sends) stops it: the twin handles it as PID 1.
        code = twin.terminate(STOP_TIMEOUT_S)
        assert code == 0, f"the twin exited {code} on SIGTERM:\n{twin.log_tail()}"
