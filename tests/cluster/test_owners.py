"""The owners of Ray pods, mirrored by the agent and read by the workers, against the API emulator.

The agent (webhook.cluster.agent) watches the RayClusters into its state file; a worker plans each
pod's gang from the published owner with no API call. Most tests use Kueue's convention (it needs no
group object, so the agent runs no group-object controller and the RayCluster watch is the mirror's
alone); the coscheduling one checks the label that names the PodGroup the agent's controller makes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.agents import AgentRun
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
from webhook.config import Config, parse_config
from webhook.karta.model import GVK

MISSES = "karta_admission_owner_cache_misses_total"
RELISTS = "karta_admission_cluster_relists_total"
WATCH_ERRORS = "karta_admission_cluster_watch_errors_total"
EVICTIONS = "karta_admission_owner_cache_evictions_total"
RAYCLUSTER = GVK("ray.io", "v1", "RayCluster")
KUEUE = parse_config({"gang": {"scheduler": "kueue"}}, "test")
KUEUE_NAME = "kueue.x-k8s.io/pod-group-name"


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest.fixture
def agent(cluster: EmulatedCluster, tmp_path: Path) -> Iterator[AgentRun]:
    with AgentRun(cluster, KUEUE, tmp_path) as running:
        wait_until(lambda: cluster.watchers(RAYCLUSTERS) == 1, message="the RayCluster watch")
        yield running


def rayservice(name: str, namespace: str = "ml") -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rayClusterConfig": raycluster("template", worker_group("small-group", 4))["spec"]},
    }


def test_zero_downtime_upgrade_sizes_each_cluster_from_its_own_spec(cluster: EmulatedCluster, agent: AgentRun) -> None:
    worker = agent.worker
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
    # The RayService owns no pods (its RayClusters do): only the clusters are published.
    wait_until(lambda: worker.reader.count(RAYCLUSTER) == 2, message="both clusters published")
    assert worker.reader.count(GVK("ray.io", "v1", "RayService")) == 0
    fetches = cluster.total_requests()

    for node_type, group in (("head", "headgroup"), ("worker", "small-group")):
        active_pod, outcome = worker.mutate(pod_of(active, node_type, group))
        assert active_pod["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "3"  # head + 2
        assert active_pod["metadata"]["labels"][KUEUE_NAME] == "svc-x7k2p"
        assert outcome.notes == []
        pending_pod, _ = worker.mutate(pod_of(pending, node_type, group))
        assert pending_pod["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "6"  # head + 4 + 1
        assert pending_pod["metadata"]["labels"][KUEUE_NAME] == "svc-b9d4q"
    assert cluster.total_requests() == fetches  # no API call per pod

    # The upgrade completes: the old cluster goes, the new one stays sized as it is.
    cluster.delete(active)
    wait_until(lambda: worker.size_of(pod_of(active)) is None)
    assert worker.size_of(pod_of(pending)) == "6"


def test_coscheduling_pods_name_the_podgroup_the_agent_makes(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with AgentRun(cluster, Config(), tmp_path) as running:
        stored = cluster.create(raycluster("rc", worker_group("small-group", 2), namespace="team"))
        wait_until(lambda: cluster.objects(COSCHEDULING_PODGROUPS), message="the PodGroup")
        pod = wait_until(lambda: (p := running.worker.mutate(pod_of(stored))[0])["metadata"].get("labels", {})
                         .get("scheduling.x-k8s.io/pod-group") and p)  # fmt: skip
        assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "rc"
        assert pod["metadata"]["annotations"]["karta-admission.io/pod-group-size"] == "3"


def test_watch_events_keep_sizes_current(cluster: EmulatedCluster, agent: AgentRun) -> None:
    worker = agent.worker
    stored = cluster.create(raycluster("rc", worker_group("small-group", 2), namespace="team"))
    wait_until(lambda: worker.size_of(pod_of(stored)) == "3")
    scaled = raycluster("rc", worker_group("small-group", 5), namespace="team")
    cluster.patch(stored, {"spec": scaled["spec"]})
    wait_until(lambda: worker.size_of(pod_of(stored)) == "6")
    cluster.delete(stored)
    wait_until(lambda: worker.reader.count(RAYCLUSTER) == 0)
    patched, outcome = worker.mutate(pod_of(stored))
    # An owner not known: no keys at all (a key for an unknown gang could name a group never made).
    assert outcome.gang_reason == "absent" and outcome.verdict == "withheld"
    assert KUEUE_NAME not in patched["metadata"]["labels"]


def test_a_recreated_cluster_of_the_same_name_is_not_confused(cluster: EmulatedCluster, agent: AgentRun) -> None:
    worker = agent.worker
    old = cluster.create(raycluster("rc", worker_group("small-group", 2)))
    wait_until(lambda: worker.size_of(pod_of(old)) == "3")
    cluster.delete(old)
    new = cluster.create(raycluster("rc", worker_group("small-group", 7)))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    wait_until(lambda: worker.size_of(pod_of(new)) == "8")
    misses = metric(MISSES, reason="uid")
    assert worker.size_of(pod_of(old)) is None  # a late pod of the old cluster
    assert metric(MISSES, reason="uid") == misses + 1


def test_resync_after_410_gone_and_after_a_dropped_connection(cluster: EmulatedCluster, agent: AgentRun) -> None:
    worker = agent.worker
    stored = cluster.create(raycluster("rc", worker_group("small-group", 1)))
    wait_until(lambda: worker.size_of(pod_of(stored)) == "2")

    # Missed while the watch was being renewed, and the history is compacted: 410, then a relist.
    gone = metric(RELISTS, resource="RayCluster.ray.io", reason="gone")
    watches = cluster.requests("watch", RAYCLUSTERS)
    cluster.hold_watches(RAYCLUSTERS)
    cluster.expire_watches(RAYCLUSTERS)
    wait_until(lambda: cluster.requests("watch", RAYCLUSTERS) > watches)
    cluster.patch(stored, {"spec": raycluster("rc", worker_group("small-group", 3))["spec"]})
    cluster.compact()
    cluster.release_watches(RAYCLUSTERS)
    wait_until(lambda: worker.size_of(pod_of(stored)) == "4")
    assert metric(RELISTS, resource="RayCluster.ray.io", reason="gone") == gone + 1

    # A connection cut mid-watch: the change made meanwhile arrives through a relist.
    errors = metric(WATCH_ERRORS, resource="RayCluster.ray.io", reason="connection")
    relists = metric(RELISTS, resource="RayCluster.ray.io", reason="error")
    wait_until(lambda: cluster.watchers(RAYCLUSTERS) == 1)
    cluster.drop_watches(RAYCLUSTERS)
    cluster.patch(stored, {"spec": raycluster("rc", worker_group("small-group", 9))["spec"]})
    wait_until(lambda: worker.size_of(pod_of(stored)) == "10")
    wait_until(lambda: metric(RELISTS, resource="RayCluster.ray.io", reason="error") == relists + 1)
    assert metric(WATCH_ERRORS, resource="RayCluster.ray.io", reason="connection") == errors + 1


def test_entries_are_bounded_and_evictions_counted(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with AgentRun(cluster, KUEUE, tmp_path, max_owner_entries=2) as running:
        worker = running.worker
        evictions = metric(EVICTIONS)
        first, second, third = (cluster.create(raycluster(f"rc{i}", worker_group("small-group", i))) for i in range(3))
        wait_until(lambda: worker.size_of(pod_of(third)) == "3")
        assert worker.reader.count(RAYCLUSTER) == 2
        assert metric(EVICTIONS) == evictions + 1
        assert worker.size_of(pod_of(first)) is None  # the least recently updated went
        assert worker.size_of(pod_of(second)) == "2"


def test_the_first_list_is_paginated(cluster: EmulatedCluster, tmp_path: Path) -> None:
    stored = [cluster.create(raycluster(f"rc{i}", worker_group("small-group", i))) for i in range(5)]
    lists = cluster.requests("list", RAYCLUSTERS)
    with AgentRun(cluster, KUEUE, tmp_path, settings=dataclasses.replace(FAST, page_size=2)) as running:
        assert cluster.requests("list", RAYCLUSTERS) - lists == 3  # 2 + 2 + 1
        assert [running.worker.size_of(pod_of(rc)) for rc in stored] == ["1", "2", "3", "4", "5"]


def test_readiness_and_kinds_the_cluster_does_not_serve(tmp_path: Path) -> None:
    with EmulatedCluster([KARTAS]) as no_kuberay, AgentRun(no_kuberay, KUEUE, tmp_path) as running:
        assert running.worker.readiness() == (True, "cluster agent: synced")  # the Ray CRDs are not installed
        assert running.worker.reader.count(RAYCLUSTER) == 0


def test_not_ready_until_every_watched_kind_is_listed(cluster: EmulatedCluster, tmp_path: Path) -> None:
    # The scheduler's group objects are watched too (whether one of a cluster's name is someone else's).
    cluster.fail_next("list", COSCHEDULING_PODGROUPS, 500, times=1000)
    with AgentRun(cluster, Config(), tmp_path, wait_ready=False) as running:
        wait_until(lambda: "injected 500" in running.worker.readiness()[1])
        ready, reason = running.worker.readiness()
        assert not ready
        assert reason.startswith("cluster agent: owners: PodGroup.scheduling.x-k8s.io: waiting for the first list")
        cluster.clear_faults()
        wait_until(lambda: running.worker.readiness() == (True, "cluster agent: synced"))


def test_workers_plan_with_the_definitions_the_agent_publishes(cluster: EmulatedCluster, tmp_path: Path) -> None:
    """A cluster Karta changes how a RayCluster is sized: workers re-plan, no relist is needed."""
    with AgentRun(cluster, KUEUE, tmp_path) as running:
        worker = running.worker
        stored = cluster.create(raycluster("rc", worker_group("small-group", 2)))
        wait_until(lambda: worker.size_of(pod_of(stored)) == "3")
        relists = metric(RELISTS, resource="RayCluster.ray.io", reason="definitions")
        before = worker.definitions.version
        # A cluster Karta whose RayCluster definition counts two head pods: every size grows by one.
        cluster.create(raycluster_karta("two-heads", head_pods=2))
        wait_until(lambda: worker.size_of(pod_of(stored)) == "4")
        assert worker.definitions.version != before
        assert [k["metadata"]["name"] for k in worker.reader.definitions()[1]] == ["two-heads"]
        assert metric(RELISTS, resource="RayCluster.ray.io", reason="definitions") == relists


def test_agent_without_cluster_features(cluster: EmulatedCluster, tmp_path: Path) -> None:
    config = parse_config({"cluster": {"watchKartas": False, "ownerCache": False}}, "test")
    with AgentRun(cluster, config, tmp_path / "none") as running:
        assert running.agent.owners is None and running.agent.kartas is None and running.agent.elector is None
    assert cluster.requests("list", RAYCLUSTERS) == 0
    assert cluster.requests("list", RAYSERVICES) == 0

    only_kartas = parse_config({"cluster": {"ownerCache": False}}, "test")
    with AgentRun(cluster, only_kartas, tmp_path / "kartas"):
        assert cluster.requests("list", KARTAS) == 1
        assert cluster.requests("list", RAYCLUSTERS) == 0
