"""The agent: the one process per server that talks to the Kubernetes API.

All background work runs here, as threads of one process with one API client: the Karta watch, the
mirror of the objects that own Ray pods, the self-managed certificates, and, on the one replica that
holds the Lease, the group-object controller and the periodic audit. The server's gunicorn workers
run no watch and make no API call: they read what the agent publishes in the state file
(webhook.state), so API load and memory do not grow with workers and every worker answers /readyz
from the same state. The agent is started by `serve` (a child of gunicorn's master, started before
any worker and restarted if it exits) or runs as a container of its own next to the server's (the
Helm chart: only that container holds the ServiceAccount token).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client as k8s

from webhook.config import Config, build_evaluator, load_definitions
from webhook.karta.registry import DefinitionSet
from webhook.observability import logs, metrics
from webhook.state.store import AgentStatus, StateWriter

from .arming import ArmSettings, WebhookArming, readyz_probe
from .audit import AuditLoop
from .client import SERVICE_ACCOUNT_DIR
from .kartas import KartaWatch
from .leader import LeaseElector, LeaseTimings
from .owners import DEFAULT_MAX_ENTRIES, OwnerMirror
from .podgroups import GroupObjectController
from .reflector import WatchSettings
from .selfcerts import SelfManagedCertificates, SelfManagedSettings

log = logs.get("agent")

LEASE_NAME = "karta-admission-leader"
HEARTBEAT_SECONDS = 1.0
# Namespaces whose pods the chart's webhooks never see: no group objects there either.
ALWAYS_EXCLUDED_NAMESPACES = frozenset({"kube-system"})

Readiness = Callable[[], tuple[bool, str]]


def release_namespace() -> str:
    """Where the Lease lives: $POD_NAMESPACE, else the service account's namespace, else default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass(frozen=True)
class AgentOptions:
    settings: WatchSettings | None = None
    timings: LeaseTimings | None = None
    identity: str | None = None
    lease_namespace: str | None = None
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    poll_seconds: float = 1.0  # the group-object controller's pace between rounds
    # The /readyz of the server beside this agent: arming waits for it (webhook.cluster.arming).
    server_url: str | None = None
    arming_interval_seconds: float = 5.0
    max_owner_entries: int = DEFAULT_MAX_ENTRIES


class Agent:
    def __init__(
        self, config: Config, api_client: k8s.ApiClient, writer: StateWriter, options: AgentOptions | None = None
    ) -> None:
        options = options or AgentOptions()
        self.config = config
        self.writer = writer
        self.options = options
        self.base: DefinitionSet = load_definitions(config)
        self.evaluator = build_evaluator(config, self.base)
        store = self.evaluator.store
        cluster = config.cluster
        lease_namespace = options.lease_namespace or release_namespace()
        excluded = ALWAYS_EXCLUDED_NAMESPACES | {lease_namespace} | set(cluster.exclude_namespaces)
        self.kartas = KartaWatch(store, api_client, options.settings) if cluster.watch_kartas else None
        self.owners = (
            OwnerMirror(
                writer, api_client, config.gang, settings=options.settings, max_entries=options.max_owner_entries
            )
            if cluster.owner_cache
            else None
        )
        controller = GroupObjectController(
            store, config.gang, config.mode, api_client, settings=options.settings, poll_seconds=options.poll_seconds,
            is_leader=lambda: self.elector is not None and self.elector.is_leader,
            namespace_filter=lambda namespace: namespace not in excluded,
        )  # fmt: skip
        self.podgroups = controller if cluster.owner_cache and controller.needed else None
        self.audit = AuditLoop(config, api_client, base=self.base) if cluster.audit_interval_seconds > 0 else None
        self.certs = (
            SelfManagedCertificates(api_client, SelfManagedSettings.from_mapping(config.self_managed_certificates))
            if config.self_managed_certificates is not None
            else None
        )
        self.arming: WebhookArming | None = None
        if cluster.arm_webhooks is not None and options.server_url is not None:
            self.arming = WebhookArming(
                api_client, ArmSettings.from_mapping(cluster.arm_webhooks), readyz_probe(options.server_url),
                is_leader=lambda: self.is_leader, interval_seconds=options.arming_interval_seconds,
            )  # fmt: skip
        elif cluster.arm_webhooks is not None:
            logs.event(log, logging.WARNING, "cluster.armWebhooks is set but no server to wait for: not arming")
        self.elector: LeaseElector | None = None
        if self.podgroups is not None or self.audit is not None or self.arming is not None:
            identity = options.identity or f"{socket.gethostname()}-{os.getpid()}"
            self.elector = LeaseElector(
                api_client, lease_namespace, LEASE_NAME, identity,
                on_started_leading=self._lead, on_stopped_leading=self._follow, timings=options.timings,
            )  # fmt: skip
        if self.kartas is not None:
            self.kartas.add_listener(self._definitions_changed)
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._definitions_published = False

    # --- lifecycle ---

    def start(self) -> None:
        """Certificates first (the server cannot serve without them), then every watch and the Lease."""
        if self.certs is not None:
            self.certs.ensure()
            self.certs.start_background()
        if self.kartas is not None:
            self.kartas.start()
        if self.owners is not None:
            self.owners.start(self.evaluator.definitions)
        if self.podgroups is not None:
            self.podgroups.start()
        if self.arming is not None:
            self.arming.start()
        if self.elector is not None:
            self.elector.start()
        self.publish_status()
        self._heartbeat = threading.Thread(target=self._beat, name="karta-admission-heartbeat", daemon=True)
        self._heartbeat.start()
        logs.event(
            log, logging.INFO, "agent started",
            watch_kartas=self.kartas is not None, owners=self.owners is not None,
            group_objects=self.podgroups is not None, audit=self.audit is not None,
            certificates=self.certs is not None, lease=self.elector is not None, arming=self.arming is not None,
        )  # fmt: skip

    def stop(self) -> None:
        self._stopping.set()
        if self.elector is not None:
            self.elector.stop()  # releases the Lease: another replica takes over at once
        for part in (self.arming, self.audit, self.podgroups, self.owners, self.kartas, self.certs):
            if part is not None:
                part.stop()
        if self._heartbeat is not None:
            self._heartbeat.join(5)

    # --- leadership ---

    @property
    def is_leader(self) -> bool:
        return self.elector is not None and self.elector.is_leader

    def _lead(self) -> None:
        if self.arming is not None:
            self.arming.wake()
        if self.podgroups is not None:
            self.podgroups.wake()
        if self.audit is not None:
            self.audit.start()

    def _follow(self) -> None:
        if self.podgroups is not None:
            self.podgroups.wake()
        if self.audit is not None:
            self.audit.stop()

    # --- what the workers read ---

    def _publish_definitions(self) -> None:
        assert self.kartas is not None
        version = self.writer.set_definitions(self.kartas.definitions.effective_objects())
        self._definitions_published = True
        logs.event(log, logging.INFO, "published the cluster's Karta definitions", version=version)

    def _definitions_changed(self, definitions: DefinitionSet) -> None:
        self._publish_definitions()
        if self.owners is not None:
            self.owners.on_definitions(definitions)
        if self.podgroups is not None:
            self.podgroups.on_definitions(definitions)

    def status(self) -> AgentStatus:
        checks: list[Readiness] = [part.readiness for part in (self.kartas, self.owners, self.podgroups) if part]
        reason = "synced"
        ready = True
        for check in checks:
            ok, why = check()
            if not ok:
                ready, reason = False, why
                break
        details = [d for d in (self.owners.detail() if self.owners else None,
                               self.podgroups.detail() if self.podgroups else None) if d]  # fmt: skip
        owners = self.owners
        return AgentStatus(
            ready=ready,
            reason=reason,
            details=tuple(dict.fromkeys(details)),
            group_kind=owners.group_kind() if owners else None,
            group_kind_served=owners.group_kind_served() if owners else None,
            group_objects_synced=owners.group_objects_synced() if owners else False,
            group_objects_managed=self.podgroups is not None,
        )

    def publish_status(self) -> None:
        status = self.status()
        if status.ready and self.kartas is not None and not self._definitions_published:
            # After the first list of the Kartas, whatever it found (an earlier agent's set may be stale).
            self._publish_definitions()
        self.writer.set_status(status)
        if self.owners is not None:
            metrics.OWNER_CACHE_ENTRIES.set(self.owners.published())

    def _beat(self) -> None:
        while not self._stopping.wait(self.options.heartbeat_seconds):
            try:
                self.publish_status()
            except Exception:
                log.exception("cannot publish the agent's status")


def run_until_stopped(agent: Agent, stopping: threading.Event, parent_pid: int | None) -> None:
    """Serve until asked to stop or, when started by a server, until that server is gone."""
    agent.start()
    try:
        while not stopping.wait(1.0):
            if parent_pid is not None and os.getppid() != parent_pid:
                logs.event(log, logging.WARNING, "the server that started the agent is gone; stopping")
                break
    finally:
        started = time.monotonic()
        agent.stop()
        logs.event(log, logging.INFO, "agent stopped", seconds=round(time.monotonic() - started, 3))
