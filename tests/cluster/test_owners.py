"""The owner cache: gang sizes for Pod mutation from watched RayClusters, through the API emulator."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.emulator import (
    COSCHEDULING_PODGROUPS,
    FAST,
    KARTAS,
    RAYCLUSTERS,
    RAYSERVICES,
    EmulatedCluster,
    metric,
    pod_of,
    raycluster,
    raycluster_karta,
    wait_until,
    worker_group,
)
from tests.gang import WorkerParts, mutate_with, size_of
from webhook.cluster.integration import start_cluster_integration
from webhook.cluster.owners import OwnerCache
from webhook.config import Config, parse_config
from webhook.gang import SIZE_ANNOTATION, NoCluster

MISSES = "karta_admission_owner_cache_misses_total"
RELISTS = "karta_admission_cluster_relists_total"
WATCH_ERRORS = "karta_admission_cluster_watch_errors_total"
EVICTIONS = "karta_admission_owner_cache_evictions_total"


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest.fixture
def parts() -> WorkerParts:
    config = Config()
    return WorkerParts(config)


@pytest.fixture
def cache(cluster: EmulatedCluster, parts: WorkerParts) -> Iterator[OwnerCache]:
    owners = OwnerCache(
        parts.evaluator.store, cluster.client(), parts.config.gang, group_objects_managed=True, settings=FAST
    )
    owners.start()
    wait_until(lambda: owners.readiness()[0], message="the owner cache's first lists")
    wait_until(lambda: cluster.watchers(RAYCLUSTERS) == 1, message="the RayCluster watch")
    yield owners
    owners.stop()


def rayservice(name: str, namespace: str = "ml") -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rayClusterConfig": raycluster("template", worker_group("small-group", 4))["spec"]},
    }


def test_zero_downtime_upgrade_sizes_each_cluster_from_its_own_spec(
    cluster: EmulatedCluster, parts: WorkerParts, cache: OwnerCache
) -> None:
    service = cluster.create(rayservice("svc"))
    # The active cluster still runs the old spec; the pending one was made from the new one.
    active = cluster.create(raycluster("svc-x7k2p", worker_group("small-group", 2), namespace="ml", owner=service))
    pending = cluster.create(
        raycluster(
            "svc-b9d4q",
            worker_group("small-group", 4),
            worker_group("gpu", 1, min_replicas=1),
            namespace="ml",
            owner=service,
        )
    )
    # The RayService owns no pods (its RayClusters do): only the clusters are kept.
    wait_until(lambda: len(cache) == 2, message="both clusters in the cache")
    fetches = cluster.requests("fetch", RAYCLUSTERS)

    for node_type, group in (("head", "headgroup"), ("worker", "small-group")):
        active_pod, outcome = mutate_with(parts, cache, pod_of(active, node_type, group))
        assert active_pod["metadata"]["annotations"][SIZE_ANNOTATION] == "3"  # head + 2 workers
        assert active_pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "svc-x7k2p"
        assert outcome.notes == []
        pending_pod, _ = mutate_with(parts, cache, pod_of(pending, node_type, group))
        assert pending_pod["metadata"]["annotations"][SIZE_ANNOTATION] == "6"  # head + 4 + 1
        assert pending_pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "svc-b9d4q"
    assert cluster.requests("fetch", RAYCLUSTERS) == fetches  # no API call per pod

    # The upgrade completes: the old cluster goes, the new one stays sized as it is.
    cluster.delete(active)
    wait_until(lambda: size_of(parts, cache, pod_of(active)) is None)
    assert size_of(parts, cache, pod_of(pending)) == "6"


def test_watch_events_keep_sizes_current(cluster: EmulatedCluster, parts: WorkerParts, cache: OwnerCache) -> None:
    stored = cluster.create(raycluster("rc", worker_group("small-group", 2), namespace="team"))
    wait_until(lambda: size_of(parts, cache, pod_of(stored)) == "3")
    scaled = raycluster("rc", worker_group("small-group", 5), namespace="team")
    cluster.patch(stored, {"spec": scaled["spec"]})
    wait_until(lambda: size_of(parts, cache, pod_of(stored)) == "6")
    cluster.delete(stored)
    wait_until(lambda: len(cache) == 0)
    patched, outcome = mutate_with(parts, cache, pod_of(stored))
    # An owner not known: no keys at all (a key for an unknown gang could name a group never made).
    assert outcome.gang_reason == "absent" and outcome.verdict == "withheld"
    assert "scheduling.x-k8s.io/pod-group" not in patched["metadata"]["labels"]


def test_a_recreated_cluster_of_the_same_name_is_not_confused(
    cluster: EmulatedCluster, parts: WorkerParts, cache: OwnerCache
) -> None:
    old = cluster.create(raycluster("rc", worker_group("small-group", 2)))
    wait_until(lambda: size_of(parts, cache, pod_of(old)) == "3")
    cluster.delete(old)
    new = cluster.create(raycluster("rc", worker_group("small-group", 7)))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    wait_until(lambda: size_of(parts, cache, pod_of(new)) == "8")
    misses = metric(MISSES, reason="uid")
    assert size_of(parts, cache, pod_of(old)) is None  # a late pod of the old cluster
    assert metric(MISSES, reason="uid") == misses + 1


def test_resync_after_410_gone_and_after_a_dropped_connection(
    cluster: EmulatedCluster, parts: WorkerParts, cache: OwnerCache
) -> None:
    stored = cluster.create(raycluster("rc", worker_group("small-group", 1)))
    wait_until(lambda: size_of(parts, cache, pod_of(stored)) == "2")

    # Missed while the watch was being renewed, and the history is compacted: 410, then a relist.
    gone = metric(RELISTS, resource="RayCluster.ray.io", reason="gone")
    watches = cluster.requests("watch", RAYCLUSTERS)
    cluster.hold_watches(RAYCLUSTERS)
    cluster.expire_watches(RAYCLUSTERS)
    wait_until(lambda: cluster.requests("watch", RAYCLUSTERS) > watches)
    cluster.patch(stored, {"spec": raycluster("rc", worker_group("small-group", 3))["spec"]})
    cluster.compact()
    cluster.release_watches(RAYCLUSTERS)
    wait_until(lambda: size_of(parts, cache, pod_of(stored)) == "4")
    assert metric(RELISTS, resource="RayCluster.ray.io", reason="gone") == gone + 1

    errors = metric(WATCH_ERRORS, resource="RayCluster.ray.io", reason="connection")
    relists = metric(RELISTS, resource="RayCluster.ray.io", reason="error")
    wait_until(lambda: cluster.watchers(RAYCLUSTERS) == 1)
    cluster.drop_watches(RAYCLUSTERS)
    cluster.patch(stored, {"spec": raycluster("rc", worker_group("small-group", 9))["spec"]})
    wait_until(lambda: size_of(parts, cache, pod_of(stored)) == "10")
    wait_until(lambda: metric(RELISTS, resource="RayCluster.ray.io", reason="error") == relists + 1)
    assert metric(WATCH_ERRORS, resource="RayCluster.ray.io", reason="connection") == errors + 1


def test_entries_are_bounded_and_evictions_counted(cluster: EmulatedCluster, parts: WorkerParts) -> None:
    owners = OwnerCache(
        parts.evaluator.store,
        cluster.client(),
        parts.config.gang,
        group_objects_managed=True,
        settings=FAST,
        max_entries=2,
    )
    owners.start()
    try:
        wait_until(lambda: owners.readiness()[0])
        evictions = metric(EVICTIONS)
        first, second, third = (cluster.create(raycluster(f"rc{i}", worker_group("small-group", i))) for i in range(3))
        wait_until(lambda: size_of(parts, owners, pod_of(third)) == "3")
        assert len(owners) == 2
        assert metric(EVICTIONS) == evictions + 1
        assert size_of(parts, owners, pod_of(first)) is None  # the least recently updated went
        assert size_of(parts, owners, pod_of(second)) == "2"
    finally:
        owners.stop()


def test_the_first_list_is_paginated(cluster: EmulatedCluster, parts: WorkerParts) -> None:
    stored = [cluster.create(raycluster(f"rc{i}", worker_group("small-group", i))) for i in range(5)]
    lists = cluster.requests("list", RAYCLUSTERS)
    owners = OwnerCache(
        parts.evaluator.store,
        cluster.client(),
        parts.config.gang,
        group_objects_managed=True,
        settings=dataclasses.replace(FAST, page_size=2),
    )
    owners.start()
    try:
        wait_until(lambda: owners.readiness()[0])
        assert cluster.requests("list", RAYCLUSTERS) - lists == 3  # 2 + 2 + 1
        assert [size_of(parts, owners, pod_of(rc)) for rc in stored] == ["1", "2", "3", "4", "5"]
    finally:
        owners.stop()


def test_readiness_and_kinds_the_cluster_does_not_serve(parts: WorkerParts) -> None:
    with EmulatedCluster([KARTAS]) as no_kuberay:
        owners = OwnerCache(
            parts.evaluator.store, no_kuberay.client(), parts.config.gang, group_objects_managed=True, settings=FAST
        )
        assert owners.readiness() == (False, "owner cache: not started")
        owners.start()
        try:
            wait_until(lambda: owners.readiness()[0])
            assert owners.readiness() == (True, "owner cache synced")  # the Ray CRDs are not installed
            assert len(owners) == 0
        finally:
            owners.stop()


def test_not_ready_until_every_watched_kind_is_listed(cluster: EmulatedCluster, parts: WorkerParts) -> None:
    # The scheduler's group objects are watched too (whether one of a cluster's name is someone else's).
    cluster.fail_next("list", COSCHEDULING_PODGROUPS, 500, times=1000)
    owners = OwnerCache(
        parts.evaluator.store, cluster.client(), parts.config.gang, group_objects_managed=True, settings=FAST
    )
    owners.start()
    try:
        wait_until(lambda: "injected 500" in owners.readiness()[1])
        ready, reason = owners.readiness()
        assert not ready
        assert reason.startswith(
            "owner cache: PodGroup.scheduling.x-k8s.io: waiting for the first list; last error: list failed: 500"
        )
        cluster.clear_faults()
        wait_until(lambda: owners.readiness() == (True, "owner cache synced"))
    finally:
        owners.stop()


def test_changed_definitions_relist_and_recompute(cluster: EmulatedCluster) -> None:
    # Kueue needs no group object, so the integration's owner cache writes its size without a controller.
    config = parse_config({"gang": {"scheduler": "kueue"}}, "test")
    parts = WorkerParts(config)
    integration = start_cluster_integration(parts.evaluator, config, api_client=cluster.client(), settings=FAST)
    try:
        assert isinstance(integration.owner_index, OwnerCache)
        assert len(integration.readiness) == 2
        wait_until(lambda: all(check()[0] for check in integration.readiness))
        stored = cluster.create(raycluster("rc", worker_group("small-group", 2)))
        wait_until(lambda: size_of(parts, integration.owner_index, pod_of(stored)) == "3")
        relists = metric(RELISTS, resource="RayCluster.ray.io", reason="definitions")
        service_relists = metric(RELISTS, resource="RayService.ray.io", reason="definitions")
        # A cluster Karta whose RayCluster definition counts two head pods: every size grows by one.
        cluster.create(raycluster_karta("two-heads", head_pods=2))
        wait_until(lambda: size_of(parts, integration.owner_index, pod_of(stored)) == "4")
        assert metric(RELISTS, resource="RayCluster.ray.io", reason="definitions") == relists + 1
        # The RayService definition did not change: no relist for it.
        assert metric(RELISTS, resource="RayService.ray.io", reason="definitions") == service_relists
    finally:
        integration.stop()


def test_integration_without_a_controller_writes_no_podgroup_keys(cluster: EmulatedCluster, parts: WorkerParts) -> None:
    """No GroupObjectController runs in the server yet: coscheduling keys would name PodGroups nobody makes."""
    integration = start_cluster_integration(parts.evaluator, parse_config({}, "test"), api_client=cluster.client(),
                                            settings=FAST)  # fmt: skip
    try:
        wait_until(lambda: all(check()[0] for check in integration.readiness))
        stored = cluster.create(raycluster("rc", worker_group("small-group", 2)))
        outcome = wait_until(lambda: (o := mutate_with(parts, integration.owner_index, pod_of(stored))[1]).gang_reason
                             == "no-group-objects" and o)  # fmt: skip
        assert outcome.verdict == "withheld"
    finally:
        integration.stop()


def test_integration_without_cluster_features(parts: WorkerParts, cluster: EmulatedCluster) -> None:
    config = parse_config({"cluster": {"watchKartas": False, "ownerCache": False}}, "test")
    integration = start_cluster_integration(parts.evaluator, config, api_client=cluster.client())
    assert isinstance(integration.owner_index, NoCluster)
    assert integration.readiness == []
    integration.stop()
    assert cluster.requests("list", RAYCLUSTERS) == 0
    assert cluster.requests("list", RAYSERVICES) == 0

    only_kartas = parse_config({"cluster": {"ownerCache": False}}, "test")
    integration = start_cluster_integration(parts.evaluator, only_kartas, api_client=cluster.client(), settings=FAST)
    try:
        assert isinstance(integration.owner_index, NoCluster)
        wait_until(lambda: integration.readiness[0]()[0])
        assert cluster.requests("list", KARTAS) == 1
        assert cluster.requests("list", RAYCLUSTERS) == 0
    finally:
        integration.stop()
