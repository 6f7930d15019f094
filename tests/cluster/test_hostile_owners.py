"""Issue 13: one stored object with hostile fields must not stop the owner cache (and so the webhook).

Before the quantity scanner, a RayCluster with a 20,000-digit CPU request (KubeRay's CRD pattern
accepts it) held the GIL for tens of seconds per value while every worker's cache listed it at start:
gunicorn killed the workers and the webhook never became ready. Checked: this test timed out on the
previous commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.emulator import FAST, EmulatedCluster, pod_of, raycluster, wait_until, worker_group
from tests.gang import WorkerParts, size_of
from webhook.cluster.owners import OwnerCache
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


def test_a_stored_object_with_hostile_quantities_does_not_stop_the_cache(cluster: EmulatedCluster) -> None:
    stored = cluster.create(hostile_cluster("hostile"))
    normal = cluster.create(raycluster("normal", worker_group("small-group", 4)))
    config = Config()
    checker = WorkerParts(config)
    owners = OwnerCache(
        checker.evaluator.store, cluster.client(), config.gang, settings=FAST, group_objects_managed=True
    )
    owners.start()
    try:
        wait_until(lambda: owners.readiness()[0], timeout=10, message="the first lists, hostile object included")
        assert size_of(checker, owners, pod_of(normal)) == "5"
        # The hostile object is sized too: an unreadable quantity is left out of its resources, not fatal.
        assert size_of(checker, owners, pod_of(stored)) == "3"
    finally:
        owners.stop()
