"""`kvscale node-agent`: parse the settings, run the agent until SIGTERM or SIGINT. Does I/O."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import lightkube

from kvscale.localstack.nodeagent import agent, settings

log = logging.getLogger(__name__)

FIELD_MANAGER = "kvscale-node-agent"


def run(args: argparse.Namespace) -> int:
    """Run the node agent; 0 after a clean shutdown, 2 for bad settings, 1 for other failures."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP request would drown the agent's own log.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        config = settings.parse(
            kubeconfig=args.kubeconfig,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            node_prefix=args.node_prefix,
            pod_cidr=args.pod_cidr,
            state_dir=args.state_dir,
            crashloop_backoff_initial=getattr(args, "crashloop_backoff_initial", 10.0),
            crashloop_backoff_max=getattr(args, "crashloop_backoff_max", 300.0),
        )
    except settings.SettingsError as error:
        sys.stderr.write(f"kvscale node-agent: {error}\n")
        return 2
    try:
        kubeconfig = lightkube.KubeConfig.from_file(config.kubeconfig)
    except (OSError, lightkube.ConfigError, ValueError) as error:
        sys.stderr.write(f"kvscale node-agent: --kubeconfig {config.kubeconfig}: {error}\n")
        return 2
    return asyncio.run(_serve(kubeconfig, config))


async def _serve(kubeconfig: lightkube.KubeConfig, config: settings.Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = lightkube.AsyncClient(config=kubeconfig, field_manager=FIELD_MANAGER)
    try:
        await agent.Agent(client, config).run(stop)
    except Exception:
        log.exception("the node agent failed")
        return 1
    finally:
        await client.close()
    return 0
