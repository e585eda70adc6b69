"""helm, promtool, the Prometheus server and the Prometheus Operator's CRDs: what the chart's
tests drive. Does I/O (runs their scripts).

Each tool has an idempotent script in the checkout that builds or fetches it into the cache
(`scripts/build-helm.sh`: helm from its Go module; `scripts/install-prometheus.sh promtool`
and `... prometheus`: promtool and the server from Debian's prometheus package, promtool also
from its Go module) and prints the binary's path on its last line; when the tool is cached the
script only prints the path.
`scripts/fetch-prometheus-operator-crds.sh` caches the ServiceMonitor, PodMonitor and
PrometheusRule CRDs (from the Prometheus Operator's Go module) and prints their folder.
`make tools` runs all three.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Mapping

from kvscale.localstack import paths

# tool -> (script, its arguments)
SCRIPTS: dict[str, tuple[pathlib.PurePosixPath, tuple[str, ...]]] = {
    "helm": (pathlib.PurePosixPath("scripts/build-helm.sh"), ()),
    "promtool": (pathlib.PurePosixPath("scripts/install-prometheus.sh"), ("promtool",)),
    # The server: the chaos tests evaluate the chart's alerts with it (tests/support/prometheus).
    "prometheus": (pathlib.PurePosixPath("scripts/install-prometheus.sh"), ("prometheus",)),
    # Not a program: the folder of the Prometheus Operator's CRDs the chart's tests use.
    "prometheus-operator-crds": (
        pathlib.PurePosixPath("scripts/fetch-prometheus-operator-crds.sh"),
        (),
    ),
}


class ToolError(RuntimeError):
    """The tool is missing and could not be built or fetched; the message says how to."""


def ensure(tool: str, environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """The tool's binary, built or fetched first when it is not cached yet."""
    if tool not in SCRIPTS:
        raise ValueError(f"tool = {tool!r}: must be one of {', '.join(sorted(SCRIPTS))}")
    relative, args = SCRIPTS[tool]
    root = paths.repo_root()
    if root is None:
        raise ToolError(f"{tool} is needed and this installation has no {relative}")
    script = root / relative
    result = subprocess.run(
        ["bash", str(script), *args],
        env=dict(os.environ if environ is None else environ),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    found = pathlib.Path(lines[-1]) if lines else None
    if result.returncode != 0 or found is None or not os.access(found, os.X_OK):
        raise ToolError(
            f"{tool} is needed and {script} could not provide it (exit code "
            f"{result.returncode}; its progress log is above, on stderr); `make tools` runs it"
        )
    return found
