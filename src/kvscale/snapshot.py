"""`kvscale status`: read what it shows from the API server, then print it. Does I/O.

Lists the InferenceDeployments (one namespace, all of them, or one by name), each one's
engine pods, and asks every ready pod's sidecar for its occupancy report through the API
server's pod proxy (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/v1/occupancy`),
concurrently and with a timeout. Going through the API server makes it work from wherever
kubectl works, pod IPs reachable or not; it needs `get` on `pods/proxy`. Where the proxy
cannot give a report (forbidden, or a pod address the API server refuses to proxy to, such
as the local stack's loopback pod IPs), the pod's address is asked directly, which works from
inside the cluster's network; failing both, the requests line says why. Rendering is
`statusview`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import httpx2
import lightkube
from lightkube.config import client_adapter

from kvscale import report, statusview
from kvscale.api import models

_CONCURRENCY = 16
_OWNER_LABEL = "kvscale.dev/inference-deployment"  # the engine pods' selector label


class StatusError(RuntimeError):
    """The API server could not be asked, or refused; the message says what to do."""


def _config(kubeconfig: str | None) -> lightkube.KubeConfig:
    try:
        if kubeconfig:
            return lightkube.KubeConfig.from_file(pathlib.Path(kubeconfig))
        return lightkube.KubeConfig.from_env()
    except (lightkube.ConfigError, OSError, ValueError) as error:
        raise StatusError(f"no Kubernetes credentials ({error}); pass --kubeconfig") from error


async def _get(client: httpx2.AsyncClient, path: str, **params: str) -> Any:
    try:
        answer = await client.get(path, params=params or None)
    except httpx2.HTTPError as error:
        raise StatusError(f"cannot reach the API server: {error}") from error
    if answer.status_code < 400:
        return answer.json()
    try:
        body = answer.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    found = body.get("details")
    details: dict[str, Any] = found if isinstance(found, dict) else {}
    if answer.status_code == 404 and f"/{models.PLURAL}" in path:
        if details.get("name"):  # the object is missing, not the kind
            raise StatusError(f"InferenceDeployment {details['name']!r} not found (HTTP 404)")
        raise StatusError(
            f"the API server does not serve {models.PLURAL}.{models.GROUP}: is the CRD "
            "installed (helm install, or kubectl apply -f crds/)? (HTTP 404)"
        )
    message = body.get("message") or answer.text
    raise StatusError(f"GET {path}: HTTP {answer.status_code}: {message}")


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        item.get("type") == "Ready" and item.get("status") == "True"
        for item in status.get("conditions") or []
    )


async def _ask(
    client: httpx2.AsyncClient, url: str, wait_s: float
) -> tuple[report.OccupancyReport | None, str]:
    """One occupancy report from `url`, or why there is none."""
    try:
        answer = await client.get(url, timeout=wait_s)
    except httpx2.TimeoutException:
        return None, f"timeout after {wait_s:g}s"
    except httpx2.HTTPError as error:
        return None, f"unreachable: {error}"
    try:
        # The sidecar answers 503 with a report while its engine is not ok: use it.
        return report.from_json(answer.content), ""
    except report.ReportError as error:
        if answer.status_code != 200:
            try:
                why = str(answer.json().get("message") or "")
            except (ValueError, AttributeError):
                why = ""
            return None, f"HTTP {answer.status_code}" + (f" ({why})" if why else "")
        return None, f"invalid report: {error}"


async def _report(
    client: httpx2.AsyncClient,
    direct: httpx2.AsyncClient,
    pod: Mapping[str, Any],
    port: int,
    wait_s: float,
) -> statusview.PodReport:
    """The pod's report through the API server's pod proxy; where the proxy cannot give it
    (the API server refuses loopback pod addresses, as on the local stack, or the proxy is
    forbidden), straight from the pod's address, which works from inside the cluster."""
    metadata = pod.get("metadata") or {}
    name, namespace = str(metadata.get("name")), str(metadata.get("namespace"))
    proxy = f"/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy{report.PATH}"
    found, why = await _ask(client, proxy, wait_s)
    if found is not None:
        return statusview.PodReport(name, found)
    address = (pod.get("status") or {}).get("podIP")
    if address:
        found, directly = await _ask(direct, f"http://{address}:{port}{report.PATH}", wait_s)
        if found is not None:
            return statusview.PodReport(name, found)
        why = f"through the API server: {why}; directly: {directly}"
    return statusview.PodReport(name, None, why)


async def fetch(
    client: httpx2.AsyncClient,
    direct: httpx2.AsyncClient,
    namespace: str | None,
    name: str | None,
    wait_s: float,
) -> list[statusview.Row]:
    """The rows for `name` in `namespace` (None: every namespace; no name: all); `wait_s`
    bounds each sidecar's answer."""
    base = f"/apis/{models.GROUP}/{models.VERSION}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    if name:
        items = [await _get(client, f"{base}{scope}/{models.PLURAL}/{name}")]
    else:
        items = (await _get(client, f"{base}{scope}/{models.PLURAL}")).get("items") or []
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(obj: Mapping[str, Any]) -> statusview.Row:
        metadata = obj.get("metadata") or {}
        where, who = str(metadata.get("namespace")), str(metadata.get("name"))
        pods = await _get(
            client, f"/api/v1/namespaces/{where}/pods", labelSelector=f"{_OWNER_LABEL}={who}"
        )
        port = ((obj.get("spec") or {}).get("sidecar") or {}).get("port") or 9090

        async def ask(pod: Mapping[str, Any]) -> statusview.PodReport:
            async with limit:
                return await _report(client, direct, pod, port, wait_s)

        ready = [pod for pod in pods.get("items") or [] if _ready(pod)]
        reports = await asyncio.gather(*(ask(pod) for pod in ready))
        return statusview.summarize(obj, reports)

    rows = await asyncio.gather(*(one(obj) for obj in items))
    return sorted(rows, key=lambda row: (row.namespace, row.name))


async def _run(args: argparse.Namespace) -> str:
    config = _config(args.kubeconfig)
    single = config.get()
    if single is None:
        raise StatusError("the kubeconfig has no current context")
    namespace = None if args.all_namespaces else (args.namespace or single.namespace)
    params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(10))
    async with (
        client_adapter.AsyncClient(single, params) as client,
        httpx2.AsyncClient(trust_env=False) as direct,
    ):
        rows = await fetch(client, direct, namespace, args.name, args.timeout)
    now = datetime.datetime.now(datetime.UTC)
    if args.output == "json":
        return json.dumps(statusview.document(rows, now), indent=2) + "\n"
    where = "in any namespace" if namespace is None else f"in namespace {namespace}"
    return statusview.text(rows, now, where)


def run(args: argparse.Namespace) -> int:
    """Entry point of `kvscale status`; returns the exit code."""
    if args.all_namespaces and args.name:
        print("kvscale status: a NAME needs one namespace, not --all-namespaces", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print(f"kvscale status: --timeout = {args.timeout:g}, must be > 0", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(asyncio.run(_run(args)))
    except StatusError as error:
        print(f"kvscale status: {error}", file=sys.stderr)
        return 1
    return 0
