"""The kvscale and engine-twin images, built by scripts/build-images.sh and run with runc.

The module builds both images (`binaries.ensure_images()`, cached by content), unpacks each OCI
archive into a root filesystem (index.json, manifest, config, layers, OCI whiteouts) and runs
it with `runc` under a bundle written here: read-only root, a tmpfs on /tmp, the image's user,
environment and entry point, memory and pids limits. Nothing is mocked: the checks are what
the image does when it runs. Needs root (runc, mounts, cgroups). See docs/images.md.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any

import pytest
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families
from tests.support import wait

from kvscale.localstack import binaries

pytestmark = [pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
USER = "65532:65532"
RUN_TIMEOUT_S = 120.0  # generous: a busy 2-core machine; not a timing assertion
SERVE_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
MEMORY_LIMIT = 512 * 1024 * 1024
PIDS_LIMIT = 256
MB = 1_000_000

GZIP_LAYERS = {
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
TAR_LAYERS = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
}
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

# What every container lists: the image's distributions, one `name==version` a line.
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m; "
    "print('\\n'.join(sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())))"
)


def _progress(line: str) -> None:
    print(f"[images] {line}", file=sys.stderr, flush=True)


# --- OCI archive -> root filesystem -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Image:
    """An unpacked image: its root filesystem and the `config` part of its image config."""

    name: str
    archive: pathlib.Path
    rootfs: pathlib.Path
    config: dict[str, Any]

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def cmd(self) -> list[str]:
        return list(self.config.get("Cmd") or [])

    @property
    def user(self) -> str:
        return str(self.config.get("User", ""))

    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [])

    @property
    def workdir(self) -> str:
        return str(self.config.get("WorkingDir") or "/")

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})


def _blob(archive: tarfile.TarFile, digest: str) -> IO[bytes]:
    algorithm, _, hexdigest = digest.partition(":")
    assert algorithm == "sha256", f"unexpected digest {digest}"
    blob = archive.extractfile(f"blobs/sha256/{hexdigest}")
    assert blob is not None, f"blob {digest} is not a file in the archive"
    return blob


def _json_blob(archive: tarfile.TarFile, descriptor: dict[str, Any]) -> dict[str, Any]:
    data = _blob(archive, descriptor["digest"]).read()
    assert hashlib.sha256(data).hexdigest() == descriptor["digest"].partition(":")[2]
    document: dict[str, Any] = json.loads(data)
    return document


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _apply_whiteouts(layer: tarfile.TarFile, rootfs: pathlib.Path) -> list[tarfile.TarInfo]:
    """Delete what the layer's whiteouts hide in the layers below; return its other members.

    Whiteouts only hide lower layers' entries, so they are applied before the layer's own
    entries are extracted, whatever their order in the tar."""
    kept = []
    for member in layer.getmembers():
        parent, _, base = member.name.rstrip("/").rpartition("/")
        if base == OPAQUE:
            directory = rootfs / parent
            if directory.is_dir() and not directory.is_symlink():
                for child in directory.iterdir():
                    _remove(child)
        elif base.startswith(WHITEOUT):
            _remove(rootfs / parent / base[len(WHITEOUT) :])
        else:
            kept.append(member)
    return kept


def unpack(name: str, archive_path: pathlib.Path, rootfs: pathlib.Path) -> Image:
    """The image of an OCI archive (one manifest), its layers extracted in order into rootfs."""
    rootfs.mkdir(parents=True)
    scratch = rootfs.with_name(rootfs.name + ".layer.tar")
    with tarfile.open(archive_path) as archive:
        index = json.load(_member(archive, "index.json"))
        manifests = index["manifests"]
        assert len(manifests) == 1, f"{archive_path}: expected one manifest, got {manifests}"
        manifest = _json_blob(archive, manifests[0])
        image_config = _json_blob(archive, manifest["config"])
        diff_ids = image_config["rootfs"]["diff_ids"]
        assert len(diff_ids) == len(manifest["layers"])
        for descriptor, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            media_type = descriptor["mediaType"]
            blob = _blob(archive, descriptor["digest"])
            if media_type in GZIP_LAYERS:
                source: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=blob)
            elif media_type in TAR_LAYERS:
                source = blob
            else:
                pytest.fail(f"{archive_path}: layer media type {media_type} is not handled")
            # Uncompressed to a file first: the tar is read twice (whiteouts, then the rest),
            # and its digest must be the config's diff_id.
            digest = hashlib.sha256()
            with scratch.open("wb") as out:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            assert f"sha256:{digest.hexdigest()}" == diff_id, f"layer {descriptor['digest']}"
            with tarfile.open(scratch) as layer:
                members = _apply_whiteouts(layer, rootfs)
                # Our own image, extracted as root: owners, modes and absolute symlinks as the
                # image has them (the "data" and "tar" filters would change or refuse them).
                layer.extractall(
                    rootfs, members=members, numeric_owner=True, filter="fully_trusted"
                )
            scratch.unlink()
    return Image(name=name, archive=archive_path, rootfs=rootfs, config=image_config["config"])


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    member = archive.extractfile(name)
    assert member is not None, f"{name} is not a file in the archive"
    return member


def _tree_size(root: pathlib.Path) -> int:
    """Bytes of the regular files under root, each hard-linked file once."""
    seen: set[int] = set()
    total = 0
    for directory, _, files in os.walk(root):
        for file in files:
            info = os.lstat(os.path.join(directory, file))
            if info.st_ino not in seen and stat.S_ISREG(info.st_mode):
                seen.add(info.st_ino)
                total += info.st_size
    return total


# --- runc ----------------------------------------------------------------------------------------


def _user(image: Image) -> dict[str, int]:
    uid, _, gid = image.user.partition(":")
    assert uid.isdigit(), f"User {image.user!r} is not numeric uid:gid"
    assert gid.isdigit(), f"User {image.user!r} is not numeric uid:gid"
    return {"uid": int(uid), "gid": int(gid)}


def bundle_config(
    image: Image, args: Sequence[str], cid: str, *, host_network: bool = False
) -> dict[str, Any]:
    """A runc config.json: the image's user, env and working directory, read-only root, a
    tmpfs on /tmp, no capabilities, memory and pids limits. `host_network` leaves the network
    namespace out, so the container shares the host's (its loopback included)."""
    namespaces = ["pid", "ipc", "uts", "mount"] + ([] if host_network else ["network"])
    sysfs_options = ["nosuid", "noexec", "nodev", "ro"]
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": _user(image),
            "args": list(args),
            "env": image.env,
            "cwd": image.workdir,
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(image.rootfs), "readonly": True},
        "hostname": cid[:63],
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sysfs_options},
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=65536k"],
            },
        ],
        "linux": {
            "cgroupsPath": f"/{cid}",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": MEMORY_LIMIT},
                "pids": {"limit": PIDS_LIMIT},
            },
            "namespaces": [{"type": kind} for kind in namespaces],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


@dataclasses.dataclass
class Runc:
    """runc with its own state directory; every container it made is deleted by `cleanup`."""

    state: pathlib.Path
    bundles: pathlib.Path
    made: list[str] = dataclasses.field(default_factory=list)

    def command(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state), *args]

    def bundle(self, image: Image, args: Sequence[str], *, host_network: bool = False) -> str:
        cid = f"kvscale-images-{image.name}-{uuid.uuid4().hex[:8]}"
        bundle = self.bundles / cid
        bundle.mkdir(parents=True)
        config = bundle_config(image, args, cid, host_network=host_network)
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        self.made.append(cid)
        return cid

    def run(
        self, image: Image, args: Sequence[str] | None = None, *, entrypoint: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion: Entrypoint + args (the image's Cmd when args is None), or args
        alone with `entrypoint=False` (as `docker run --entrypoint`)."""
        argv = (image.entrypoint if entrypoint else []) + list(image.cmd if args is None else args)
        cid = self.bundle(image, argv)
        try:
            return subprocess.run(
                self.command("run", "--bundle", str(self.bundles / cid), cid),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        finally:
            self.delete(cid)

    def delete(self, cid: str) -> None:
        subprocess.run(self.command("delete", "--force", cid), capture_output=True, check=False)

    def exists(self, cid: str) -> bool:
        listed = subprocess.run(
            self.command("list", "--format", "json"), capture_output=True, text=True, check=True
        ).stdout
        return any(c["id"] == cid for c in json.loads(listed or "null") or [])

    def state_of(self, cid: str) -> dict[str, Any]:
        out = subprocess.run(
            self.command("state", cid), capture_output=True, text=True, check=True
        ).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def cleanup(self) -> None:
        for cid in self.made:
            self.delete(cid)
        left = [cid for cid in self.made if self.exists(cid)]
        assert not left, f"runc containers left behind: {left}"


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


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
    image = unpack(name, archive, under / name / "rootfs")
    _progress(
        f"{name}: archive {archive.stat().st_size / MB:.1f} MB, unpacked root filesystem "
        f"{_tree_size(image.rootfs) / MB:.1f} MB (unpacked in {time.monotonic() - started:.1f}s)"
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
    pins = {f"kvscale=={VERSION}"}
    for line in (ROOT / "requirements" / "runtime.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"runtime.lock: {line!r} is not name==version"
            pins.add(f"{canonicalize_name(name)}=={version.strip()}")
    return pins


def _distributions(runc: Runc, image: Image) -> set[str]:
    out = _ok(
        runc.run(image, ["/opt/kvscale/bin/python", "-c", LIST_DISTRIBUTIONS], entrypoint=False)
    )
    found = set()
    for line in out.splitlines():
        name, _, version = line.partition("==")
        found.add(f"{canonicalize_name(name)}=={version}")
    return found


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

    image = unpack("made", archive, tmp_path / "rootfs")
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
    assert _ok(runc.run(kvscale_image, ["id", "-u"], entrypoint=False)).strip() == "65532"
    assert _ok(runc.run(kvscale_image, ["id", "-g"], entrypoint=False)).strip() == "65532"


def test_kvscale_version(runc: Runc, kvscale_image: Image) -> None:
    assert _ok(runc.run(kvscale_image, ["--version"])).strip() == f"kvscale {VERSION}"


def test_kvscale_default_command_and_components_start(runc: Runc, kvscale_image: Image) -> None:
    # The image's own Cmd (`--help`), then each component's parser: every import resolves on
    # a read-only root with no bytecode to write.
    assert "operator" in _ok(runc.run(kvscale_image))
    for component in ("operator", "sidecar", "twin"):
        assert "usage:" in _ok(runc.run(kvscale_image, [component, "--help"]))


def test_kvscale_root_is_read_only(runc: Runc, kvscale_image: Image) -> None:
    result = runc.run(kvscale_image, ["sh", "-c", "touch /x"], entrypoint=False)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    # /tmp (TMPDIR and HOME) is the writable place.
    script = "import tempfile; tempfile.NamedTemporaryFile().write(b'x'); print('ok')"
    assert _ok(runc.run(kvscale_image, ["python3", "-c", script], entrypoint=False)) == "ok\n"


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
    assert _ok(runc.run(twin_image, ["id", "-u"], entrypoint=False)).strip() == "65532"


def test_twin_packages_are_the_lock(runc: Runc, twin_image: Image, lock_pins: set[str]) -> None:
    found = _distributions(runc, twin_image)
    assert found == lock_pins, (
        f"in the image, not pinned: {sorted(found - lock_pins)}; "
        f"pinned, not in the image: {sorted(lock_pins - found)}"
    )


def _memory_limit(pid: int) -> int:
    """The memory limit of the cgroup that pid is in (cgroup v1 or v2)."""
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return int(
                (pathlib.Path("/sys/fs/cgroup/memory" + path) / "memory.limit_in_bytes").read_text()
            )
        if controllers == "" and (pathlib.Path("/sys/fs/cgroup" + path) / "memory.max").exists():
            return int((pathlib.Path("/sys/fs/cgroup" + path) / "memory.max").read_text())
    raise AssertionError(f"no memory cgroup for pid {pid}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status), response.read()


def _metric(text: str, name: str) -> float:
    """The value of a sample (summed over its labels) in a Prometheus exposition."""
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    assert values, f"{name} is not in /metrics"
    return sum(values)


def test_twin_serves_vllm_api(runc: Runc, twin_image: Image, unpacked: pathlib.Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    flags = [
        "--host", "127.0.0.1", "--port", str(port),
        "--model", "kvscale/tiny-llama", "--served-model-name", "tiny",
        "--num-gpu-blocks-override", "256", "--block-size", "16", "--max-model-len", "2048",
    ]  # fmt: skip
    cid = runc.bundle(twin_image, twin_image.entrypoint + flags, host_network=True)
    log = unpacked / f"{cid}.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            runc.command("run", "--bundle", str(runc.bundles / cid), cid),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()

        def healthy() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"the twin exited {server.returncode}:\n{log.read_text()}")
            return _http(f"{base}/health")[0] == 200

        wait.eventually(
            healthy, "the twin's /health", timeout_s=SERVE_TIMEOUT_S, retry_on=(OSError,)
        )
        _progress(f"engine-twin answered /health {time.monotonic() - started:.1f}s after runc run")

        # The serving process: the image's user, on a read-only root, PID 1 of its namespace.
        pid = runc.state_of(cid)["pid"]
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uids) == {"65532"}
        nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
        assert nspid[-1] == "1"
        assert _memory_limit(pid) == MEMORY_LIMIT

        status_code, body = _http(
            f"{base}/v1/completions", {"model": "tiny", "prompt": "hello", "max_tokens": 4}
        )
        assert status_code == 200
        completion = json.loads(body)
        assert completion["choices"], completion
        assert completion["choices"][0]["text"], completion
        assert completion["usage"]["completion_tokens"] == 4

        status_code, body = _http(f"{base}/metrics")
        assert status_code == 200
        metrics = body.decode()
        assert _metric(metrics, "vllm:num_requests_running") == 0
        assert _metric(metrics, "vllm:num_requests_waiting") == 0
        assert _metric(metrics, "vllm:generation_tokens_total") == 4
        assert 'model_name="tiny"' in metrics

        # SIGTERM (what the kubelet sends) stops it: the twin handles it as PID 1.
        subprocess.run(runc.command("kill", cid, "TERM"), check=True, capture_output=True)
        try:
            code = server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the twin did not stop within {STOP_TIMEOUT_S:g}s of SIGTERM")
        assert code == 0, f"the twin exited {code} on SIGTERM:\n{log.read_text()}"
    finally:
        if server.poll() is None:
            subprocess.run(runc.command("kill", cid, "KILL"), capture_output=True, check=False)
            try:
                server.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(server.pid, signal.SIGKILL)
                server.wait()
        runc.delete(cid)
