"""Where the local stack keeps things: the build cache, per-cluster state, the project's tools.

Reads the environment and the home directory; creates nothing.

- cache root: `$KVSCALE_CACHE`, default `~/.cache/kvscale` (built binaries, engine environment);
- state root: `$KVSCALE_STATE`, default `~/.local/state/kvscale`; a cluster named N keeps its
  certificates, kubeconfig, logs and process records in `<state root>/clusters/N`.
"""

from __future__ import annotations

import os
import pathlib
import re
import sysconfig
from collections.abc import Mapping

# A cluster name ends up in paths, kubeconfig names and log lines: keep it a DNS label.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def cache_root(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """The cache shared by every checkout on this machine (`$KVSCALE_CACHE`)."""
    env = _environ(environ)
    explicit = env.get("KVSCALE_CACHE")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    return pathlib.Path.home() / ".cache" / "kvscale"


def state_root(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """The root of all local-stack state (`$KVSCALE_STATE`)."""
    env = _environ(environ)
    explicit = env.get("KVSCALE_STATE")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    return pathlib.Path.home() / ".local" / "state" / "kvscale"


def check_cluster_name(name: str) -> str:
    """Return `name` if it is a valid cluster name, else raise ValueError naming the field."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"cluster name = {name!r}: must be 1-40 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def cluster_state_dir(name: str, environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """The state directory of the cluster called `name`."""
    return state_root(environ) / "clusters" / check_cluster_name(name)


def repo_root() -> pathlib.Path | None:
    """The checkout this package runs from, or None when installed from a wheel.

    The package lives at `<repo>/src/kvscale/localstack/`; a checkout is recognised by the
    `pyproject.toml` and `scripts/` next to `src/`.
    """
    candidate = pathlib.Path(__file__).resolve().parents[3]
    if (candidate / "pyproject.toml").is_file() and (candidate / "scripts").is_dir():
        return candidate
    return None


def tools_bin() -> pathlib.Path:
    """The bin directory of the Python environment running this code (where kubectl lives)."""
    return pathlib.Path(sysconfig.get_path("scripts"))
