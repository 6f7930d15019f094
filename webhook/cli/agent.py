"""`karta-admission agent`: the process that talks to the Kubernetes API for a server (webhook.cluster.agent).

`serve` starts it on its own; run it by hand with `serve --agent external --state DIR` to keep the two
apart (e.g. in two containers of one pod).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from webhook.cli.exits import Exit
from webhook.cluster.agent import Agent, AgentOptions, run_until_stopped
from webhook.cluster.client import ClusterUnavailable, close_client, load_api_client
from webhook.config import Config
from webhook.observability import logs
from webhook.state.store import StateWriter

log = logs.get("agent")


def agent_command(args: argparse.Namespace, config: Config) -> Exit:
    logs.configure(args.log_level)
    try:
        api_client = load_api_client(args.kubeconfig, args.context)
    except ClusterUnavailable as exc:
        print(f"karta-admission: {exc}", file=sys.stderr)
        return Exit.ERROR
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    writer = StateWriter(args.state)
    try:
        agent = Agent(config, api_client, writer, AgentOptions(server_url=args.server_url))
        run_until_stopped(agent, stopping, args.parent_pid)
    finally:
        writer.close()
        close_client(api_client)
    return Exit.OK
