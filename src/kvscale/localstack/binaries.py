"""The control-plane binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
the real node's (kubelet, kube-proxy, the pause and test images, containerd from Debian), and
the project's own images (the kvscale image and the engine twin, built from Containerfile).

Finds them in the per-version cache, or builds them with `scripts/build-control-plane.sh` or
`scripts/build-node.sh` from the checkout (a cold build takes minutes; the scripts are
idempotent). Does I/O: reads the file
system, runs the build script, holds a lock file so two callers never build at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator, Mapping

from kvscale.localstack import paths

KUBE_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
BUILD_SCRIPT = pathlib.PurePosixPath("scripts/build-control-plane.sh")
NODE_BUILD_SCRIPT = pathlib.PurePosixPath("scripts/build-node.sh")
IMAGES_BUILD_SCRIPT = pathlib.PurePosixPath("scripts/build-images.sh")
NODE_FILES = ("bin/kubelet", "bin/kube-proxy", "images/pause.tar", "images/webecho.tar")


class BinariesError(RuntimeError):
    """The binaries are missing and cannot be built here."""


@dataclasses.dataclass(frozen=True)
class Binaries:
    """One directory holding all four control-plane executables."""

    bin_dir: pathlib.Path

    def path(self, component: str) -> pathlib.Path:
        if component not in COMPONENTS:
            raise ValueError(f"component = {component!r}: must be one of {', '.join(COMPONENTS)}")
        return self.bin_dir / component

    def missing(self) -> list[str]:
        """Components whose executable is absent (empty when complete)."""
        return [c for c in COMPONENTS if not os.access(self.path(c), os.X_OK)]


def cached(environ: Mapping[str, str] | None = None) -> Binaries:
    """Where the build script puts this version's binaries (they may not be there yet)."""
    version_dir = f"kube-{KUBE_VERSION}-etcd-{ETCD_VERSION}"
    return Binaries(paths.cache_root(environ) / "control-plane" / version_dir / "bin")


def find(environ: Mapping[str, str] | None = None) -> Binaries | None:
    """The cached binaries if all four are present, else None."""
    found = cached(environ)
    return None if found.missing() else found


def build_script(relative: pathlib.PurePosixPath = BUILD_SCRIPT) -> pathlib.Path:
    """A build script of the checkout, or a BinariesError saying why there is none."""
    root = paths.repo_root()
    if root is None:
        raise BinariesError(
            f"the binaries are not built and this installation has no {relative} (it is not "
            f"a source checkout); run that script from a kvscale checkout, or put etcd, "
            f"kube-apiserver, kube-controller-manager and kube-scheduler ({KUBE_VERSION}, etcd "
            f"{ETCD_VERSION}) into {cached().bin_dir}"
        )
    script = root / relative
    if not script.is_file():
        raise BinariesError(f"the build script {script} is missing")
    return script


@contextlib.contextmanager
def _build_lock(lock_path: pathlib.Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        # Blocks while another process builds; that build then satisfies this caller too.
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(environ: Mapping[str, str] | None = None) -> Binaries:
    """The binaries, built first when missing (the build's progress goes to stderr)."""
    present = find(environ)
    if present is not None:
        return present
    script = build_script()
    env = dict(os.environ if environ is None else environ)
    env["KVSCALE_KUBE_VERSION"] = KUBE_VERSION
    env["KVSCALE_ETCD_VERSION"] = ETCD_VERSION
    with _build_lock(cached(environ).bin_dir.parent.parent / ".build.lock"):
        present = find(environ)
        if present is not None:
            return present
        built = Binaries(_run_script(script, env))
    if built.missing():
        raise BinariesError(
            f"{script} reported {built.bin_dir} but it lacks {', '.join(built.missing())}"
        )
    return built


def _run_script(script: pathlib.Path, env: Mapping[str, str]) -> pathlib.Path:
    """Run a build script (its progress goes to stderr); the directory on its last line."""
    return _run_script_lines(script, env, 1)[0]


def _run_script_lines(
    script: pathlib.Path, env: Mapping[str, str], count: int, *args: str
) -> list[pathlib.Path]:
    """Run a build script (its progress goes to stderr); the paths on its last `count` lines."""
    result = subprocess.run(
        ["bash", str(script), *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or len(lines) < count:
        raise BinariesError(
            f"{script} failed with exit code {result.returncode}; its progress log is above "
            "(stderr)"
        )
    return [pathlib.Path(line) for line in lines[-count:]]


@dataclasses.dataclass(frozen=True)
class NodeFiles:
    """The real node's cached files: kubelet, kube-proxy and the images' OCI layout tars."""

    root: pathlib.Path

    @property
    def kubelet(self) -> pathlib.Path:
        return self.root / "bin" / "kubelet"

    @property
    def kube_proxy(self) -> pathlib.Path:
        return self.root / "bin" / "kube-proxy"

    @property
    def images(self) -> list[pathlib.Path]:
        return [self.root / "images" / "pause.tar", self.root / "images" / "webecho.tar"]

    def missing(self) -> list[str]:
        absent = [f for f in NODE_FILES if not (self.root / f).is_file()]
        # containerd, runc and the CNI plugins come from Debian's packages, not the cache.
        absent += [t for t in ("containerd", "runc", "iptables") if shutil.which(t) is None]
        return absent


def ensure_node(environ: Mapping[str, str] | None = None) -> NodeFiles:
    """The node's files, built (and Debian's packages installed) first when missing."""
    found = NodeFiles(paths.cache_root(environ) / "node" / f"kube-{KUBE_VERSION}")
    if not found.missing():
        return found
    script = build_script(NODE_BUILD_SCRIPT)
    env = dict(os.environ if environ is None else environ)
    env["KVSCALE_KUBE_VERSION"] = KUBE_VERSION
    with _build_lock(found.root.parent / ".build.lock"):
        if found.missing():
            found = NodeFiles(_run_script(script, env))
    if found.missing():
        raise BinariesError(
            f"{script} reported {found.root} but it lacks {', '.join(found.missing())}"
        )
    return found


@dataclasses.dataclass(frozen=True)
class Images:
    """The OCI archives of the images Containerfile builds (docs/images.md)."""

    kvscale: pathlib.Path
    engine_twin: pathlib.Path

    @property
    def archives(self) -> list[pathlib.Path]:
        return [self.kvscale, self.engine_twin]


def _build_images(environ: Mapping[str, str] | None, count: int, *args: str) -> list[pathlib.Path]:
    """The archives scripts/build-images.sh prints last (`count` of them) for `args`. Under one
    lock for every image: the builds share buildah's storage and the base image."""
    script = build_script(IMAGES_BUILD_SCRIPT)
    env = dict(os.environ if environ is None else environ)
    with _build_lock(paths.cache_root(environ) / "images" / ".build.lock"):
        archives = _run_script_lines(script, env, count, *args)
    absent = [str(archive) for archive in archives if not archive.is_file()]
    if absent:
        raise BinariesError(f"{script} reported archives that are not there: {', '.join(absent)}")
    return archives


def ensure_images(environ: Mapping[str, str] | None = None) -> Images:
    """The kvscale and engine-twin images of this checkout's sources, built when missing.

    The build script keys its cache by the content the images are made of, so it always runs
    (a fraction of a second when nothing changed) and a source edit gives new archives."""
    kvscale, engine_twin = _build_images(environ, 2)
    return Images(kvscale=kvscale, engine_twin=engine_twin)


def ensure_engine_image(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """The OCI archive of the vLLM CPU engine image (engine_env/Containerfile), built when
    missing: about 6 GB and several minutes cold. Keyed by its Containerfile and the engine lock
    only, so a source edit does not rebuild it (docs/images.md)."""
    (archive,) = _build_images(environ, 1, "engine")
    return archive
