"""`kvscale twin`: serve one or many engine twins until SIGTERM, then drain. Does I/O.

Each `--listen` address (or the single `--host`/`--port`) gets its own twin: its own engine,
clock, metrics and HTTP server, all on one event loop. On SIGTERM or SIGINT every twin stops
listening and answers /health with 503, lets in-flight requests finish for up to
`--shutdown-timeout` seconds (vLLM's flag; 0 aborts them at once, as vLLM does), aborts what is
left, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from kvscale.twinserver import api, driver, settings

# How long aiohttp may take to close connections once every request has ended or been aborted.
_CLOSE_TIMEOUT_S = 5.0


def run(args: argparse.Namespace) -> int:
    try:
        config = settings.from_args(args)
    except settings.SettingsError as error:
        print(f"kvscale twin: error: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except OSError as error:
        print(f"kvscale twin: error: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0


def _describe(config: settings.Settings, twin: driver.Twin) -> str:
    sched = twin.engine.scheduler_config
    where = ", ".join(f"{host}:{port}" for host, port in config.listen)
    preemption = (
        f"swap ({config.kv_offloading_size_gib:g} GiB, {sched.num_cpu_blocks} CPU blocks)"
        if config.kv_offloading_size_gib
        else "recompute"
    )
    lines = [
        f"kvscale twin: {len(config.listen)} twin(s) of {config.served_model_name} "
        f"({config.model_profile} on {config.gpu}, tp {config.profile.tensor_parallel_size}) "
        f"at {where}",
        f"  KV cache: {sched.num_gpu_blocks} blocks of {sched.block_size} tokens, "
        f"max_model_len {sched.max_model_len}, max_num_seqs {sched.max_num_seqs}, "
        f"max_num_batched_tokens {sched.max_num_batched_tokens}, prefix caching "
        f"{'on' if sched.enable_prefix_caching else 'off'}, preemption {preemption}",
        f"  time scale {config.time_scale:g}, shutdown timeout {config.shutdown_timeout_s:g} s",
    ]
    lines += [f"  ignored: {item}" for item in config.ignored]
    return "\n".join(lines)


async def _serve(config: settings.Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    twins: list[driver.Twin] = []
    runners: list[web.AppRunner] = []
    sites: list[web.TCPSite] = []
    drivers: list[asyncio.Task[None]] = []
    try:
        for host, port in config.listen:
            twin = driver.Twin(config)
            runner = web.AppRunner(
                api.build_app(twin),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=_CLOSE_TIMEOUT_S,
            )
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, host, port)
            await site.start()
            sites.append(site)
            twins.append(twin)
            drivers.append(asyncio.create_task(twin.run()))
        print(_describe(config, twins[0]), file=sys.stderr, flush=True)
        await stop.wait()

        print("kvscale twin: stopping: draining in-flight requests", file=sys.stderr, flush=True)
        for twin in twins:
            twin.accepting = False
        for site in sites:
            await site.stop()
        drained = await asyncio.gather(*(t.drain(config.shutdown_timeout_s) for t in twins))
        left = sum(t.num_streams for t in twins)
        for twin in twins:
            twin.abort_all()
        await asyncio.sleep(0.05)  # let handlers write their last chunk
        if not all(drained):
            print(f"kvscale twin: aborted {left} request(s) still running", file=sys.stderr)
    finally:
        for task in drivers:
            task.cancel()
        for runner in runners:
            await runner.cleanup()
