"""`karta-admission serve`: pre-flight checks in the master, the app built in each gunicorn worker."""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from webhook.admission import Admission
from webhook.cli.exits import Exit
from webhook.config import Config, build_evaluator, load_definitions
from webhook.observability import logs, metrics
from webhook.server.app import ServerState, create_app
from webhook.server.gunicorn_settings import WebhookGunicornApp, gunicorn_settings

log = logs.get("serve")


@dataclass(frozen=True)
class ServeOptions:
    config: Config
    use_cluster: bool
    log_level: str


def build_app(options: ServeOptions) -> Flask:
    """The WSGI app of one worker: definitions, the admission core and, in a cluster, the watches."""
    logs.configure(options.log_level)
    config = options.config
    evaluator = build_evaluator(config)
    metrics.DEFINITIONS_LOADED.set(len(evaluator.definitions))
    owners = None
    readiness = []
    details = []
    if options.use_cluster:
        from webhook.cluster.integration import start_cluster_integration
        from webhook.cluster.kube import ClusterUnavailable

        try:
            integration = start_cluster_integration(evaluator, config)
        except ClusterUnavailable as exc:
            log.warning("running without cluster features: %s", exc)
        else:
            owners = integration.owner_index
            readiness.extend(integration.readiness)
            details.extend(integration.details)
            atexit.register(integration.stop)
    state = ServerState(config, Admission(evaluator, config.gang, owners), readiness, details)
    app = create_app(state)
    # Everything built so far lives as long as the worker: keep the collector from rescanning it.
    gc.freeze()
    return app


def _cluster_available(args: argparse.Namespace) -> bool:
    if args.no_cluster:
        return False
    from webhook.cluster.kube import ClusterConfigError, NoClusterConfigured, close_client, load_api_client

    try:
        close_client(load_api_client())
    except NoClusterConfigured:
        log.info("no Kubernetes API configured: serving without the Karta watch and the owner cache")
        return False
    except ClusterConfigError as exc:
        raise SystemExit(f"karta-admission: the Kubernetes configuration cannot be used: {exc}") from exc
    return True


def _self_managed_certificates(config: Config, args: argparse.Namespace) -> Any:
    """selfManaged certificate mode: make sure the Secret and the files exist before serving."""
    from webhook.cluster.kube import load_api_client
    from webhook.cluster.selfcerts import SelfManagedCertificates, SelfManagedSettings

    assert config.self_managed_certificates is not None
    settings = SelfManagedSettings.from_mapping(config.self_managed_certificates)
    manager = SelfManagedCertificates(load_api_client(), settings)
    manager.ensure()
    manager.start_background()
    if args.certfile is None:
        args.certfile = Path(settings.dir) / "tls.crt"
    if args.keyfile is None:
        args.keyfile = Path(settings.dir) / "tls.key"
    return manager


def serve_command(args: argparse.Namespace, config: Config) -> int:
    logs.configure(args.log_level)
    # Fail fast on bad definitions, before any worker starts.
    definitions = load_definitions(config)
    use_cluster = _cluster_available(args)
    if config.self_managed_certificates is not None and use_cluster:
        manager = _self_managed_certificates(config, args)
        atexit.register(manager.stop)
    if args.certfile is None or args.keyfile is None:
        print("karta-admission: serve needs --certfile and --keyfile (or selfManaged certificates)", file=sys.stderr)
        return Exit.ERROR
    for flag, path in (("--certfile", args.certfile), ("--keyfile", args.keyfile)):
        if not Path(path).is_file():
            print(f"karta-admission: {flag} {path}: no such file", file=sys.stderr)
            return Exit.ERROR
    if not metrics.MULTIPROCESS:
        # prometheus_client was loaded before the sample directory was set (see webhook.observability
        # .multiprocess): each worker would count alone and /metrics would show one of them.
        print("karta-admission: metrics were loaded before their directory was prepared", file=sys.stderr)
        return Exit.ERROR
    if use_cluster and config.cluster.audit_interval_seconds > 0:
        from webhook.cluster.audit import PeriodicAudit

        periodic = PeriodicAudit(config, log_level=args.log_level)
        periodic.start()
        atexit.register(periodic.stop)
    settings = gunicorn_settings(
        bind=args.bind,
        certfile=str(args.certfile),
        keyfile=str(args.keyfile),
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
    )
    settings["child_exit"] = _child_exit
    options = ServeOptions(config, use_cluster, args.log_level)
    log.info(
        "serving",
        extra={"fields": {"bind": args.bind, "mode": str(config.mode), "workers": args.workers,
                          "kinds": [str(k) for k in definitions.kinds()], "cluster": use_cluster}},
    )  # fmt: skip
    WebhookGunicornApp(lambda: build_app(options), settings).run()
    return Exit.OK


def _child_exit(server: Any, worker: Any) -> None:
    metrics.worker_exited(worker.pid)
