"""OCI images as tests meet them: unpack an OCI archive into a root filesystem and run it with
runc under a bundle written here (read-only root, a tmpfs on /tmp, the image's user, environment
and entry point, memory and pids limits). Used by the image tests (test_images.py for the kvscale
and engine-twin images, test_engine_image.py for the vLLM engine image). Needs root to run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any

import pytest
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families
from tests.support import wait

RUN_TIMEOUT_S = 120.0  # generous: a busy 2-core machine; not a timing assertion
MEMORY_LIMIT = 512 * 1024 * 1024
PIDS_LIMIT = 256

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


def tree_size(root: pathlib.Path) -> int:
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


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a container may use, and what it sees besides the image."""

    memory: int = MEMORY_LIMIT
    pids: int = PIDS_LIMIT
    tmp_size: str = "65536k"
    """The size of the tmpfs on /tmp (and of /dev/shm)."""
    binds: tuple[tuple[pathlib.Path, str], ...] = ()
    """Host directories bind-mounted read-only at the given paths (a hostPath volume)."""
    env: tuple[str, ...] = ()
    """`NAME=value` entries added after the image's own (a pod's env)."""


def bundle_config(
    image: Image,
    args: Sequence[str],
    cid: str,
    *,
    host_network: bool = False,
    limits: Limits = Limits(),
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
            "env": image.env + list(limits.env),
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
                "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={limits.tmp_size}"],
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
                "options": ["nosuid", "nodev", "mode=1777", f"size={limits.tmp_size}"],
            },
            *(
                {
                    "destination": target,
                    "type": "bind",
                    "source": str(source),
                    "options": ["rbind", "ro", "nosuid", "nodev"],
                }
                for source, target in limits.binds
            ),
        ],
        "linux": {
            "cgroupsPath": f"/{cid}",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": limits.memory},
                "pids": {"limit": limits.pids},
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

    def bundle(
        self,
        image: Image,
        args: Sequence[str],
        *,
        host_network: bool = False,
        limits: Limits = Limits(),
    ) -> str:
        cid = f"kvscale-images-{image.name}-{uuid.uuid4().hex[:8]}"
        bundle = self.bundles / cid
        bundle.mkdir(parents=True)
        config = bundle_config(image, args, cid, host_network=host_network, limits=limits)
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

    @contextlib.contextmanager
    def serve(
        self, image: Image, args: Sequence[str], *, limits: Limits = Limits()
    ) -> Iterator[Served]:
        """Start a server container in the host's network namespace (`args` include the entry
        point); whatever the test does, it is killed and deleted at the end."""
        cid = self.bundle(image, args, host_network=True, limits=limits)
        log = self.bundles / f"{cid}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                self.command("run", "--bundle", str(self.bundles / cid), cid),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        served = Served(runc=self, cid=cid, process=process, log=log)
        try:
            yield served
        finally:
            if process.poll() is None:
                subprocess.run(self.command("kill", cid, "KILL"), capture_output=True, check=False)
                try:
                    process.wait(timeout=RUN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
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


@dataclasses.dataclass
class Served:
    """A server container `Runc.serve` started: its id, its `runc run` process and its log."""

    runc: Runc
    cid: str
    process: subprocess.Popen[bytes]
    log: pathlib.Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_healthy(self, url: str, timeout_s: float) -> float:
        """Seconds until `url` answered 200; fails at once, with the log, if the server exits."""
        started = time.monotonic()

        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.log_tail()}")
            return http(url)[0] == 200

        wait.eventually(healthy, url, timeout_s=timeout_s, retry_on=(OSError,))
        return time.monotonic() - started

    @property
    def pid(self) -> int:
        """The server's host pid (PID 1 of its namespace)."""
        return int(self.runc.state_of(self.cid)["pid"])

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, as the kubelet sends it; the exit status (fails if it does not stop)."""
        subprocess.run(self.runc.command("kill", self.cid, "TERM"), check=True, capture_output=True)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.cid} did not stop within {timeout_s:g}s of SIGTERM")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def cgroup_memory_limit(pid: int) -> int:
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


def cgroup_memory_peak(pid: int) -> int | None:
    """The most memory the cgroup that pid is in has used, in bytes; None where the kernel does
    not keep it (cgroup v2 before Linux 5.19)."""
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            peak = pathlib.Path("/sys/fs/cgroup/memory" + path) / "memory.max_usage_in_bytes"
            return int(peak.read_text())
        if controllers == "" and (pathlib.Path("/sys/fs/cgroup" + path) / "memory.peak").exists():
            return int((pathlib.Path("/sys/fs/cgroup" + path) / "memory.peak").read_text())
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status), response.read()


def metric(text: str, name: str) -> float:
    """The value of a sample (summed over its labels) in a Prometheus exposition."""
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    assert values, f"{name} is not in /metrics"
    return sum(values)


def lock_pins(lock: pathlib.Path) -> set[str]:
    """A lock file's pins (`name==version` lines, `#` comments) as canonical `name==version`."""
    pins = set()
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{lock.name}: {line!r} is not name==version"
            pins.add(f"{canonicalize_name(name)}=={version.strip()}")
    return pins


def distributions(runc: Runc, image: Image, python: str) -> set[str]:
    """The distributions `python` in the image has installed, as canonical `name==version`."""
    out = ok(runc.run(image, [python, "-c", LIST_DISTRIBUTIONS], entrypoint=False))
    return {
        f"{canonicalize_name(name)}=={version}"
        for name, _, version in (line.partition("==") for line in out.splitlines())
    }
