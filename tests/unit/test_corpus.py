"""KubeRay's own samples: every one resolves as KubeRay computes it, and none is denied."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.builders import INT32_MAX, kuberay_desired_pods
from tests.corpus import EXPECTED_RAY_OBJECTS, ray_object_params, ray_objects
from webhook.config import build_evaluator, parse_config
from webhook.gang import GangError, gang_of
from webhook.karta.registry import DefinitionSet
from webhook.kube.defaults import CRDDefaults
from webhook.policy.model import KUBERAY_FEATURE_GATES, Severity

CHECKER = build_evaluator(parse_config({}, "test"), DefinitionSet.builtin())
CLUSTER_SPEC = {"RayService": ("rayClusterConfig",), "RayCluster": (), "RayJob": ("rayClusterSpec",)}


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj["spec"]
    for key in CLUSTER_SPEC[obj["kind"]]:
        spec = spec.get(key)
        if spec is None:
            return None
    return spec  # type: ignore[no-any-return]


def kuberay_pods(group: dict[str, Any], field: str) -> int:
    """A group's replicas/min/max in pods, the way KubeRay counts them (reference/kuberay.md §3)."""
    hosts = int(group.get("numOfHosts", 1))
    value = group.get(field)
    if field == "replicas" and value is None:
        value = group.get("minReplicas", 0)
    assert isinstance(value, int)
    return min(value * hosts, INT32_MAX)


def assert_gang_like_kuberay(workload: Any, groups: list[dict[str, Any]], *, autoscaling: bool) -> None:
    gang = gang_of(workload)
    assert [t.name for t in gang.tasks] == ["headgroup", *(g["groupName"] for g in groups)]
    head, *workers = gang.tasks
    assert (head.pods, head.minimum) == (1, 1)
    for group, task in zip(groups, workers, strict=True):
        assert task.pods == kuberay_desired_pods(group)
        if autoscaling:
            # KubeRay's status.minWorkerReplicas counts minReplicas × numOfHosts of non-suspended groups.
            expected = 0 if group.get("suspend") else group.get("minReplicas", 0) * group.get("numOfHosts", 1)
            assert task.minimum == min(expected, task.pods)
        else:
            assert task.minimum == task.pods
    assert gang.pods == 1 + sum(kuberay_desired_pods(g) for g in groups)


def test_corpus_holds_every_ray_object() -> None:
    assert len(list(ray_objects())) == EXPECTED_RAY_OBJECTS


@pytest.mark.parametrize(("path", "raw"), ray_object_params())
def test_sample_resolves_like_kuberay_and_is_not_denied(path: str, raw: dict[str, Any]) -> None:
    obj = CRDDefaults.packaged().apply(raw)
    compiled = CHECKER.definition_for(obj)
    assert compiled is not None
    workload = compiled.resolve(obj)
    assert workload.all_errors() == []
    spec = cluster_spec(obj)
    groups = (spec or {}).get("workerGroupSpecs") or []
    workers = workload.components["worker"].instances
    assert [w.id for w in workers] == [g["groupName"] for g in groups]
    for group, worker in zip(groups, workers, strict=True):
        assert worker.scale is not None
        assert worker.scale.replicas == kuberay_pods(group, "replicas")
        assert worker.scale.min_replicas == kuberay_pods(group, "minReplicas")
        assert worker.scale.max_replicas == kuberay_pods(group, "maxReplicas")
        assert worker.pods_per_replica == group["numOfHosts"]
    (head,) = workload.components["head"].instances
    assert (head.pod is not None) == (spec is not None)
    # The gang: the head and every worker group's effective minimum, in pods.
    expected_gang = 1 + sum(kuberay_pods(g, "minReplicas") or kuberay_pods(g, "replicas") for g in groups)
    member = "raycluster"
    assert workload.subtree_scale(member) == expected_gang
    if obj["kind"] == "RayCluster":
        assert_gang_like_kuberay(workload, groups, autoscaling=obj["spec"].get("enableInTreeAutoscaling") is True)
    else:
        with pytest.raises(GangError, match="does not own its pods directly"):
            gang_of(workload)  # a RayService's or RayJob's pods belong to the RayCluster it creates

    verdict = CHECKER.verdict(obj)
    assert verdict is not None and verdict.allowed
    assert [v for v in verdict.violations if v.severity is Severity.DENY] == []


def test_corpus_warnings_are_the_expected_few() -> None:
    """The samples are real: the only findings are advisory (GPU taint tolerations, and the samples of alpha
    features whose KubeRay feature gate is off by default)."""
    rules: set[str] = set()
    gated: set[str] = set()
    for name, raw in ray_objects():
        verdict = CHECKER.verdict(CRDDefaults.packaged().apply(raw))
        assert verdict is not None
        rules.update(v.rule for v in verdict.violations)
        gated.update(name for v in verdict.violations if v.rule == "ray-feature-gate")
    assert rules <= {"gpu-toleration", "gpu-on-head", "gpu-node-selector", "ray-feature-gate"}
    if "KARTA_CORPUS" not in os.environ:
        assert gated == {
            "ray-cluster.embedded-gcs-ft.yaml",
            "ray-cluster.historyserver.yaml",
            "ray-cluster.mtls.yaml",
            "ray-cluster.network-policy-deny-all.yaml",
        }


def test_corpus_is_clean_with_every_kuberay_feature_gate_on() -> None:
    gates = dict.fromkeys(KUBERAY_FEATURE_GATES, True)
    checker = build_evaluator(parse_config({"kuberay": {"featureGates": gates}}, "test"), DefinitionSet.builtin())
    for name, raw in ray_objects():
        verdict = checker.verdict(CRDDefaults.packaged().apply(raw))
        assert verdict is not None
        assert [v for v in verdict.violations if v.rule.startswith("ray-")] == [], name
