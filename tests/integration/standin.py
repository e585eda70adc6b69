"""A stand-in that answers on a stopped sidecar's own listening socket, with garbage. Does
I/O: copies a file descriptor out of another process (pidfd_getfd(2)), signals it, serves HTTP,
asks the engine.

A sidecar serving garbage is a fault of the process, not of the network, so it is made on the
socket itself. The test copies the sidecar container's listening socket into its own process
(from the host, through the container's processes as containerd lists them), stops those
processes (SIGSTOP: the sidecar keeps its port, its state and the operator's idle keep-alive
connection, on which a request now gets no answer) and accepts the new connections in its
place:

- kubelet's probes are answered as the sidecar would answer them: `/healthz` alive (a sidecar
  with a broken report still polls its engine), `/readyz` from the engine's own `/health`, so
  the pod stays ready and keeps taking traffic;
- the operator's `GET /v1/occupancy` gets 200 with the next of `garbage` bodies, over and over.

`heal()` closes the copy (the socket stays open in the sidecar) and resumes the sidecar, which
then accepts again; the requests left unanswered meanwhile are ones the operator gave up on.
(A sidecar cut off from the operator is a fault of the network: `realnode.Partition` drops its
packets in the pod's own network namespace.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import signal
import socket
import threading
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from kvscale import report

_SYS_PIDFD_GETFD = 438  # one number on every architecture but alpha (Linux 5.6 and later)
_LIBC = ctypes.CDLL(None, use_errno=True)


def _copy_fd(pid: int, fd: int) -> int:
    """A copy of another process's open file `fd`, as pidfd_getfd(2) makes it."""
    pidfd = os.pidfd_open(pid)
    try:
        copied = int(_LIBC.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if copied < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"pidfd_getfd({pid}, {fd}): {os.strerror(error)}")
    return copied


def _listens_on(sock: socket.socket, ip: str, port: int) -> bool:
    """Listening on ip:port, itself or as the wildcard address of the pod's namespace."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        host, bound = sock.getsockname()[:2]
    except OSError:
        return False
    return bool(listening) and bound == port and host in (ip, "0.0.0.0", "::")


def listening_socket(pids: Sequence[int], ip: str, port: int) -> socket.socket:
    """A copy of the socket listening on ip:port in one of the processes `pids`."""
    for pid in pids:
        for name in os.listdir(f"/proc/{pid}/fd"):
            entry = f"/proc/{pid}/fd/{name}"
            try:
                if not os.readlink(entry).startswith("socket:"):
                    continue
                copy = socket.socket(fileno=_copy_fd(pid, int(name)))
            except OSError:
                continue  # closed meanwhile
            if _listens_on(copy, ip, port):
                return copy
            copy.close()
    raise LookupError(f"no socket listens on {ip}:{port} in processes {list(pids)}")


class StandIn:
    """Stops the sidecar's processes `pids` and answers on its socket (module docstring)."""

    def __init__(
        self, pids: Sequence[int], ip: str, port: int, engine_url: str, garbage: Sequence[bytes]
    ) -> None:
        if not garbage:
            raise ValueError("the stand-in needs at least one garbage body")
        self.pids = list(pids)
        self.engine_url = engine_url
        self.asked = 0
        """Occupancy requests the operator made of the stand-in (answered with garbage)."""
        self.probed = 0
        """Probes answered (kubelet's /healthz and /readyz)."""
        self._garbage = itertools.cycle(garbage)
        self._socket = listening_socket(self.pids, ip, port)
        self._loop = asyncio.new_event_loop()
        self._healed = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = False
        self._session: aiohttp.ClientSession | None = None

    def _signal(self, sig: signal.Signals) -> None:
        for pid in self.pids:
            os.kill(pid, sig)

    def start(self) -> None:
        self._signal(signal.SIGSTOP)
        try:
            self._thread.start()
            if not self._started.wait(timeout=30):
                raise RuntimeError("the stand-in did not start serving")
        except BaseException:
            self.heal()
            raise

    def heal(self) -> None:
        """Stop answering, close the copy of the socket, resume the sidecar. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._thread.is_alive():
                with contextlib.suppress(RuntimeError):  # its loop already ended
                    self._loop.call_soon_threadsafe(self._healed.set)
                self._thread.join(timeout=30)
            elif self._thread.ident is None:  # never started: its loop was never run
                self._loop.close()
        finally:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._signal(signal.SIGCONT)

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    async def _run(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get(report.PATH, self._occupancy)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            self._session = session
            await web.SockSite(runner, self._socket).start()
            self._started.set()
            await self._healed.wait()
            await runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        self.probed += 1
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        self.probed += 1
        assert self._session is not None, "set before the site starts"
        try:
            async with self._session.get(f"{self.engine_url}/health") as response:
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "engine down\n")

    async def _occupancy(self, _: web.Request) -> web.Response:
        self.asked += 1
        return web.Response(body=next(self._garbage), content_type="application/json")
