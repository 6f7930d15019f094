"""Pod-side Karta evaluation: which component and instance a pod belongs to, and its gang grouping.

Follows Karta's PodQuerier and gang summary (reference/karta.md §2.4, §3.1): the component is the
only leaf, or the first leaf whose componentTypeSelector matches; the pod-group member is the first
podGroups member naming the component or one of its ancestors whose filters all hold; each
groupByKeyPaths entry must give exactly one non-empty value, stringified like Go's %v.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.karta import jqengine
from webhook.karta.jqengine import PathBatch, PathOutcome
from webhook.karta.model import Component, KartaDefinition, PodGroupMember


@dataclass(frozen=True)
class PodGrouping:
    """The gang a pod belongs to: the effective component and the group keys of the pod."""

    pod_group: str  # the podGroups entry name
    effective_component: str  # whose subtree scale is the group's size
    keys: tuple[str, ...]


@dataclass(frozen=True)
class PodClaim:
    """How a definition sees one pod."""

    component: str
    instance_id: str | None
    grouping: PodGrouping | None
    errors: tuple[str, ...] = ()

    @property
    def group_name(self) -> str | None:
        """The group keys joined, as KAI joins them into a PodGroup name."""
        if self.grouping is None or not self.grouping.keys:
            return None
        return "-".join(self.grouping.keys)


class PodClassifier:
    """All pod-side paths of one definition, compiled once, evaluated in one pass per pod."""

    def __init__(self, definition: KartaDefinition) -> None:
        self.definition = definition
        self._expressions: list[str] = []
        self._slots: dict[tuple[str, ...], int] = {}
        for leaf in definition.leaves:
            selector = leaf.pod_selector
            if selector is None:
                continue
            if selector.type_selector and selector.type_selector.key_path:
                self._add(("type", leaf.name), selector.type_selector.key_path)
            if selector.instance_id_path:
                self._add(("id", leaf.name), selector.instance_id_path)
        for group in definition.pod_groups:
            for member in group.members:
                for i, path in enumerate(member.group_by_key_paths):
                    self._add(("key", group.name, member.component_name, str(i)), path)
                for i, path in enumerate(member.filters):
                    self._add(("filter", group.name, member.component_name, str(i)), path)
        self._batch = PathBatch(self._expressions)
        self._candidates = {leaf.name: self._member_candidates(leaf) for leaf in definition.leaves}

    def _add(self, slot: tuple[str, ...], expression: str) -> None:
        self._slots[slot] = len(self._expressions)
        self._expressions.append(expression)

    def _member_candidates(self, leaf: Component) -> list[tuple[str, PodGroupMember]]:
        """podGroups members that name the component itself first, then its ancestors, in YAML order."""
        lineage = [leaf.name, *(a.name for a in self.definition.ancestors(leaf.name))]
        candidates: list[tuple[str, PodGroupMember]] = []
        for name in lineage:
            for group in self.definition.pod_groups:
                candidates.extend((group.name, m) for m in group.members if m.component_name == name)
        return candidates

    def classify(self, pod: Mapping[str, Any]) -> PodClaim | None:
        """The pod's component, instance and grouping; None when no component of the definition claims it."""
        outcomes = self._batch.run(pod)

        def outcome(*slot: str) -> PathOutcome | None:
            index = self._slots.get(slot)
            return outcomes[index] if index is not None else None

        component = self._infer_component(pod, outcome)
        if component is None:
            return None
        errors: list[str] = []
        instance_id = None
        id_outcome = outcome("id", component.name)
        if id_outcome is not None:
            try:
                instance_id = _single_key(id_outcome)
            except ValueError as exc:
                errors.append(f"componentInstanceSelector.idPath: {exc}")
        grouping = None
        for group_name, member in self._candidates[component.name]:
            if not self._filters_hold(group_name, member, outcome):
                continue
            keys = []
            for i in range(len(member.group_by_key_paths)):
                key_outcome = outcome("key", group_name, member.component_name, str(i))
                assert key_outcome is not None
                try:
                    keys.append(_single_key(key_outcome))
                except ValueError as exc:
                    errors.append(f"groupByKeyPaths[{i}] of member '{member.component_name}': {exc}")
            grouping = PodGrouping(group_name, member.component_name, tuple(keys))
            break
        return PodClaim(component.name, instance_id, grouping, tuple(errors))

    def _infer_component(self, pod: Mapping[str, Any], outcome: Any) -> Component | None:
        leaves = self.definition.leaves
        if len(leaves) == 1:
            return leaves[0]
        for leaf in leaves:
            selector = leaf.pod_selector
            if selector is None or selector.type_selector is None:
                continue
            if _type_matches(leaf, pod, outcome("type", leaf.name)):
                return leaf
        return None

    @staticmethod
    def _filters_hold(group_name: str, member: PodGroupMember, outcome: Any) -> bool:
        for i in range(len(member.filters)):
            result: PathOutcome = outcome("filter", group_name, member.component_name, str(i))
            if result.error or len(result.values) != 1 or result.values[0] is not True:
                return False
        return True


def _type_matches(leaf: Component, pod: Mapping[str, Any], key_outcome: PathOutcome | None) -> bool:
    assert leaf.pod_selector is not None and leaf.pod_selector.type_selector is not None
    selector = leaf.pod_selector.type_selector
    if selector.key_path:
        if key_outcome is None or key_outcome.error:
            return False
        if selector.value is None:
            matched = any(v is not None for v in key_outcome.values)
        else:
            matched = any(v == selector.value for v in key_outcome.values)
        if not matched:
            return False
    if selector.match_labels:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.match_labels.items()):
            return False
    return True


def _single_key(result: PathOutcome) -> str:
    if result.error:
        raise ValueError(result.error)
    if len(result.values) != 1:
        raise ValueError(f"expected single query result, got {len(result.values)}")
    value = result.values[0]
    if value is None or value == "":
        raise ValueError("query result is empty")
    return jqengine.go_format(value)
