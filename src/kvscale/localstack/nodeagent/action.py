"""Running probe and lifecycle handlers: HTTP GET, TCP connect, exec, sleep. Does I/O.

Each handler returns an `Outcome` instead of raising, and never outlives its timeout: an exec
handler's process group is killed when the time is up. HTTP probes go to the pod's IP (or the
handler's host) like kubelet's: no keep-alive, no TLS verification, a status in [200, 400) is a
success and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from kvscale.localstack.nodeagent import podspec, process

USER_AGENT = "kube-probe/kvscale-node-agent"
# Output of an exec handler kept for the log line when it fails.
_OUTPUT_LIMIT = 1024


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Context:
    """Where a handler runs: the pod's address, the container (for named ports) and the
    environment and directory its exec commands get."""

    pod_ip: str
    container: podspec.Container
    env: Mapping[str, str]
    cwd: Path
    http: aiohttp.ClientSession


async def run(action: podspec.Action, context: Context, limit_seconds: float) -> Outcome:
    """Run one handler; a handler that does not finish within `limit_seconds` failed."""
    try:
        if isinstance(action, podspec.HttpGet):
            return await asyncio.wait_for(_http_get(action, context, limit_seconds), limit_seconds)
        if isinstance(action, podspec.TcpSocket):
            return await asyncio.wait_for(_tcp(action, context), limit_seconds)
        if isinstance(action, podspec.Exec):
            return await _exec(action, context, limit_seconds)
        if isinstance(action, podspec.Sleep):
            await asyncio.sleep(min(action.seconds, limit_seconds))
            return Outcome(ok=True)
        return Outcome(ok=False, detail=f"{action.kind} handlers are not supported by the agent")
    except TimeoutError:
        return Outcome(ok=False, detail=f"timed out after {limit_seconds:g}s")


def _port(port: int | str, context: Context) -> int:
    number = context.container.port_number(port)
    if number is None:
        raise LookupError(f"container {context.container.name!r} has no port named {port!r}")
    return number


async def _http_get(action: podspec.HttpGet, context: Context, limit_seconds: float) -> Outcome:
    try:
        port = _port(action.port, context)
    except LookupError as error:
        return Outcome(ok=False, detail=str(error))
    path = action.path if action.path.startswith("/") else "/" + action.path
    url = f"{action.scheme.lower()}://{action.host or context.pod_ip}:{port}{path}"
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
    headers.update(dict(action.headers))
    try:
        async with context.http.get(
            url,
            headers=headers,
            allow_redirects=False,
            ssl=False,
            timeout=aiohttp.ClientTimeout(total=limit_seconds),
        ) as response:
            await response.read()
            ok = 200 <= response.status < 400
            return Outcome(ok=ok, detail=f"GET {url}: HTTP {response.status}")
    except (aiohttp.ClientError, OSError) as error:
        return Outcome(ok=False, detail=f"GET {url}: {error or type(error).__name__}")


async def _tcp(action: podspec.TcpSocket, context: Context) -> Outcome:
    try:
        port = _port(action.port, context)
    except LookupError as error:
        return Outcome(ok=False, detail=str(error))
    host = action.host or context.pod_ip
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as error:
        return Outcome(ok=False, detail=f"connect {host}:{port}: {error}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Outcome(ok=True)


async def _exec(action: podspec.Exec, context: Context, limit_seconds: float) -> Outcome:
    try:
        child = await asyncio.create_subprocess_exec(
            *action.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(context.env),
            cwd=context.cwd,
            start_new_session=True,
        )
    except OSError as error:
        return Outcome(ok=False, detail=f"exec {list(action.command)}: {error}")
    try:
        output, _ = await asyncio.wait_for(child.communicate(), limit_seconds)
    except TimeoutError:
        # Not reaped yet, so the group is still the command's: it all goes.
        process.signal_group(child.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 5)
        return Outcome(ok=False, detail=f"exec {list(action.command)}: timed out")
    text = output[-_OUTPUT_LIMIT:].decode(errors="replace").strip()
    return Outcome(ok=child.returncode == 0, detail=f"exit code {child.returncode}: {text}")
