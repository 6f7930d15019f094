"""The rules in force: an explicit list, each with its category. Nothing registers itself on import."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace

from webhook.policy import gpu, kuberay, scale
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

    def in_force(self, root_group: str, settings: PolicySettings) -> list[tuple[Rule, Severity]]:
        """The rules that run for a workload of this root API group, with their configured severities."""
        return [
            (rule, severity)
            for rule in self._rules.values()
            if rule.applies_to(root_group) and (severity := settings.severity(rule)) is not Severity.OFF
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
        "KubeRay": (
            kuberay.ray_name,
            kuberay.ray_nested_upgrade_strategy,
            kuberay.ray_resources_conflict,
        ),
    }
)
