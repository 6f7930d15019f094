"""The group-object controller and Pod admission together, through the API emulator.

RayCluster created → its PodGroup appears with the right size → its pods, admitted with the owner
cache fed by the same API, name that PodGroup → a spec change resizes it → each RayCluster of a
RayService upgrade has its own → without the scheduler's CRD no keys at all; and no API request per pod.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.agents import LEASE_NAMESPACE, AgentRun
from tests.cluster.emulator import (
    ALL,
    COSCHEDULING_PODGROUPS,
    KAI_PODGROUPS,
    RAYCLUSTERS,
    VOLCANO_PODGROUPS,
    EmulatedCluster,
    Kind,
    metric,
    pod_of,
    raycluster,
    wait_until,
    worker_group,
)
from tests.crds import all_problems
from webhook.admission import Outcome
from webhook.cluster.agent import LEASE_NAME
from webhook.cluster.podgroups import GroupObjectController, updated_object
from webhook.config import Config, build_evaluator, parse_config
from webhook.gang import MANAGED_BY, MANAGED_BY_LABEL

KINDS = {"coscheduling": COSCHEDULING_PODGROUPS, "volcano": VOLCANO_PODGROUPS, "kai": KAI_PODGROUPS}
# Where each scheduler's pods name their group object.
POD_KEY = {
    "coscheduling": ("labels", "scheduling.x-k8s.io/pod-group"),
    "volcano": ("annotations", "scheduling.k8s.io/group-name"),
    "kai": ("annotations", "pod-group-name"),
}
CRD_SERVED = "karta_admission_gang_crd_served"


class Running:
    """An agent (its group-object controller and owner mirror) and a worker reading its state."""

    def __init__(self, cluster: EmulatedCluster, config: Config, state_dir: Path) -> None:
        self.cluster = cluster
        self.config = config
        self.run = AgentRun(cluster, config, state_dir)
        assert self.run.agent.podgroups is not None and self.run.agent.owners is not None
        self.controller = self.run.agent.podgroups
        self.owners = self.run.agent.owners
        self.worker = self.run.worker

    def __enter__(self) -> Running:
        self.run.__enter__()
        wait_until(lambda: self.controller.readiness()[0], message="first lists")
        return self

    def __exit__(self, *exc: object) -> None:
        self.run.__exit__(*exc)

    def admit(self, pod: dict[str, Any]) -> tuple[dict[str, Any], Outcome]:
        return self.worker.mutate(pod)

    def group_objects(self, kind: Kind) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in self.cluster.objects(kind)}


def patched_pod(running: Running, stored: dict[str, Any]) -> Callable[[], dict[str, Any] | None]:
    def attempt() -> dict[str, Any] | None:
        pod, outcome = running.admit(pod_of(stored))
        return pod if outcome.verdict == "patched" else None

    return attempt


def configured(scheduler: str) -> Config:
    return parse_config({"gang": {"scheduler": scheduler}}, "test")


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


def group_name(scheduler: str, cluster_name: str) -> str:
    return f"ray-{cluster_name}-pg" if scheduler == "volcano" else cluster_name


@pytest.mark.parametrize("scheduler", ["coscheduling", "volcano", "kai"])
def test_cluster_group_object_pods_and_resize(cluster: EmulatedCluster, scheduler: str, tmp_path: Path) -> None:
    kind = KINDS[scheduler]
    with Running(cluster, configured(scheduler), tmp_path) as running:
        stored = cluster.create(raycluster("rc", worker_group("small-group", 2), namespace="team"))
        name = group_name(scheduler, "rc")
        group = wait_until(lambda: running.group_objects(kind).get(name), message="the group object")
        assert all_problems(group) == []
        assert group["spec"]["minMember"] == 3  # head + 2 workers
        assert group["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
        (owner,) = group["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "RayCluster", "rc", stored["metadata"]["uid"], True,
        )  # fmt: skip

        wait_until(lambda: running.admit(pod_of(stored))[1].verdict == "patched", message="the owner cache")
        before = cluster.total_requests()
        section, key = POD_KEY[scheduler]
        for node_type, worker in (("head", "headgroup"), ("worker", "small-group"), ("worker", "small-group")):
            pod, outcome = running.admit(pod_of(stored, node_type, worker))
            assert pod["metadata"][section][key] == name, outcome.notes
            assert pod["metadata"]["annotations"]["karta-admission.io/pod-group-size"] == "3"
            assert pod["spec"]["schedulerName"] == running.controller.scheduler.scheduler_name
        assert cluster.total_requests() == before  # no API request per pod

        # The cluster grows: the group object follows, and new pods carry the new size.
        cluster.patch(stored, {"spec": raycluster("rc", worker_group("small-group", 5))["spec"]})
        wait_until(lambda: running.group_objects(kind)[name]["spec"]["minMember"] == 6, message="the resize")
        assert all_problems(running.group_objects(kind)[name]) == []
        wait_until(lambda: running.admit(pod_of(stored))[0]["metadata"]["annotations"].get(
            "karta-admission.io/pod-group-size") == "6")  # fmt: skip


def test_each_cluster_of_a_rayservice_upgrade_has_its_own_group(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with Running(cluster, configured("coscheduling"), tmp_path) as running:
        service = cluster.create({
            "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "svc", "namespace": "ml"},
            "spec": {"rayClusterConfig": raycluster("x", worker_group("small-group", 4))["spec"]},
        })  # fmt: skip
        active = cluster.create(raycluster("svc-x7k2p", worker_group("small-group", 2), namespace="ml", owner=service))
        pending = cluster.create(
            raycluster("svc-b9d4q", worker_group("small-group", 4), worker_group("gpu", 1, min_replicas=1),
                       namespace="ml", owner=service)
        )  # fmt: skip
        wait_until(lambda: len(running.group_objects(COSCHEDULING_PODGROUPS)) == 2, message="two PodGroups")
        groups = running.group_objects(COSCHEDULING_PODGROUPS)
        assert {n: g["spec"]["minMember"] for n, g in groups.items()} == {"svc-x7k2p": 3, "svc-b9d4q": 6}
        assert groups["svc-b9d4q"]["metadata"]["ownerReferences"][0]["uid"] == pending["metadata"]["uid"]
        for stored, size in ((active, "3"), (pending, "6")):
            pod = wait_until(patched_pod(running, stored), message="the owner cache")
            assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == stored["metadata"]["name"]
            assert pod["metadata"]["annotations"]["karta-admission.io/pod-group-size"] == size


def test_without_the_crd_no_keys_until_it_is_installed(cluster: EmulatedCluster, tmp_path: Path) -> None:
    kinds = [k for k in ALL if k is not VOLCANO_PODGROUPS]
    with EmulatedCluster(kinds) as no_volcano, Running(no_volcano, configured("volcano"), tmp_path) as running:
        stored = no_volcano.create(raycluster("rc", worker_group("small-group", 2)))
        wait_until(lambda: running.worker.gangs.gang("default", {"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                                             "name": "rc"}).cluster is not None)  # fmt: skip
        pod, outcome = running.admit(pod_of(stored))
        assert outcome.gang_reason == "crd-missing" and outcome.verdict == "withheld"
        assert "scheduling.k8s.io/group-name" not in (pod["metadata"].get("annotations") or {})
        assert pod["spec"]["schedulerName"] == "default-scheduler"  # not sent to a scheduler that is not there
        assert metric(CRD_SERVED, resource="PodGroup.scheduling.volcano.sh") == 0
        for detail in (running.controller.detail(), running.owners.detail()):
            assert detail is not None and "does not serve scheduling.volcano.sh/v1beta1 PodGroup" in detail
        assert running.controller.readiness()[0]  # the webhook still serves; it says why in /readyz
        assert no_volcano.requests("create", VOLCANO_PODGROUPS) == 0

        # Volcano gets installed: the next look finds it, the PodGroup appears, pods get their keys.
        no_volcano.install(VOLCANO_PODGROUPS)
        wait_until(lambda: running.group_objects(VOLCANO_PODGROUPS).get("ray-rc-pg"), timeout=10)
        wait_until(lambda: running.admit(pod_of(stored))[1].verdict == "patched", timeout=10)
        assert running.controller.detail() is None and running.owners.detail() is None


def test_a_group_object_we_did_not_create_is_left_alone(cluster: EmulatedCluster, tmp_path: Path) -> None:
    """KubeRay's scheduler-plugins integration made PodGroup rc: not ours, never touched, pods defer."""
    kuberay_group = cluster.create({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "rc", "namespace": "default"}, "spec": {"minMember": 1},
    })  # fmt: skip
    with Running(cluster, configured("coscheduling"), tmp_path) as running:
        stored = cluster.create(raycluster("rc", worker_group("small-group", 2)))
        wait_until(running.controller.wanted, message="the controller's plan")
        wait_until(lambda: metric("karta_admission_group_objects_deferred_total") > 0, message="deferred")
        rounds = running.controller.rounds
        wait_until(lambda: running.controller.rounds > rounds + 3)
        (kept,) = cluster.objects(COSCHEDULING_PODGROUPS)
        assert kept["metadata"]["resourceVersion"] == kuberay_group["metadata"]["resourceVersion"]
        assert kept["spec"] == {"minMember": 1}
        assert cluster.requests(None, COSCHEDULING_PODGROUPS) == 0  # no replace
        assert cluster.requests("create", COSCHEDULING_PODGROUPS) == 1  # the test's own
        pod, _ = wait_until(lambda: (r := running.admit(pod_of(stored)))[1].gang_reason == "foreign-group-object"
                            and r)  # fmt: skip
        assert "scheduling.x-k8s.io/pod-group" not in pod["metadata"]["labels"]


def test_only_the_leader_writes_and_a_new_leader_catches_up(cluster: EmulatedCluster, tmp_path: Path) -> None:
    """Another replica holds the Lease: this agent plans but writes nothing until it takes the Lease over."""
    lease = cluster.create({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 3600,
                 "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    })  # fmt: skip
    with Running(cluster, configured("kai"), tmp_path) as running:
        cluster.create(raycluster("rc", worker_group("small-group", 2)))
        wait_until(running.controller.wanted, message="the controller's plan")
        rounds = running.controller.rounds
        wait_until(lambda: running.controller.rounds > rounds + 3)
        assert cluster.requests("create", KAI_PODGROUPS) == 0
        assert not running.run.agent.is_leader
        cluster.delete(lease)  # the other replica released it
        group = wait_until(lambda: running.group_objects(KAI_PODGROUPS).get("rc"), message="the new leader's write")
        assert group["spec"]["subGroups"] == [{"name": "headgroup", "minMember": 1},
                                              {"name": "small-group", "minMember": 2}]  # fmt: skip


def test_ours_changed_or_deleted_by_someone_is_put_back(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with Running(cluster, configured("coscheduling"), tmp_path) as running:
        cluster.create(raycluster("rc", worker_group("small-group", 2)))
        group = wait_until(lambda: running.group_objects(COSCHEDULING_PODGROUPS).get("rc"))
        cluster.patch(group, {"spec": {"minMember": 1}, "status": {"phase": "Running"}})
        fixed = wait_until(lambda: (g := running.group_objects(COSCHEDULING_PODGROUPS)["rc"])["spec"]["minMember"]
                           == 3 and g, timeout=10)  # fmt: skip
        assert fixed["status"] == {"phase": "Running"}  # what others write is kept
        cluster.delete(fixed)
        wait_until(lambda: (g := running.group_objects(COSCHEDULING_PODGROUPS).get("rc")) and g["metadata"]["uid"]
                   != fixed["metadata"]["uid"], timeout=10, message="re-created")  # fmt: skip


def test_a_field_no_longer_wanted_is_removed(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with Running(cluster, configured("volcano"), tmp_path) as running:
        labelled = raycluster("rc", worker_group("small-group", 2))
        labelled["metadata"]["labels"] = {"volcano.sh/queue-name": "research"}
        stored = cluster.create(labelled)
        wait_until(lambda: running.group_objects(VOLCANO_PODGROUPS).get("ray-rc-pg", {}).get("spec", {}).get("queue")
                   == "research")  # fmt: skip
        cluster.patch(stored, {"metadata": {"labels": {"volcano.sh/queue-name": None}}})
        wait_until(lambda: "queue" not in running.group_objects(VOLCANO_PODGROUPS)["ray-rc-pg"]["spec"])


def test_updated_object_keeps_what_others_own() -> None:
    current = {
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": "g", "namespace": "n", "resourceVersion": "7", "labels": {"team": "a"},
                     "annotations": {"karta-admission.io/managed-fields": "minMember,queue"},
                     "ownerReferences": [{"kind": "RayCluster", "name": "old", "uid": "u0", "controller": True},
                                         {"kind": "Other", "name": "x", "uid": "u9"}],
                     "managedFields": [{"manager": "x"}]},
        "spec": {"minMember": 2, "queue": "q", "minTaskMember": {"a": 1}},
        "status": {"phase": "Running"},
    }  # fmt: skip
    desired = {
        "metadata": {"labels": {MANAGED_BY_LABEL: MANAGED_BY},
                     "annotations": {"karta-admission.io/managed-fields": "minMember"},
                     "ownerReferences": [{"kind": "RayCluster", "name": "new", "uid": "u1", "controller": True}]},
        "spec": {"minMember": 5},
    }  # fmt: skip
    body = updated_object(current, desired)
    assert body["spec"] == {"minMember": 5, "minTaskMember": {"a": 1}}  # queue was ours, minTaskMember not
    assert body["status"] == {"phase": "Running"} and body["metadata"]["resourceVersion"] == "7"
    assert body["metadata"]["labels"] == {"team": "a", MANAGED_BY_LABEL: MANAGED_BY}
    assert [r["uid"] for r in body["metadata"]["ownerReferences"]] == ["u9", "u1"]
    assert "managedFields" not in body["metadata"]


def test_schedulers_without_group_objects_start_nothing(cluster: EmulatedCluster, tmp_path: Path) -> None:
    for scheduler in ("kueue", "yunikorn", "custom", "none"):
        extra = {"custom": {"labels": {"example.com/g": "{group}"}}} if scheduler == "custom" else {}
        config = parse_config({"gang": {"scheduler": scheduler, **extra}}, "test")
        controller = GroupObjectController(build_evaluator(config).store, config.gang, config.mode, cluster.client())
        controller.start()
        try:
            assert controller.readiness() == (True, f"group objects: none needed for {scheduler} (mode enforce)")
        finally:
            controller.stop()
    assert cluster.requests("list", RAYCLUSTERS) == 0
