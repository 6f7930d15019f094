"""Typed view of a run.ai/v1alpha1 Karta definition (reference/karta.md §1.2)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

KARTA_API_VERSIONS = frozenset({"run.ai/v1alpha1", "optimization.nvidia.com/v1alpha1"})
KARTA_KINDS = frozenset({"Karta", "ResourceInterface"})
# Policy hints this project reads from a Karta object's annotations: things Karta does not model
# (which component is the coordinator, who owns the replica counts) but the policy rules need.
HINTS_ANNOTATION = "karta-admission.io/policy-hints"

STATUS_ORDER = (
    "resuming", "suspending", "suspended", "running", "failed", "completed", "initializing", "degraded",
)  # fmt: skip

FRAGMENT_FIELDS = (
    "schedulerNamePath", "labelsPath", "annotationsPath", "resourcesPath", "resourceClaimsPath",
    "podAffinityPath", "nodeAffinityPath", "containersPath", "containerPath", "priorityClassNamePath",
    "imagePath",
)  # fmt: skip


@dataclass(frozen=True, order=True)
class GVK:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> GVK:
        """The GVK of a Kubernetes object from its apiVersion and kind."""
        api_version = str(obj.get("apiVersion") or "")
        group, _, version = api_version.rpartition("/")
        return cls(group, version, str(obj.get("kind") or ""))

    def __str__(self) -> str:
        return f"{self.api_version} {self.kind}"


@dataclass(frozen=True)
class TypeSelector:
    key_path: str | None
    value: str | None
    match_labels: Mapping[str, str] | None


@dataclass(frozen=True)
class PodSelector:
    type_selector: TypeSelector | None
    instance_id_path: str | None
    replica_key_path: str | None


@dataclass(frozen=True)
class ScaleDefinition:
    replicas_path: str | None
    min_replicas_path: str | None
    max_replicas_path: str | None

    def paths(self) -> dict[str, str]:
        named = {
            "replicas": self.replicas_path,
            "minReplicas": self.min_replicas_path,
            "maxReplicas": self.max_replicas_path,
        }
        return {k: v for k, v in named.items() if v}


@dataclass(frozen=True)
class SpecDefinition:
    pod_template_spec_path: str | None
    pod_spec_path: str | None
    metadata_path: str | None
    fragments: Mapping[str, str]

    @property
    def pattern_count(self) -> int:
        """How many of the three mutually exclusive pod spec patterns are set (metadataPath not counted)."""
        return sum(bool(x) for x in (self.pod_template_spec_path, self.pod_spec_path, self.fragments))


@dataclass(frozen=True)
class ConditionMatch:
    type: str
    status: str | None
    reason: str | None


@dataclass(frozen=True)
class StatusMatcher:
    by_phase: str | None
    by_conditions: tuple[ConditionMatch, ...]
    by_expression: tuple[str, str] | None  # (expression, expectedResult)


@dataclass(frozen=True)
class ConditionsDefinition:
    path: str
    type_field: str = "type"
    status_field: str = "status"
    message_field: str = "message"
    reason_field: str = "reason"


@dataclass(frozen=True)
class StatusDefinition:
    phase_path: str | None
    conditions: ConditionsDefinition | None
    mappings: Mapping[str, tuple[StatusMatcher, ...]]


@dataclass(frozen=True)
class Action:
    path: str
    value: str


@dataclass(frozen=True)
class SuspendDefinition:
    suspend_actions: tuple[Action, ...]
    resume_actions: tuple[Action, ...]


@dataclass(frozen=True)
class Component:
    name: str
    kind: GVK | None
    owner_ref: str | None
    instance_id_path: str | None
    spec: SpecDefinition | None
    scale: ScaleDefinition | None
    status: StatusDefinition | None
    suspend: SuspendDefinition | None
    pod_selector: PodSelector | None

    @property
    def has_pod_definition(self) -> bool:
        return self.spec is not None and self.spec.pattern_count > 0


@dataclass(frozen=True)
class PodGroupMember:
    component_name: str
    group_by_key_paths: tuple[str, ...]
    filters: tuple[str, ...]


@dataclass(frozen=True)
class PodGroups:
    """The alpha `gangScheduling.podGroups` entry: the only form that carries groupByKeyPaths."""

    name: str
    members: tuple[PodGroupMember, ...]


@dataclass(frozen=True)
class PodGroupV2:
    name: str
    sub_groups: tuple[str, ...]


@dataclass(frozen=True)
class ComponentHints:
    role: str | None = None  # "head": the coordinator pod, expected to hold no GPUs
    pods_per_replica_path: str | None = None  # aligned with the component's instances
    suspended_path: str | None = None  # aligned; true: the instance runs no pods whatever its scale says
    # The name of this component's part of the gang (a task or sub-group) for a component without
    # instance ids; Ray's head pods carry ray.io/group=headgroup. Default: the component name.
    sub_group_name: str | None = None
    reserved_instance_ids: frozenset[str] = frozenset()


NO_HINTS = ComponentHints()


@dataclass(frozen=True)
class PolicyHints:
    autoscaling_path: str | None = None
    primary_container: int | None = None  # the container whose resources the runtime reads
    components: Mapping[str, ComponentHints] = field(default_factory=dict)

    def for_component(self, name: str) -> ComponentHints:
        return self.components.get(name, NO_HINTS)


@dataclass(frozen=True)
class KartaDefinition:
    name: str
    source: str  # where it came from: a file path, "built-in:<file>" or "cluster:<name>"
    root: Component
    children: tuple[Component, ...]
    pod_groups: tuple[PodGroups, ...]
    pod_group: PodGroupV2 | None
    hints: PolicyHints

    @property
    def root_kind(self) -> GVK:
        assert self.root.kind is not None
        return self.root.kind

    # Definitions never change once parsed; what reviews ask of their structure is computed once.
    @cached_property
    def components(self) -> tuple[Component, ...]:
        return (self.root, *self.children)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def children_of(self, name: str) -> tuple[Component, ...]:
        return tuple(c for c in self.children if c.owner_ref == name)

    def ancestors(self, name: str) -> Iterator[Component]:
        """Parents of the component up to the root, nearest first."""
        seen = {name}
        current = self.component(name)
        while current.owner_ref and current.owner_ref not in seen:
            seen.add(current.owner_ref)
            current = self.component(current.owner_ref)
            yield current

    @cached_property
    def leaves(self) -> tuple[Component, ...]:
        """Components with a pod definition, root first, then children in declared order."""
        return tuple(c for c in self.components if c.has_pod_definition)

    @cached_property
    def has_scale_definition(self) -> bool:
        return any(c.scale is not None for c in self.components)
