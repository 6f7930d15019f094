"""Pod-side Karta semantics: component inference, instance ids, group keys, effective members."""

from __future__ import annotations

from typing import Any

from tests.builders import children, minimal
from webhook.karta.load import builtin_definitions
from webhook.karta.parse import parse_definition
from webhook.karta.pods import PodClassifier


def ray_classifier(kind: str = "RayCluster") -> PodClassifier:
    (definition,) = [d for d in builtin_definitions() if d.root_kind.kind == kind]
    return PodClassifier(definition)


def ray_pod(node_type: str, group: str | None = None, cluster: str | None = "svc-abcde") -> dict[str, Any]:
    labels = {"ray.io/node-type": node_type, "ray.io/is-ray-node": "yes"}
    if group:
        labels["ray.io/group"] = group
    if cluster:
        labels["ray.io/cluster"] = cluster
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "x-", "labels": labels}, "spec": {}}


def test_worker_pod_is_claimed_with_its_group_and_cluster_key() -> None:
    claim = ray_classifier().classify(ray_pod("worker", "gpu-group"))
    assert claim is not None
    assert (claim.component, claim.instance_id) == ("worker", "gpu-group")
    assert claim.grouping is not None
    # The root is the member: the whole cluster is one gang.
    assert claim.grouping.effective_component == "raycluster"
    assert claim.grouping.keys == ("svc-abcde",)
    assert claim.group_name == "svc-abcde"
    assert claim.errors == ()


def test_head_pod_groups_with_its_workers() -> None:
    head = ray_classifier("RayService").classify(ray_pod("head", "headgroup"))
    worker = ray_classifier("RayService").classify(ray_pod("worker", "small"))
    assert head is not None and worker is not None
    assert head.component == "head" and head.instance_id is None
    assert head.group_name == worker.group_name == "svc-abcde"
    assert head.grouping is not None and head.grouping.effective_component == "raycluster"


def test_upgrade_clusters_are_separate_groups() -> None:
    classifier = ray_classifier("RayService")
    active = classifier.classify(ray_pod("worker", "small", cluster="svc-aaaaa"))
    pending = classifier.classify(ray_pod("worker", "small", cluster="svc-bbbbb"))
    assert active is not None and pending is not None
    assert active.group_name != pending.group_name


def test_pods_of_other_workloads_are_not_claimed() -> None:
    assert ray_classifier().classify({"metadata": {"labels": {"app": "web"}}}) is None
    assert ray_classifier().classify({"metadata": {}}) is None


def test_missing_group_label_is_an_error_not_a_crash() -> None:
    claim = ray_classifier().classify(ray_pod("worker", "gpu", cluster=None))
    assert claim is not None
    assert claim.group_name is None
    assert any("query result is empty" in e for e in claim.errors)


def generic_classifier(**member: Any) -> PodClassifier:
    d = minimal()
    children(d).append({
        "name": "driver", "ownerRef": "job", "specDefinition": {"podTemplateSpecPath": ".spec.driver"},
        "podSelector": {"componentTypeSelector": {"matchLabels": {"role": "driver"}}},
    })  # fmt: skip
    d["spec"]["optimizationInstructions"]["gangScheduling"]["podGroups"][0]["members"] = [member]
    return PodClassifier(parse_definition(d, "t"))


def pod(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels}}


def test_match_labels_and_key_path_selectors() -> None:
    classifier = generic_classifier(componentName="job", groupByKeyPaths=['.metadata.labels["job"]'])
    driver = classifier.classify(pod({"role": "driver", "job": "j1"}))
    worker = classifier.classify(pod({"role": "worker", "group": "g", "job": "j1"}))
    assert driver is not None and driver.component == "driver"
    assert worker is not None and worker.component == "worker" and worker.instance_id == "g"


def test_filters_choose_the_member() -> None:
    classifier = generic_classifier(
        componentName="worker",
        groupByKeyPaths=['.metadata.labels["job"]'],
        filters=['.metadata.labels["gang"] == "yes"'],
    )
    grouped = classifier.classify(pod({"role": "worker", "group": "g", "job": "j", "gang": "yes"}))
    ungrouped = classifier.classify(pod({"role": "worker", "group": "g", "job": "j"}))
    assert grouped is not None and grouped.grouping is not None and grouped.grouping.effective_component == "worker"
    assert ungrouped is not None and ungrouped.grouping is None


def test_constant_and_numeric_keys_are_stringified_like_go() -> None:
    classifier = generic_classifier(componentName="job", groupByKeyPaths=['"gpu"', ".metadata.index"])
    claim = classifier.classify({"metadata": {"labels": {"role": "driver"}, "index": 3}})
    assert claim is not None and claim.grouping is not None
    assert claim.grouping.keys == ("gpu", "3")
    assert claim.group_name == "gpu-3"


def test_multiple_key_outputs_are_an_error() -> None:
    classifier = generic_classifier(componentName="job", groupByKeyPaths=[".metadata.labels[]"])
    claim = classifier.classify(pod({"role": "driver", "a": "1"}))
    assert claim is not None and any("expected single query result, got 2" in e for e in claim.errors)


def test_single_leaf_claims_any_pod() -> None:
    d = minimal()
    classifier = PodClassifier(parse_definition(d, "t"))
    claim = classifier.classify(pod({"job": "x"}))
    assert claim is not None and claim.component == "worker"
