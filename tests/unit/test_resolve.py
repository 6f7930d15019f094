"""Resolving workloads through definitions: Karta's alignment semantics, locations, subtree scale."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.builders import children, minimal
from webhook.karta.load import builtin_definitions
from webhook.karta.model import GVK
from webhook.karta.parse import parse_definition
from webhook.karta.resolve import Scale, WorkloadResolver
from webhook.kube.fieldpath import format_path


def resolver_for(kind: str) -> WorkloadResolver:
    (definition,) = [d for d in builtin_definitions() if d.root_kind.kind == kind]
    return WorkloadResolver(definition)


def rayservice(*groups: dict[str, Any], autoscaling: bool | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "headGroupSpec": {"template": {"spec": {"containers": [{"name": "head", "image": "ray"}]}}},
        "workerGroupSpecs": [
            {"template": {"spec": {"containers": [{"name": "w", "image": "ray"}]}}, **g} for g in groups
        ],
    }
    if autoscaling is not None:
        config["enableInTreeAutoscaling"] = autoscaling
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "svc", "namespace": "ml"},
        "spec": {"rayClusterConfig": config},
    }


def test_worker_groups_resolve_with_scale_and_locations() -> None:
    obj = rayservice(
        {"groupName": "small", "replicas": 2, "minReplicas": 1, "maxReplicas": 5},
        {"groupName": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 3},
    )
    workload = resolver_for("RayService").resolve(obj)
    assert workload.all_errors() == []
    small, gpu = workload.components["worker"].instances
    assert (small.id, small.scale) == ("small", Scale(2, 1, 5))
    assert (gpu.id, gpu.scale) == ("gpu", Scale(0, 0, 3))
    assert format_path(gpu.location or ()) == "spec.rayClusterConfig.workerGroupSpecs[1]"
    assert (
        format_path(gpu.field_location("maxReplicas") or ()) == "spec.rayClusterConfig.workerGroupSpecs[1].maxReplicas"
    )
    assert format_path(gpu.id_location or ()) == "spec.rayClusterConfig.workerGroupSpecs[1].groupName"
    assert gpu.pod is not None and gpu.pod.spec is not None
    assert format_path(gpu.pod.spec_location or ()) == "spec.rayClusterConfig.workerGroupSpecs[1].template.spec"
    (head,) = workload.components["head"].instances
    assert head.id == "" and head.scale == Scale(1, None, None)
    assert workload.components["raycluster"].instances[0].pod is None
    assert not workload.autoscaling


def test_missing_replicas_start_at_min_like_kuberay() -> None:
    workload = resolver_for("RayService").resolve(rayservice({"groupName": "a", "minReplicas": 3, "maxReplicas": 5}))
    (instance,) = workload.components["worker"].instances
    assert instance.scale == Scale(3, 3, 5)


def test_multi_host_groups_count_pods() -> None:
    obj = rayservice({"groupName": "tpu", "replicas": 2, "minReplicas": 1, "maxReplicas": 3, "numOfHosts": 4})
    (instance,) = resolver_for("RayService").resolve(obj).components["worker"].instances
    assert instance.scale == Scale(8, 4, 12)
    assert instance.pods_per_replica == 4
    # A computed value has no field of its own: the location falls back to the group.
    # In pods, but still read from the field: the path points at what the user wrote.
    assert (
        format_path(instance.field_location("replicas") or ()) == "spec.rayClusterConfig.workerGroupSpecs[0].replicas"
    )


def test_multi_host_default_max_is_capped_at_int32() -> None:
    obj = rayservice({"groupName": "tpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2147483647, "numOfHosts": 4})
    workload = resolver_for("RayService").resolve(obj)
    assert workload.all_errors() == []
    (instance,) = workload.components["worker"].instances
    assert instance.scale == Scale(4, 0, 2147483647)


@pytest.mark.parametrize("kind", ["RayService", "RayCluster", "RayJob"])
def test_suspended_hint_marks_suspended_groups_only(kind: str) -> None:
    groups = [
        {"groupName": "paused", "replicas": 2, "minReplicas": 1, "maxReplicas": 3, "suspend": True},
        {"groupName": "running", "replicas": 1, "minReplicas": 1, "maxReplicas": 3, "suspend": False},
        {"groupName": "plain", "replicas": 1, "minReplicas": 0, "maxReplicas": 3},
    ]
    cluster = rayservice(*groups)["spec"]["rayClusterConfig"]
    spec = {"RayService": {"rayClusterConfig": cluster}, "RayCluster": cluster, "RayJob": {"rayClusterSpec": cluster}}
    obj = {"apiVersion": "ray.io/v1", "kind": kind, "metadata": {"name": "x"}, "spec": spec[kind]}
    workload = resolver_for(kind).resolve(obj)
    assert workload.all_errors() == []
    assert [(i.id, i.suspended) for i in workload.components["worker"].instances] == [
        ("paused", True),
        ("running", False),
        ("plain", False),
    ]


def test_autoscaling_hint() -> None:
    workload = resolver_for("RayService").resolve(rayservice({"groupName": "a"}, autoscaling=True))
    assert workload.autoscaling


def test_subtree_scale_is_the_whole_cluster() -> None:
    obj = rayservice(
        {"groupName": "gpu", "replicas": 4, "minReplicas": 2, "maxReplicas": 8},
        {"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 8},
        {"groupName": "idle", "replicas": 0, "minReplicas": 0, "maxReplicas": 8},
    )
    workload = resolver_for("RayService").resolve(obj)
    # Karta's effMin: min if > 0 else replicas if > 0; head 1 + gpu 2 + cpu 1 + idle 0.
    assert workload.subtree_scale("raycluster") == 4
    assert workload.subtree_scale("rayservice") == 4
    assert workload.subtree_scale("worker") == 3
    assert workload.subtree_scale("worker", "gpu") == 2
    assert workload.subtree_scale("head") == 1


def test_raycluster_catalog_example() -> None:
    # reference/karta.md §3.1: groups gpu {replicas 4, min 2} and cpu {replicas 1}: 1 + 2 + 1.
    obj = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "c"},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "h"}]}}},
            "workerGroupSpecs": [
                {"groupName": "gpu", "replicas": 4, "minReplicas": 2, "template": {}},
                {"groupName": "cpu", "replicas": 1, "template": {}},
            ],
        },
    }
    assert resolver_for("RayCluster").resolve(obj).subtree_scale("raycluster") == 4


def test_rayjob_with_cluster_selector_has_no_cluster() -> None:
    obj = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "j"},
           "spec": {"clusterSelector": {"ray.io/cluster": "shared"}}}  # fmt: skip
    workload = resolver_for("RayJob").resolve(obj)
    assert workload.all_errors() == []
    assert workload.components["worker"].instances == ()
    (head,) = workload.components["head"].instances
    assert head.pod is None


def generic(**worker_scale: str) -> WorkloadResolver:
    d = minimal()
    children(d)[0]["scaleDefinition"] = worker_scale
    return WorkloadResolver(parse_definition(d, "t"))


def job(*groups: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"groups": [{"template": {"spec": {"containers": [{}]}}, **g} for g in groups]}}  # fmt: skip


def test_stream_form_default_misaligns_as_in_karta() -> None:
    workload = generic(replicasPath=".spec.groups[].replicas // 1").resolve(
        job({"name": "a", "replicas": 2}, {"name": "b"}, {"name": "c", "replicas": 0})
    )
    (error,) = workload.components["worker"].errors
    assert "instance ids count (3) does not match results count (2)" in error
    assert all(i.scale is None for i in workload.components["worker"].instances)


def test_per_element_form_keeps_alignment() -> None:
    workload = generic(replicasPath=".spec.groups[]? | (.replicas // 1)").resolve(
        job({"name": "a", "replicas": 2}, {"name": "b"}, {"name": "c", "replicas": 0})
    )
    assert [i.scale.replicas for i in workload.components["worker"].instances if i.scale] == [2, 1, 0]


def test_scale_lists_are_padded_to_the_longest() -> None:
    workload = generic(replicasPath=".spec.groups[]?.replicas", minReplicasPath="1").resolve(
        job({"name": "a", "replicas": 2}, {"name": "b", "replicas": 3})
    )
    # min has one output for two instances: padded with nil, then the longest (2) matches the ids.
    scales = [i.scale for i in workload.components["worker"].instances]
    assert scales == [Scale(2, 1, None), Scale(3, None, None)]
    assert workload.all_errors() == []


def test_instance_ids_must_be_non_empty_strings() -> None:
    empty = generic(replicasPath=".spec.groups[]?.replicas").resolve(job({"replicas": 1}))
    assert "instance id path contained empty string values" in empty.all_errors()[0]
    number = generic(replicasPath=".spec.groups[]?.replicas").resolve(job({"name": 5, "replicas": 1}))
    assert "as a string" in number.all_errors()[0]


def test_duplicate_ids_collapse_last_wins() -> None:
    workload = generic(replicasPath=".spec.groups[]?.replicas").resolve(
        job({"name": "a", "replicas": 1}, {"name": "a", "replicas": 5})
    )
    worker = workload.components["worker"]
    assert worker.duplicate_ids == ("a",)
    assert len(worker.instances) == 2
    assert worker.by_id()["a"].scale == Scale(5, None, None)
    assert workload.subtree_scale("job") == 5


def test_non_integer_replicas_are_an_error() -> None:
    workload = generic(replicasPath=".spec.groups[]?.replicas").resolve(job({"name": "a", "replicas": "2"}))
    assert "replicasPath: cannot use 2 (string) as an integer" in workload.all_errors()[0]
    workload = generic(replicasPath=".spec.groups[]?.replicas").resolve(job({"name": "a", "replicas": 2.5}))
    assert "2.5" in workload.all_errors()[0]


def test_single_instance_path_must_give_exactly_one_output() -> None:
    d = minimal()
    d["spec"]["structureDefinition"]["childComponents"].append(
        {"name": "driver", "ownerRef": "job", "specDefinition": {"podTemplateSpecPath": ".spec.drivers[]?"}}
    )
    resolver = WorkloadResolver(parse_definition(d, "t"))
    none = resolver.resolve({**job(), "spec": {"groups": [], "drivers": []}})
    assert any("instance ids count (1) does not match results count (0)" in e for e in none.all_errors())


def test_leaf_count_without_any_scale_definition() -> None:
    d = minimal()
    children(d)[0].pop("scaleDefinition")
    workload = WorkloadResolver(parse_definition(d, "t")).resolve(job({"name": "a"}, {"name": "b"}))
    assert workload.subtree_scale("job") == 2  # the leaf with an instanceIdPath counts once per id


def test_object_of_another_kind_is_reported() -> None:
    workload = resolver_for("RayService").resolve({**rayservice(), "kind": "RayCluster"})
    assert "does not match the definition's root kind" in workload.errors[0]


def test_input_is_not_modified() -> None:
    obj = rayservice({"groupName": "a", "replicas": 1})
    before = copy.deepcopy(obj)
    resolver_for("RayService").resolve(obj)
    assert obj == before


@pytest.mark.parametrize("kind", ["RayService", "RayCluster", "RayJob"])
def test_definition_root_kinds(kind: str) -> None:
    assert resolver_for(kind).definition.root_kind == GVK("ray.io", "v1", kind)


def test_fragmented_pod_spec_is_assembled_per_instance() -> None:
    d = minimal()
    children(d)[0]["specDefinition"] = {
        "fragmentedPodSpecDefinition": {
            "containerPath": ".spec.groups[]?.main",
            "schedulerNamePath": ".spec.groups[]?.scheduler",
            "nodeAffinityPath": ".spec.groups[]?.placement",
            "labelsPath": ".spec.groups[]?.podLabels",
        }
    }
    resolver = WorkloadResolver(parse_definition(d, "t"))
    obj = job(
        {"name": "a", "main": {"name": "c", "image": "i"}, "scheduler": "volcano",
         "placement": {"requiredDuringSchedulingIgnoredDuringExecution": {}}, "podLabels": {"x": "1"}},
        {"name": "b", "main": {"name": "d"}, "scheduler": None, "placement": None, "podLabels": None},
    )  # fmt: skip
    workload = resolver.resolve(obj)
    assert workload.all_errors() == []
    a, b = workload.components["worker"].instances
    assert a.pod is not None and b.pod is not None
    assert a.pod.spec == {
        "containers": [{"name": "c", "image": "i"}],
        "schedulerName": "volcano",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
    }
    assert a.pod.metadata == {"labels": {"x": "1"}}
    assert b.pod.spec == {"containers": [{"name": "d"}], "schedulerName": None, "affinity": {"nodeAffinity": None}}
    assert a.pod.spec_location is None


def test_fragmented_resources_stand_in_for_a_container() -> None:
    d = minimal()
    children(d)[0]["specDefinition"] = {"fragmentedPodSpecDefinition": {"resourcesPath": ".spec.groups[]?.res"}}
    workload = WorkloadResolver(parse_definition(d, "t")).resolve(job({"name": "a", "res": {"limits": {"x": "1"}}}))
    (a,) = workload.components["worker"].instances
    assert a.pod is not None and a.pod.spec == {"containers": [{"name": "", "resources": {"limits": {"x": "1"}}}]}
    assert a.pod.metadata is None
