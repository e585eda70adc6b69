"""Liveness and readiness endpoints of an operator replica under leader election. Does I/O.

kopf serves `/healthz` itself, but only while it runs, that is only in the leader; a standby
must answer its probes too, or kubelet would restart it forever. Both endpoints answer 200
while the process's event loop turns: a standby is alive and ready to take over, and a leader
whose kopf stopped exits (see `leader.lead`), so "answers" is the signal that matters; a
wedged event loop answers nothing and fails the liveness probe.
"""

from __future__ import annotations

from aiohttp import web


async def serve(host: str, port: int, role: dict[str, str]) -> web.AppRunner:
    """Serves /healthz and /readyz until the returned runner is cleaned up. `role` (a dict
    the caller updates: {"role": "leader" | "standby"}) is shown in the response body."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text=f"ok ({role.get('role', 'starting')})\n")

    app = web.Application()
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
