"""Every policy rule with passing and failing inputs, through the real definitions."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.builders import GPU, TOLERATE, W0, check, container, found, gpu_worker, service
from webhook.config import build_evaluator, parse_config
from webhook.karta.registry import DefinitionSet
from webhook.policy.engine import demote_existing, evaluate
from webhook.policy.model import Severity
from webhook.policy.registry import BUILTIN_RULES


def test_clean_service_has_no_violations() -> None:
    assert check(service([{}])) == []


class TestScale:
    def test_replicas_above_max_denied(self) -> None:
        assert found(service([{"replicas": 10, "maxReplicas": 5}]), "replicas-within-bounds") == [
            ("deny", f"{W0}.replicas")
        ]
        (v,) = [v for v in check(service([{"replicas": 10, "maxReplicas": 5}])) if v.rule == "replicas-within-bounds"]
        assert "replicas 10 is above maxReplicas 5; KubeRay would run 5" in v.message
        assert 'worker group "small"' in v.message

    def test_replicas_below_min_denied(self) -> None:
        assert found(service([{"replicas": 1, "minReplicas": 2}]), "replicas-within-bounds") == [
            ("deny", f"{W0}.replicas")
        ]

    def test_replicas_zero_below_min_is_what_kuberay_runs_as_meant(self) -> None:
        # An omitted replicas is stored as 0 (CRD default); KubeRay starts minReplicas pods. Not denied.
        obj = service([{"replicas": 0, "minReplicas": 1}])
        assert [v for v in check(obj) if v.severity is Severity.DENY] == []
        assert found(obj, "replicas-within-bounds") == []

    def test_suspended_group_gets_no_would_run_message(self) -> None:
        obj = service([{"replicas": 10, "maxReplicas": 5, "suspend": True}])
        assert found(obj, "replicas-within-bounds") == []

    def test_defaulted_min_is_not_reported_against_a_negative_max(self) -> None:
        # The user wrote only maxReplicas: -1 (minReplicas is the default 0): one fact, one violation.
        violations = check(service([{"replicas": 0, "minReplicas": 0, "maxReplicas": -1}]))
        assert [(v.rule, v.path) for v in violations] == [("non-negative-scale", f"{W0}.maxReplicas")]
        assert "maxReplicas -1 is negative" in violations[0].message
        assert "minReplicas 0" not in violations[0].message

    def test_negative_replicas_is_one_violation(self) -> None:
        violations = check(service([{"replicas": -1, "minReplicas": 1}]))
        assert [(v.rule, v.path) for v in violations] == [("non-negative-scale", f"{W0}.replicas")]
        assert violations[0].message.endswith("replicas -1 is negative; KubeRay would run 1")

    def test_only_a_warning_under_the_autoscaler(self) -> None:
        obj = service([{"replicas": 10, "maxReplicas": 5}], enableInTreeAutoscaling=True)
        assert found(obj, "replicas-within-bounds") == [("warn", f"{W0}.replicas")]

    def test_configured_warn(self) -> None:
        obj = service([{"replicas": 10, "maxReplicas": 5}])
        assert found(obj, "replicas-within-bounds", {"rules": {"replicas-within-bounds": "warn"}}) == [
            ("warn", f"{W0}.replicas")
        ]
        assert found(obj, "replicas-within-bounds", {"rules": {"replicas-within-bounds": "off"}}) == []

    def test_within_bounds_passes(self) -> None:
        assert found(service([{"replicas": 5, "minReplicas": 5, "maxReplicas": 5}]), "replicas-within-bounds") == []

    def test_multi_host_message_speaks_in_replicas(self) -> None:
        obj = service([{"replicas": 3, "maxReplicas": 2, "numOfHosts": 4}])
        (v,) = [v for v in check(obj) if v.rule == "replicas-within-bounds"]
        assert "replicas 3 (12 pods at 4 per replica) is above maxReplicas 2 (8 pods at 4 per replica)" in v.message
        assert v.path == f"{W0}.replicas"  # the field, even when counted in pods

    def test_min_above_max(self) -> None:
        obj = service([{"replicas": 3, "minReplicas": 4, "maxReplicas": 2}])
        assert found(obj, "min-not-above-max") == [("deny", f"{W0}.minReplicas")]
        # The range rule stays quiet: there is no valid range to be in.
        assert found(obj, "replicas-within-bounds") == []

    def test_negative_values(self) -> None:
        obj = service([{"replicas": -1, "minReplicas": -2, "maxReplicas": 5}])
        assert sorted(found(obj, "non-negative-scale")) == [("deny", f"{W0}.minReplicas"), ("deny", f"{W0}.replicas")]

    def test_num_of_hosts_zero(self) -> None:
        assert found(service([{"numOfHosts": 0}]), "pods-per-replica") == [("deny", f"{W0}.numOfHosts")]
        assert found(service([{"numOfHosts": 2, "replicas": 1, "maxReplicas": 2}]), "pods-per-replica") == []

    def test_duplicate_group_names(self) -> None:
        obj = service([{"groupName": "a"}, {"groupName": "b"}, {"groupName": "a"}])
        assert found(obj, "unique-instance-ids") == [("deny", "spec.rayClusterConfig.workerGroupSpecs[2].groupName")]

    def test_group_name_must_be_a_label_value(self) -> None:
        obj = service([{"groupName": "GPU group!"}])
        assert found(obj, "instance-id-label-value") == [("deny", f"{W0}.groupName")]
        assert found(service([{"groupName": "a" * 64}]), "instance-id-label-value") == [("deny", f"{W0}.groupName")]
        assert found(service([{"groupName": "Gpu_group.1"}]), "instance-id-label-value") == []

    def test_empty_group_name_is_a_resolution_problem(self) -> None:
        violations = found(service([{"groupName": ""}]), "definition-resolution")
        assert violations == [("deny", "")]  # unreadable is refused in enforce mode (issue 13)

    def test_headgroup_is_reserved(self) -> None:
        assert found(service([{"groupName": "headgroup"}]), "reserved-instance-id") == [("deny", f"{W0}.groupName")]

    def test_template_without_containers(self) -> None:
        obj = service([{"template": {"spec": {"containers": []}}}])
        assert found(obj, "pod-template-containers") == [("deny", f"{W0}.template.spec.containers")]
        head_less = service([{}], head=[])
        assert found(head_less, "pod-template-containers") == [
            ("deny", "spec.rayClusterConfig.headGroupSpec.template.spec.containers")
        ]


class TestGpu:
    def test_fractional_gpu(self) -> None:
        obj = service([gpu_worker(container(limits={"nvidia.com/gpu": "0.5"}), **TOLERATE)])
        paths = found(obj, "gpu-whole-number")
        assert paths == [("deny", f"{W0}.template.spec.containers[0].resources.limits[nvidia.com/gpu]")]
        (v,) = [v for v in check(obj) if v.rule == "gpu-whole-number"]
        assert "GPU-sharing" in v.message and "'0.5'" in v.message

    @pytest.mark.parametrize("value", ["500m", "-1", "lots", 1.5])
    def test_not_whole(self, value: Any) -> None:
        obj = service([gpu_worker(container(limits={"nvidia.com/gpu": value}), **TOLERATE)])
        assert len(found(obj, "gpu-whole-number")) == 1

    @pytest.mark.parametrize("value", ["1", 2, "8", "1000m", "0"])
    def test_whole(self, value: Any) -> None:
        obj = service([gpu_worker(container(limits={"nvidia.com/gpu": value}), **TOLERATE)])
        assert found(obj, "gpu-whole-number") == []

    def test_request_without_limit(self) -> None:
        obj = service([gpu_worker(container(requests={"nvidia.com/gpu": "1"}))])
        assert found(obj, "gpu-requests-equal-limits") == [
            ("deny", f"{W0}.template.spec.containers[0].resources.limits[nvidia.com/gpu]")
        ]

    def test_request_differs_from_limit(self) -> None:
        obj = service(
            [gpu_worker(container(requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "2"}), **TOLERATE)]
        )
        assert found(obj, "gpu-requests-equal-limits") == [
            ("deny", f"{W0}.template.spec.containers[0].resources.requests[nvidia.com/gpu]")
        ]
        same = service([gpu_worker(container(**GPU), **TOLERATE)])
        assert found(same, "gpu-requests-equal-limits") == []

    def test_gpu_on_sidecar(self) -> None:
        obj = service([gpu_worker(container("ray"), container("sidecar", **GPU), **TOLERATE)])
        assert found(obj, "gpu-on-primary-container") == [("deny", f"{W0}.template.spec.containers[1].resources")]
        on_ray = service([gpu_worker(container("ray", **GPU), container("sidecar"), **TOLERATE)])
        assert found(on_ray, "gpu-on-primary-container") == []

    def test_gpu_on_head_warns(self) -> None:
        obj = service([{}], head=[container("head", **GPU)])
        assert found(obj, "gpu-on-head") == [
            ("warn", "spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].resources")
        ]
        assert found(obj, "gpu-on-head", {"rules": {"gpu-on-head": "off"}}) == []

    def test_two_vendors(self) -> None:
        both = {
            "limits": {"nvidia.com/gpu": "1", "amd.com/gpu": "1"},
            "requests": {"nvidia.com/gpu": "1", "amd.com/gpu": "1"},
        }
        obj = service([gpu_worker(container(**both), **TOLERATE)])
        assert found(obj, "gpu-single-vendor") == [("deny", f"{W0}.template.spec.containers[0].resources")]
        mig = {"limits": {"nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "1"}}
        assert found(service([gpu_worker(container(**mig), **TOLERATE)]), "gpu-single-vendor") == []

    @pytest.mark.parametrize(("value", "violates"), [("all", True), ("0,1", True), ("GPU-abc", True),
                                                     ("none", False), ("void", False), ("", False)])  # fmt: skip
    def test_nvidia_visible_devices_without_limit(self, value: str, violates: bool) -> None:
        c = container(env=None)
        c.pop("resources")
        c["env"] = [{"name": "OTHER", "value": "x"}, {"name": "NVIDIA_VISIBLE_DEVICES", "value": value}]
        got = found(service([gpu_worker(c)]), "nvidia-visible-devices")
        assert got == ([("deny", f"{W0}.template.spec.containers[0].env[1].value")] if violates else [])

    def test_nvidia_visible_devices_with_limit_is_fine(self) -> None:
        c = container(**GPU)
        c["env"] = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
        assert found(service([gpu_worker(c, **TOLERATE)]), "nvidia-visible-devices") == []

    def test_gpu_node_selector_without_gpus(self) -> None:
        obj = service([gpu_worker(container(), nodeSelector={"nvidia.com/gpu.product": "A100"})])
        assert found(obj, "gpu-node-selector") == [("warn", f"{W0}.template.spec")]
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "cloud.google.com/gke-accelerator", "operator": "Exists"}]}
                    ]
                }
            }
        }
        assert found(service([gpu_worker(container(), affinity=affinity)]), "gpu-node-selector") == [
            ("warn", f"{W0}.template.spec")
        ]
        with_gpus = service([gpu_worker(container(**GPU), nodeSelector={"nvidia.com/gpu.product": "A100"}, **TOLERATE)])
        assert found(with_gpus, "gpu-node-selector") == []

    def test_gpu_template_without_toleration(self) -> None:
        assert found(service([gpu_worker(container(**GPU))]), "gpu-toleration") == [
            ("warn", f"{W0}.template.spec.tolerations")
        ]
        tolerate_all = {"tolerations": [{"operator": "Exists"}]}
        assert found(service([gpu_worker(container(**GPU), **tolerate_all)]), "gpu-toleration") == []

    def test_gpu_resource_names_are_configurable(self) -> None:
        intel = {"limits": {"gpu.intel.com/i915": "0.5"}}
        obj = service([gpu_worker(container(**intel))])
        assert found(obj, "gpu-whole-number") == []  # not a GPU key for KubeRay
        config = {"gpu": {"resourcePatterns": [".*gpu", r"gpu\.intel\.com/.*"], "taintKeys": ["gpu.intel.com/i915"]}}
        assert len(found(obj, "gpu-whole-number", config)) == 1

    def test_tpus_are_not_gpus(self) -> None:
        tpu = {"limits": {"google.com/tpu": "4"}, "requests": {"google.com/tpu": "4"}}
        assert check(service([gpu_worker(container(**tpu))])) == []


class TestKubeRay:
    def test_name_length(self) -> None:
        obj = service([{}])
        obj["metadata"]["name"] = "x" * 48
        assert found(obj, "ray-name") == [("deny", "metadata.name")]
        obj["metadata"]["name"] = "x" * 47
        assert found(obj, "ray-name") == []
        obj["metadata"]["name"] = "1-starts-with-digit"
        assert found(obj, "ray-name") == [("deny", "metadata.name")]

    def test_generate_name_is_not_checked(self) -> None:
        obj = service([{}])
        obj["metadata"] = {"generateName": "X" * 80, "namespace": "ml"}
        assert found(obj, "ray-name") == []

    def test_nested_upgrade_strategy(self) -> None:
        obj = service([{}], upgradeStrategy={"type": "Recreate"})
        assert found(obj, "ray-nested-upgrade-strategy") == [("deny", "spec.rayClusterConfig.upgradeStrategy")]

    def test_resources_in_both_places(self) -> None:
        obj = service([{"rayStartParams": {"num-cpus": "2"}, "resources": {"CPU": "2"}}])
        assert found(obj, "ray-resources-conflict") == [("deny", f"{W0}.resources")]
        assert found(service([{"resources": {"CPU": "2"}}]), "ray-resources-conflict") == []


class TestUpdates:
    def test_existing_violation_not_made_worse_only_warns(self) -> None:
        old = check(service([{"replicas": 10, "maxReplicas": 5}]))
        same = check(service([{"replicas": 10, "maxReplicas": 5}]))
        better = check(service([{"replicas": 8, "maxReplicas": 5}]))
        worse = check(service([{"replicas": 12, "maxReplicas": 5}]))
        assert [v.severity for v in demote_existing(same, old)] == [Severity.WARN]
        assert [v.severity for v in demote_existing(better, old)] == [Severity.WARN]
        assert [v.severity for v in demote_existing(worse, old)] == [Severity.DENY]

    def test_new_violation_is_denied(self) -> None:
        old = check(service([{}]))
        new = check(service([{"replicas": 10, "maxReplicas": 5}]))
        assert [v.severity for v in demote_existing(new, old)] == [Severity.DENY]

    def test_changed_invalid_value_is_denied(self) -> None:
        old = check(service([gpu_worker(container(limits={"nvidia.com/gpu": "0.5"}), **TOLERATE)]))
        new = check(service([gpu_worker(container(limits={"nvidia.com/gpu": "0.25"}), **TOLERATE)]))
        untouched = check(service([gpu_worker(container(limits={"nvidia.com/gpu": "0.5"}), **TOLERATE)]))
        assert [v.severity for v in demote_existing(new, old)] == [Severity.DENY]
        assert [v.severity for v in demote_existing(untouched, old)] == [Severity.WARN]

    def test_unchanged_object_with_several_findings_at_one_place_only_warns(self) -> None:
        # numOfHosts -1: replicas, minReplicas and maxReplicas are all computed, negative, and all point
        # at the group; the mildest of them used to hide the others from the old object's findings.
        group = {"replicas": 3, "minReplicas": 3, "maxReplicas": 1, "numOfHosts": -1}
        old = check(service([group]))
        at_group = [v for v in old if v.rule == "non-negative-scale"]
        assert len(at_group) >= 2 and len({v.path for v in at_group}) == 1, at_group
        assert {v.severity for v in demote_existing(check(service([group])), old)} == {Severity.WARN}


def test_every_rule_is_exercised_by_this_file() -> None:
    """KubeRay's own checks (webhook/policy/ray_*.py) are exercised by the ported KubeRay table instead."""
    source = Path(__file__).read_text()
    missing = [
        r.id
        for r in BUILTIN_RULES
        if f'"{r.id}"' not in source and not r.check.__module__.startswith("webhook.policy.ray_")
    ]
    assert missing == []


def test_v1alpha1_objects_are_checked_as_the_v1_objects_kuberay_reads() -> None:
    """KubeRay's CRDs serve ray.io/v1alpha1 without conversion: KubeRay reads such an object as v1."""
    obj = service([{"replicas": 10, "maxReplicas": 5}])
    obj["apiVersion"] = "ray.io/v1alpha1"
    assert found(obj, "replicas-within-bounds") == [("deny", f"{W0}.replicas")]
    assert [v for v in check(obj) if v.rule == "definition-resolution"] == []


class TestKubeRayExtras:
    """What the ported KubeRay table (test_kuberay_parity.py) cannot show: our own stricter rule, settings."""

    def test_group_name_kuberay_cannot_put_in_a_pod_name(self) -> None:
        obj = service([{"groupName": "gpu_workers"}])
        assert found(obj, "ray-group-name-pod-name") == [("deny", f"{W0}.groupName")]
        assert found(service([{"groupName": "GPU-Workers"}]), "ray-group-name-pod-name") == []  # lower-cased

    def test_feature_gates_are_settings_with_kuberay_defaults(self) -> None:
        obj = service([{}], networkPolicy={"mode": "DenyAll"})
        assert found(obj, "ray-feature-gate") == [("warn", "spec.rayClusterConfig.networkPolicy")]
        on = {"kuberay": {"featureGates": {"RayClusterNetworkPolicy": True}}}
        assert found(obj, "ray-feature-gate", on) == []
        strict = {"rules": {"ray-feature-gate": "deny"}}
        assert found(obj, "ray-feature-gate", strict) == [("deny", "spec.rayClusterConfig.networkPolicy")]

    def test_incremental_upgrade_options_only_matter_with_the_gate_on(self) -> None:
        obj = service([{}])
        obj["spec"]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade"}
        assert found(obj, "ray-service-upgrade-strategy") == [("deny", "spec.upgradeStrategy.type")]
        off = {"kuberay": {"featureGates": {"RayServiceIncrementalUpgrade": False}}}
        assert found(obj, "ray-service-upgrade-strategy", off) == []


def test_rules_do_not_modify_the_object() -> None:
    obj = service([{"replicas": 10, "maxReplicas": 5}, gpu_worker(container(limits={"nvidia.com/gpu": "0.5"}))])
    before = copy.deepcopy(obj)
    evaluator = build_evaluator(parse_config({}, "t"), DefinitionSet.builtin())
    compiled = evaluator.definition_for(obj)
    assert compiled is not None
    evaluate(compiled.resolve(obj), evaluator.policy)
    assert obj == before


def test_violations_come_in_document_order() -> None:
    groups = [{"groupName": f"g{i}", "replicas": 10, "maxReplicas": 5} for i in range(12)]
    groups[2]["template"] = {"spec": {"containers": [container(limits={"nvidia.com/gpu": "0.5"})]}}
    paths = [v.path for v in check(service(groups))]
    assert paths.index(f"{W0}.replicas") == 0
    assert (
        paths.index("spec.rayClusterConfig.workerGroupSpecs[2].replicas")
        < paths.index(
            "spec.rayClusterConfig.workerGroupSpecs[2].template.spec.containers[0].resources.limits[nvidia.com/gpu]"
        )
        < paths.index("spec.rayClusterConfig.workerGroupSpecs[10].replicas")
    )
