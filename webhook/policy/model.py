"""Policy rules: what a rule is, what it reports, and the settings rules read.

The rules in force are listed in webhook.policy.registry; defining a rule here registers nothing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.karta.resolve import ResolvedWorkload
from webhook.kube.fieldpath import PathParts, format_path


class Severity(enum.StrEnum):
    DENY = "deny"
    WARN = "warn"
    OFF = "off"


@dataclass(frozen=True)
class Finding:
    """What a rule function reports; the engine turns it into a Violation with its severity."""

    location: PathParts | None
    message: str
    value: Any = None
    # How far from compliant (e.g. replicas above max). On UPDATE, a violation that was already
    # there and whose excess did not grow is not made worse.
    excess: float | None = None
    # A rule may soften itself for one finding (replicas rule under an autoscaler).
    at_most: Severity | None = None


@dataclass(frozen=True)
class Violation:
    rule: str
    severity: Severity
    path: str
    message: str
    value: Any = None
    excess: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.path)

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": str(self.severity), "path": self.path, "message": self.message}


# Resource names whose GPU-ness one GpuSettings remembers (objects name few; requests can name any).
GPU_NAMES_REMEMBERED = 4096


@dataclass(frozen=True)
class GpuSettings:
    resource_patterns: tuple[re.Pattern[str], ...]
    taint_keys: tuple[str, ...]
    node_label_keys: tuple[str, ...]
    # Answers of is_gpu by resource name: every container of every review asks for the same few names.
    _answers: dict[str, bool] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def is_gpu(self, resource_name: str) -> bool:
        answer = self._answers.get(resource_name)
        if answer is None:
            answer = any(p.fullmatch(resource_name) for p in self.resource_patterns)
            if len(self._answers) < GPU_NAMES_REMEMBERED:
                self._answers[resource_name] = answer
        return answer


# KubeRay's notion of a GPU key (reference/kuberay.md §4): any name ending in "gpu", and MIG slices.
DEFAULT_GPU_PATTERNS = (r".*gpu", r"nvidia\.com/mig-\d+g\.\d+gb")
DEFAULT_GPU_TAINT_KEYS = ("nvidia.com/gpu", "amd.com/gpu")
DEFAULT_GPU_NODE_LABEL_KEYS = (
    "nvidia.com/gpu.present",
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.family",
    "nvidia.com/gpu.machine",
    "cloud.google.com/gke-accelerator",
    "amd.com/gpu.device-id",
    "node.kubernetes.io/instance-gpu",
)


def default_gpu_settings() -> GpuSettings:
    return GpuSettings(
        resource_patterns=tuple(re.compile(p) for p in DEFAULT_GPU_PATTERNS),
        taint_keys=DEFAULT_GPU_TAINT_KEYS,
        node_label_keys=DEFAULT_GPU_NODE_LABEL_KEYS,
    )


# KubeRay operator feature gates that change what its validation accepts, with KubeRay's defaults
# (ray-operator/pkg/features/features.go at feeaf72f). The operator's configuration is not visible
# at admission, so these are settings (`kuberay.featureGates`).
KUBERAY_FEATURE_GATES: dict[str, bool] = {
    "RayJobDeletionPolicy": True,  # Beta
    "RayServiceIncrementalUpgrade": True,  # Beta
    "GCSFaultToleranceEmbeddedStorage": False,  # Alpha
    "RayClusterNetworkPolicy": False,  # Alpha
    "RayClusterMTLS": False,  # Alpha
    "RayClusterHistoryServer": False,  # Alpha
}


@dataclass(frozen=True)
class KubeRaySettings:
    """What the KubeRay operator in front of which the webhook runs is configured to accept."""

    feature_gates: Mapping[str, bool] = field(default_factory=lambda: dict(KUBERAY_FEATURE_GATES))

    def gate(self, name: str) -> bool:
        return bool(self.feature_gates.get(name, KUBERAY_FEATURE_GATES[name]))


@dataclass(frozen=True)
class PolicySettings:
    severities: Mapping[str, Severity] = field(default_factory=dict)
    gpu: GpuSettings = field(default_factory=default_gpu_settings)
    kuberay: KubeRaySettings = field(default_factory=KubeRaySettings)

    def severity(self, rule: Rule) -> Severity:
        return self.severities.get(rule.id, rule.default_severity)


class RuleContext:
    """What a rule reads: the resolved workload, the settings, and facts several rules share.

    Facts are computed once per evaluation (e.g. each container's GPU resources, read by six rules).
    """

    def __init__(self, workload: ResolvedWorkload, settings: PolicySettings) -> None:
        self.workload = workload
        self.settings = settings
        self._memo: dict[Any, Any] = {}

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


RuleCheck = Callable[[RuleContext], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    id: str
    default_severity: Severity
    summary: str
    check: RuleCheck
    # Only for workloads whose root API group is this one (KubeRay-specific rules); None: any kind.
    api_group: str | None = None
    # The family the rule belongs to (PolicyReport category); set where the rule is registered.
    category: str = ""
    # Only for these root kinds (e.g. RayJob's own fields); None: any kind of the API group.
    kinds: frozenset[str] | None = None
    # What of the resolution the rule reads (READS_*): a definition that gives none of it cannot
    # produce a finding, so the rule is left out of that definition's plan (webhook.policy.engine).
    reads: frozenset[str] = frozenset()

    def applies_to(self, root_group: str, root_kind: str | None = None) -> bool:
        """Whether the rule runs for this root API group (and, when given, root kind)."""
        if self.api_group is not None and self.api_group != root_group:
            return False
        return self.kinds is None or root_kind is None or root_kind in self.kinds


# What a rule can read of a resolved workload besides the object itself.
READS_SCALE = "scale"  # instances' replicas and bounds (a component with a scaleDefinition)
READS_PODS = "pods"  # instances' pod templates (a component with a specDefinition)
READS_INSTANCE_IDS = "instance-ids"  # instance ids (a component with an instanceIdPath)


def rule(
    rule_id: str,
    severity: Severity,
    summary: str,
    *,
    api_group: str | None = None,
    kinds: Iterable[str] | None = None,
    reads: Iterable[str] = (),
) -> Callable[[RuleCheck], Rule]:
    """Make a rule function into a Rule with a stable id (listed in webhook.policy.registry to be in force)."""

    def make(check: RuleCheck) -> Rule:
        return Rule(
            rule_id, severity, summary, check, api_group, kinds=frozenset(kinds) if kinds is not None else None,
            reads=frozenset(reads),
        )  # fmt: skip

    return make


def where(location: PathParts | None) -> str:
    return format_path(location) if location else ""
