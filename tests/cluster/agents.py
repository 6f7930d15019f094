"""Agents on the API emulator and server workers that read what they publish, as `serve` runs them.

An `AgentRun` is webhook.cluster.agent.Agent with its own state directory; `worker()` builds what a
gunicorn worker builds in webhook.cli.serve.build_app (published definitions, published gangs,
Admission), so a test drives the same path a Ray pod's admission takes, without HTTP.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonpatch

from tests.cluster.emulator import FAST, EmulatedCluster, wait_until
from tests.reviews import review
from webhook.admission import Admission, Outcome, parse_review
from webhook.cli.serve import count_miss
from webhook.cluster.agent import Agent, AgentOptions
from webhook.cluster.leader import LeaseTimings
from webhook.cluster.owners import DEFAULT_MAX_ENTRIES
from webhook.cluster.reflector import WatchSettings
from webhook.config import Config, build_evaluator
from webhook.gang import SIZE_ANNOTATION
from webhook.state.published import PublishedDefinitions, PublishedGangs, PublishedReadiness
from webhook.state.store import StateReader, StateWriter

FAST_LEASE = LeaseTimings(lease_duration_seconds=2, renew_deadline_seconds=1.0, retry_period_seconds=0.1)
LEASE_NAMESPACE = "karta-system"


class Worker:
    """One server worker's view: the agent's state file, read without any API call."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        self.config = config
        self.evaluator = build_evaluator(config)
        self.reader = StateReader(state_dir)
        self.definitions = PublishedDefinitions(self.reader, self.evaluator.store, self.evaluator.definitions)
        self.gangs = PublishedGangs(self.reader, self.evaluator.store, config.gang, on_miss=count_miss)
        self.admission = Admission(self.evaluator, config.gang, self.gangs)
        self.agent_readiness = PublishedReadiness(self.reader)

    def refresh(self) -> None:
        """What the app does before each review (webhook.server.app), without its rate limit."""
        self.definitions._checked = 0.0
        self.definitions.refresh()

    def mutate(self, pod: dict[str, Any]) -> tuple[dict[str, Any], Outcome]:
        """The pod as the API server stores it after this worker's /mutate answer, and the outcome."""
        self.refresh()
        outcome = self.admission.mutate(parse_review(review(pod)))
        response = outcome.response["response"]
        if "patch" not in response:
            return pod, outcome
        return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"]))), outcome

    def size_of(self, pod: dict[str, Any]) -> str | None:
        """The gang size the pod was annotated with, if any."""
        patched, _ = self.mutate(pod)
        size: str | None = (patched["metadata"].get("annotations") or {}).get(SIZE_ANNOTATION)
        return size

    def readiness(self) -> tuple[bool, str]:
        return self.agent_readiness.readiness()


class AgentRun:
    """An agent on an emulated cluster, started on entry and stopped on exit."""

    def __init__(
        self,
        cluster: EmulatedCluster,
        config: Config,
        state_dir: Path,
        *,
        identity: str = "agent-a",
        settings: WatchSettings = FAST,
        max_owner_entries: int | None = None,
        wait_ready: bool = True,
        server_url: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.state_dir = state_dir
        self.wait_ready = wait_ready
        self.writer = StateWriter(state_dir)
        options = AgentOptions(
            settings=settings, timings=FAST_LEASE, identity=identity, lease_namespace=LEASE_NAMESPACE,
            heartbeat_seconds=0.02, poll_seconds=0.05, max_owner_entries=max_owner_entries or DEFAULT_MAX_ENTRIES,
            server_url=server_url, arming_interval_seconds=0.05,
        )  # fmt: skip
        self.agent = Agent(config, cluster.client(), self.writer, options)
        self.worker = Worker(config, state_dir)

    def __enter__(self) -> AgentRun:
        self.agent.start()
        if self.wait_ready:
            wait_until(lambda: self.worker.readiness()[0], message="the agent's first lists")
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self.writer.close()
