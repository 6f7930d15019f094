"""Issue 13: one stored object with hostile fields must not stop the agent (and so the webhook).

Before the quantity scanner, a RayCluster with a 20,000-digit CPU request (KubeRay's CRD pattern
accepts it) held the GIL for tens of seconds per value while every worker's cache listed it at start:
gunicorn killed the workers and the webhook never became ready. Checked: this test timed out on the
previous commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.agents import AgentRun
from tests.cluster.emulator import EmulatedCluster, pod_of, raycluster, wait_until, worker_group
from webhook.config import Config


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


def hostile_cluster(name: str) -> dict[str, Any]:
    group = worker_group("small-group", 2)
    hostile = "1" * 12_000 + "e1.5"
    container = group["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": hostile, "memory": hostile}, "limits": {"cpu": hostile}}
    return raycluster(name, group)


def test_a_stored_object_with_hostile_quantities_does_not_stop_the_cache(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    """The agent lists it and the group-object controller plans it; a worker plans its pods."""
    stored = cluster.create(hostile_cluster("hostile"))
    normal = cluster.create(raycluster("normal", worker_group("small-group", 4)))
    with AgentRun(cluster, Config(), tmp_path, wait_ready=False) as running:
        wait_until(
            lambda: running.worker.readiness()[0], timeout=10, message="the first lists, hostile object included"
        )
        wait_until(lambda: running.worker.size_of(pod_of(normal)) == "5")
        # The hostile object is sized too: an unreadable quantity is left out of its resources, not fatal.
        assert running.worker.size_of(pod_of(stored)) == "3"
