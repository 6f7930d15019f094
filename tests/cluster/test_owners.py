"""The owner cache: gang sizes for Pod mutation from watched RayClusters, through the API emulator."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest

from tests.cluster.emulator import (
    FAST,
    KARTAS,
    RAYCLUSTERS,
    RAYJOBS,
    RAYSERVICES,
    EmulatedCluster,
    metric,
    pod_of,
    raycluster,
    raycluster_karta,
    wait_until,
    worker_group,
)
from tests.reviews import review
from webhook.admission import Admission, NoOwnerIndex, Outcome, parse_review
from webhook.cluster.integration import start_cluster_integration
from webhook.cluster.owners import OwnerCache
from webhook.config import Config, GangSettings, build_evaluator, load_definitions, parse_config
from webhook.evaluation import Evaluator
from webhook.gang import SIZE_ANNOTATION

MISSES = "karta_admission_owner_cache_misses_total"
RELISTS = "karta_admission_cluster_relists_total"
WATCH_ERRORS = "karta_admission_cluster_watch_errors_total"
EVICTIONS = "karta_admission_owner_cache_evictions_total"


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest.fixture
def evaluator() -> Evaluator:
    config = Config()
    return build_evaluator(config, load_definitions(config))


@pytest.fixture
def cache(cluster: EmulatedCluster, evaluator: Evaluator) -> Iterator[OwnerCache]:
    owners = OwnerCache(evaluator.store, cluster.client(), settings=FAST)
    owners.start()
    wait_until(lambda: owners.readiness()[0], message="the owner cache's first lists")
    wait_until(lambda: cluster.watchers(RAYCLUSTERS) == 1, message="the RayCluster watch")
    yield owners
    owners.stop()


def mutate(evaluator: Evaluator, owners: Any, pod: dict[str, Any]) -> tuple[dict[str, Any], Outcome]:
    outcome = Admission(evaluator, GangSettings(), owners).mutate(parse_review(review(pod)))
    response = outcome.response["response"]
    if "patch" not in response:
        return pod, outcome
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"]))), outcome


def size_of(evaluator: Evaluator, owners: Any, pod: dict[str, Any]) -> str | None:
    patched, _ = mutate(evaluator, owners, pod)
    size: str | None = (patched["metadata"].get("annotations") or {}).get(SIZE_ANNOTATION)
    return size


def rayservice(name: str, namespace: str = "ml") -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rayClusterConfig": raycluster("template", worker_group("small-group", 4))["spec"]},
    }


def test_zero_downtime_upgrade_sizes_each_cluster_from_its_own_spec(
    cluster: EmulatedCluster, evaluator: Evaluator, cache: OwnerCache
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
    wait_until(lambda: len(cache) == 3, message="the service and both clusters in the cache")
    fetches = cluster.requests("fetch", RAYCLUSTERS)

    for node_type, group in (("head", "headgroup"), ("worker", "small-group")):
        active_pod, outcome = mutate(evaluator, cache, pod_of(active, node_type, group))
        assert active_pod["metadata"]["annotations"][SIZE_ANNOTATION] == "3"  # head + 2 workers
        assert active_pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "svc-x7k2p"
        assert outcome.notes == []
        pending_pod, _ = mutate(evaluator, cache, pod_of(pending, node_type, group))
        assert pending_pod["metadata"]["annotations"][SIZE_ANNOTATION] == "6"  # head + 4 + 1
        assert pending_pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "svc-b9d4q"
    assert cluster.requests("fetch", RAYCLUSTERS) == fetches  # no API call per pod

    # The upgrade completes: the old cluster goes, the new one stays sized as it is.
    cluster.delete(active)
    wait_until(lambda: size_of(evaluator, cache, pod_of(active)) is None)
    assert size_of(evaluator, cache, pod_of(pending)) == "6"


def test_watch_events_keep_sizes_current(cluster: EmulatedCluster, evaluator: Evaluator, cache: OwnerCache) -> None:
    stored = cluster.create(raycluster("rc", worker_group("small-group", 2), namespace="team"))
    wait_until(lambda: size_of(evaluator, cache, pod_of(stored)) == "3")
    scaled = raycluster("rc", worker_group("small-group", 5), namespace="team")
    cluster.patch(stored, {"spec": scaled["spec"]})
    wait_until(lambda: size_of(evaluator, cache, pod_of(stored)) == "6")
    cluster.delete(stored)
    wait_until(lambda: len(cache) == 0)
    _, outcome = mutate(evaluator, cache, pod_of(stored))
    assert outcome.notes == ["size-unknown"]  # group labels still written, size left out
    assert outcome.verdict == "patched"


def test_a_recreated_cluster_of_the_same_name_is_not_confused(
    cluster: EmulatedCluster, evaluator: Evaluator, cache: OwnerCache
) -> None:
    old = cluster.create(raycluster("rc", worker_group("small-group", 2)))
    wait_until(lambda: size_of(evaluator, cache, pod_of(old)) == "3")
    cluster.delete(old)
    new = cluster.create(raycluster("rc", worker_group("small-group", 7)))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    wait_until(lambda: size_of(evaluator, cache, pod_of(new)) == "8")
    misses = metric(MISSES, reason="uid")
    assert size_of(evaluator, cache, pod_of(old)) is None  # a late pod of the old cluster
    assert metric(MISSES, reason="uid") == misses + 1


def test_resync_after_410_gone_and_after_a_dropped_connection(
    cluster: EmulatedCluster, evaluator: Evaluator, cache: OwnerCache
) -> None:
    stored = cluster.create(raycluster("rc", worker_group("small-group", 1)))
    wait_until(lambda: size_of(evaluator, cache, pod_of(stored)) == "2")

    # Missed while the watch was being renewed, and the history is compacted: 410, then a relist.
    gone = metric(RELISTS, resource="RayCluster.ray.io", reason="gone")
    watches = cluster.requests("watch", RAYCLUSTERS)
    cluster.hold_watches(RAYCLUSTERS)
    cluster.expire_watches(RAYCLUSTERS)
    wait_until(lambda: cluster.requests("watch", RAYCLUSTERS) > watches)
    cluster.patch(stored, {"spec": raycluster("rc", worker_group("small-group", 3))["spec"]})
    cluster.compact()
    cluster.release_watches(RAYCLUSTERS)
    wait_until(lambda: size_of(evaluator, cache, pod_of(stored)) == "4")
    assert metric(RELISTS, resource="RayCluster.ray.io", reason="gone") == gone + 1

    errors = metric(WATCH_ERRORS, resource="RayCluster.ray.io", reason="connection")
    relists = metric(RELISTS, resource="RayCluster.ray.io", reason="error")
    wait_until(lambda: cluster.watchers(RAYCLUSTERS) == 1)
    cluster.drop_watches(RAYCLUSTERS)
    cluster.patch(stored, {"spec": raycluster("rc", worker_group("small-group", 9))["spec"]})
    wait_until(lambda: size_of(evaluator, cache, pod_of(stored)) == "10")
    wait_until(lambda: metric(RELISTS, resource="RayCluster.ray.io", reason="error") == relists + 1)
    assert metric(WATCH_ERRORS, resource="RayCluster.ray.io", reason="connection") == errors + 1


def test_entries_are_bounded_and_evictions_counted(cluster: EmulatedCluster, evaluator: Evaluator) -> None:
    owners = OwnerCache(evaluator.store, cluster.client(), settings=FAST, max_entries=2)
    owners.start()
    try:
        wait_until(lambda: owners.readiness()[0])
        evictions = metric(EVICTIONS)
        first, second, third = (cluster.create(raycluster(f"rc{i}", worker_group("small-group", i))) for i in range(3))
        wait_until(lambda: size_of(evaluator, owners, pod_of(third)) == "3")
        assert len(owners) == 2
        assert metric(EVICTIONS) == evictions + 1
        assert size_of(evaluator, owners, pod_of(first)) is None  # the least recently updated went
        assert size_of(evaluator, owners, pod_of(second)) == "2"
    finally:
        owners.stop()


def test_the_first_list_is_paginated(cluster: EmulatedCluster, evaluator: Evaluator) -> None:
    stored = [cluster.create(raycluster(f"rc{i}", worker_group("small-group", i))) for i in range(5)]
    lists = cluster.requests("list", RAYCLUSTERS)
    owners = OwnerCache(evaluator.store, cluster.client(), settings=dataclasses.replace(FAST, page_size=2))
    owners.start()
    try:
        wait_until(lambda: owners.readiness()[0])
        assert cluster.requests("list", RAYCLUSTERS) - lists == 3  # 2 + 2 + 1
        assert [size_of(evaluator, owners, pod_of(rc)) for rc in stored] == ["1", "2", "3", "4", "5"]
    finally:
        owners.stop()


def test_readiness_and_kinds_the_cluster_does_not_serve(evaluator: Evaluator) -> None:
    with EmulatedCluster([KARTAS]) as no_kuberay:
        owners = OwnerCache(evaluator.store, no_kuberay.client(), settings=FAST)
        assert owners.readiness() == (False, "owner cache: not started")
        owners.start()
        try:
            wait_until(lambda: owners.readiness()[0])
            assert owners.readiness() == (True, "owner cache synced")  # the Ray CRDs are not installed
            assert len(owners) == 0
        finally:
            owners.stop()


def test_not_ready_until_every_watched_kind_is_listed(cluster: EmulatedCluster, evaluator: Evaluator) -> None:
    cluster.fail_next("list", RAYJOBS, 500, times=1000)
    owners = OwnerCache(evaluator.store, cluster.client(), settings=FAST)
    owners.start()
    try:
        wait_until(lambda: "injected 500" in owners.readiness()[1])
        ready, reason = owners.readiness()
        assert not ready
        assert reason.startswith("owner cache: RayJob.ray.io: waiting for the first list; last error: list failed: 500")
        cluster.clear_faults()
        wait_until(lambda: owners.readiness() == (True, "owner cache synced"))
    finally:
        owners.stop()


def test_changed_definitions_relist_and_recompute(cluster: EmulatedCluster, evaluator: Evaluator) -> None:
    config = parse_config({}, "test")
    integration = start_cluster_integration(evaluator, config, api_client=cluster.client(), settings=FAST)
    try:
        assert isinstance(integration.owner_index, OwnerCache)
        assert len(integration.readiness) == 2
        wait_until(lambda: all(check()[0] for check in integration.readiness))
        stored = cluster.create(raycluster("rc", worker_group("small-group", 2)))
        wait_until(lambda: size_of(evaluator, integration.owner_index, pod_of(stored)) == "3")
        relists = metric(RELISTS, resource="RayCluster.ray.io", reason="definitions")
        service_relists = metric(RELISTS, resource="RayService.ray.io", reason="definitions")
        # A cluster Karta whose RayCluster definition counts two head pods: every size grows by one.
        cluster.create(raycluster_karta("two-heads", head_pods=2))
        wait_until(lambda: size_of(evaluator, integration.owner_index, pod_of(stored)) == "4")
        assert metric(RELISTS, resource="RayCluster.ray.io", reason="definitions") == relists + 1
        # The RayService definition did not change: no relist for it.
        assert metric(RELISTS, resource="RayService.ray.io", reason="definitions") == service_relists
    finally:
        integration.stop()


def test_integration_without_cluster_features(evaluator: Evaluator, cluster: EmulatedCluster) -> None:
    config = parse_config({"cluster": {"watchKartas": False, "ownerCache": False}}, "test")
    integration = start_cluster_integration(evaluator, config, api_client=cluster.client())
    assert isinstance(integration.owner_index, NoOwnerIndex)
    assert integration.readiness == []
    integration.stop()
    assert cluster.requests("list", RAYCLUSTERS) == 0
    assert cluster.requests("list", RAYSERVICES) == 0

    only_kartas = parse_config({"cluster": {"ownerCache": False}}, "test")
    integration = start_cluster_integration(evaluator, only_kartas, api_client=cluster.client(), settings=FAST)
    try:
        assert isinstance(integration.owner_index, NoOwnerIndex)
        wait_until(lambda: integration.readiness[0]()[0])
        assert cluster.requests("list", KARTAS) == 1
        assert cluster.requests("list", RAYCLUSTERS) == 0
    finally:
        integration.stop()
