"""`karta-admission serve`: pre-flight checks and the cluster agent in the master, the app in each worker."""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from webhook.admission import Admission
from webhook.cli.exits import Exit
from webhook.config import Config, build_evaluator, load_definitions
from webhook.observability import logs, metrics
from webhook.server.app import ServerState, create_app
from webhook.server.companion import Companion
from webhook.server.gunicorn_settings import WebhookGunicornApp, gunicorn_settings
from webhook.state.published import PublishedDefinitions, PublishedGangs, PublishedReadiness
from webhook.state.store import StateReader

# Allocations between collections of the young generation in a worker (Python's default: 700).
YOUNG_GENERATION_THRESHOLD = 10_000

log = logs.get("serve")


AGENT_MODES = ("auto", "spawn", "external", "none")
# How long serve waits for the agent to write the self-managed serving certificate before it gives up.
CERTIFICATE_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class ServeOptions:
    config: Config
    state_dir: Path | None  # where the cluster agent publishes; None: no cluster features
    log_level: str


def count_miss(reason: str) -> None:
    """A pod's owner not found in the published state (absent, uid, stale): counted by reason."""
    metrics.OWNER_CACHE_MISSES.labels(reason).inc()


def build_app(options: ServeOptions) -> Flask:
    """The WSGI app of one worker: definitions, the admission core and, with an agent, what it publishes.

    A worker runs no watch and makes no API call: the cluster comes from the agent's state file."""
    logs.configure(options.log_level)
    config = options.config
    evaluator = build_evaluator(config)
    metrics.DEFINITIONS_LOADED.set(len(evaluator.definitions))
    state = ServerState(config, Admission(evaluator, config.gang))
    if options.state_dir is not None:
        reader = StateReader(options.state_dir)
        published = PublishedDefinitions(reader, evaluator.store, evaluator.definitions)
        gangs = PublishedGangs(reader, evaluator.store, config.gang, on_miss=count_miss)
        agent = PublishedReadiness(reader)
        state = ServerState(
            config,
            Admission(evaluator, config.gang, gangs),
            readiness=[agent.readiness],
            details=[agent.details],
            refresh=published.refresh,
        )
    app = create_app(state)
    # Everything built so far lives as long as the worker: keep the collector from rescanning it.
    gc.freeze()
    # A review allocates thousands of short-lived containers (its JSON, its resolution): collecting the
    # young generation every 700 allocations ran several passes per review over objects about to die.
    # 10,000 keeps that to about one per review (docs/performance.md) for a few MB at most.
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
    return app


def _agent_mode(args: argparse.Namespace) -> str:
    """spawn, external or none; auto means spawn when a Kubernetes API is configured."""
    mode = "none" if args.no_cluster else str(args.agent)
    if mode not in ("auto", "spawn"):
        return mode
    from webhook.cluster.client import ClusterConfigError, NoClusterConfigured, close_client, load_api_client

    try:
        close_client(load_api_client())
    except NoClusterConfigured as exc:
        if mode == "spawn":
            raise SystemExit(f"karta-admission: --agent spawn: {exc}") from exc
        log.info("no Kubernetes API configured: serving without cluster features (no agent)")
        return "none"
    except ClusterConfigError as exc:
        raise SystemExit(f"karta-admission: the Kubernetes configuration cannot be used: {exc}") from exc
    return "spawn"


def _agent_command(args: argparse.Namespace, state_dir: Path) -> list[str]:
    """The agent's command line: the same configuration as this server, and its pid to outlive."""
    command = [sys.executable, "-m", "webhook.cli", "agent", "--state", str(state_dir),
               "--parent-pid", str(os.getpid()), "--log-level", args.log_level]  # fmt: skip
    if args.config is not None:
        command += ["--config", str(args.config)]
    for directory in args.definitions:
        command += ["--definitions", str(directory)]
    if args.mode is not None:
        command += ["--mode", args.mode]
    # The agent arms the enforce webhooks once this server answers; it asks over loopback.
    host, _, port = str(args.bind).rpartition(":")
    local = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host  # noqa: S104 (a comparison, not a bind)
    command += ["--server-url", f"https://{local}:{port}/readyz"]
    return command


def _self_managed_files(config: Config, args: argparse.Namespace, agent: Companion | None) -> bool:
    """selfManaged certificates: the agent writes the serving pair; wait until it is there."""
    from webhook.cluster.selfcerts import SelfManagedSettings

    assert config.self_managed_certificates is not None
    directory = Path(SelfManagedSettings.from_mapping(config.self_managed_certificates).dir)
    args.certfile = args.certfile or directory / "tls.crt"
    args.keyfile = args.keyfile or directory / "tls.key"
    deadline = time.monotonic() + CERTIFICATE_WAIT_SECONDS
    while not (Path(args.certfile).is_file() and Path(args.keyfile).is_file()):
        if agent is not None and agent.exited():
            print("karta-admission: the cluster agent stopped before it wrote the serving certificate "
                  "(its log says why)", file=sys.stderr)  # fmt: skip
            return False
        if time.monotonic() > deadline:
            print(f"karta-admission: no serving certificate in {directory} after {CERTIFICATE_WAIT_SECONDS:.0f} s",
                  file=sys.stderr)  # fmt: skip
            return False
        time.sleep(0.1)
    return True


def serve_command(args: argparse.Namespace, config: Config) -> int:
    logs.configure(args.log_level)
    # Fail fast on bad definitions, before any worker starts.
    definitions = load_definitions(config)
    if not metrics.MULTIPROCESS:
        # prometheus_client was loaded before the sample directory was set (see webhook.observability
        # .multiprocess): each worker would count alone and /metrics would show one of them.
        print("karta-admission: metrics were loaded before their directory was prepared", file=sys.stderr)
        return Exit.ERROR
    mode = _agent_mode(args)
    if mode == "external" and args.state is None:
        print("karta-admission: --agent external needs --state DIR (where that agent publishes)", file=sys.stderr)
        return Exit.ERROR
    state_dir: Path | None = None
    agent: Companion | None = None
    if mode != "none":
        state_dir = args.state or Path(tempfile.mkdtemp(prefix="karta-admission-state-"))
    if mode == "spawn":
        assert state_dir is not None
        # Started before gunicorn forks anything; the master keeps it running (webhook.server.companion).
        agent = Companion(_agent_command(args, state_dir), on_exit=metrics.worker_exited)
        agent.start()
        atexit.register(agent.stop)
    if config.self_managed_certificates is not None and mode != "none" and not _self_managed_files(config, args, agent):
        return Exit.ERROR
    if args.certfile is None or args.keyfile is None:
        print("karta-admission: serve needs --certfile and --keyfile (or selfManaged certificates)", file=sys.stderr)
        return Exit.ERROR
    for flag, path in (("--certfile", args.certfile), ("--keyfile", args.keyfile)):
        if not Path(path).is_file():
            print(f"karta-admission: {flag} {path}: no such file", file=sys.stderr)
            return Exit.ERROR
    settings = gunicorn_settings(
        bind=args.bind,
        certfile=str(args.certfile),
        keyfile=str(args.keyfile),
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
    )
    settings["child_exit"] = _child_exit
    options = ServeOptions(config, state_dir, args.log_level)
    log.info(
        "serving",
        extra={"fields": {"bind": args.bind, "mode": str(config.mode), "workers": args.workers,
                          "kinds": [str(k) for k in definitions.kinds()], "agent": mode,
                          "state": str(state_dir) if state_dir else None}},
    )  # fmt: skip
    WebhookGunicornApp(lambda: build_app(options), settings, companions=[agent] if agent else []).run()
    return Exit.OK


def _child_exit(server: Any, worker: Any) -> None:
    metrics.worker_exited(worker.pid)
