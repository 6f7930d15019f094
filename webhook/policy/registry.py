"""The rules in force: an explicit list, each with its category. Nothing registers itself on import."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace

from webhook.policy import (
    gpu,
    kuberay,
    ray_autoscaler,
    ray_cluster,
    ray_features,
    ray_rayjob,
    ray_rayservice,
    scale,
)
from webhook.policy.model import PolicySettings, Rule, Severity


class RuleRegistry:
    """Rules by id, in a fixed order; unknown ids and duplicates are refused when it is built."""

    def __init__(self, by_category: Mapping[str, Iterable[Rule]]) -> None:
        self._rules: dict[str, Rule] = {}
        for category, rules in by_category.items():
            for rule in rules:
                if rule.id in self._rules:
                    raise ValueError(f"rule {rule.id} is listed twice")
                self._rules[rule.id] = replace(rule, category=category)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def get(self, rule_id: str) -> Rule | None:
        return self._rules.get(rule_id)

    def ids(self) -> list[str]:
        return list(self._rules)

    def in_force(
        self, root_group: str, settings: PolicySettings, root_kind: str | None = None
    ) -> list[tuple[Rule, Severity]]:
        """The rules that run for a workload of this root API group (and kind), with their severities."""
        return [
            (rule, severity)
            for rule in self._rules.values()
            if rule.applies_to(root_group, root_kind) and (severity := settings.severity(rule)) is not Severity.OFF
        ]


BUILTIN_RULES = RuleRegistry(
    {
        "Replicas": (
            scale.replicas_within_bounds,
            scale.min_not_above_max,
            scale.non_negative_scale,
            scale.pods_per_replica,
            scale.unique_instance_ids,
            scale.instance_id_label_value,
            scale.reserved_instance_id,
            scale.pod_template_containers,
            scale.definition_resolution,
        ),
        "GPU": (
            gpu.gpu_whole_number,
            gpu.gpu_requests_equal_limits,
            gpu.gpu_on_primary_container,
            gpu.gpu_single_vendor,
            gpu.nvidia_visible_devices,
            gpu.gpu_on_head,
            gpu.gpu_node_selector,
            gpu.gpu_toleration,
        ),
        # KubeRay's own validation, by family: what its controller refuses only after the object is stored.
        "KubeRay": (
            kuberay.ray_name,
            kuberay.ray_nested_upgrade_strategy,
            kuberay.ray_resources_conflict,
            ray_cluster.ray_group_labels,
            ray_cluster.ray_worker_suspend,
            ray_cluster.ray_group_name_pod_name,
            ray_cluster.ray_cluster_upgrade_strategy,
            ray_autoscaler.ray_autoscaler_v2_env,
            ray_autoscaler.ray_autoscaler_restart_policy,
            ray_autoscaler.ray_autoscaler_options,
            ray_autoscaler.ray_worker_idle_timeout,
            ray_autoscaler.ray_worker_priority,
            ray_features.ray_gcs_fault_tolerance,
            ray_features.ray_auth,
            ray_features.ray_network_policy,
            ray_features.ray_tls,
            ray_features.ray_history_server,
            ray_features.ray_feature_gate,
            ray_rayservice.ray_initializing_timeout,
            ray_rayservice.ray_service_head_service_name,
            ray_rayservice.ray_service_upgrade_strategy,
            ray_rayjob.ray_job_cluster_source,
            ray_rayjob.ray_job_suspend,
            ray_rayjob.ray_job_ttl,
            ray_rayjob.ray_job_submission_mode,
            ray_rayjob.ray_job_limits,
            ray_rayjob.ray_job_runtime_env,
            ray_rayjob.ray_job_deletion_strategy,
        ),
    }
)
