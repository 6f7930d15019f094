"""Gang-scheduling metadata: group sizes from a resolved owner, and each scheduler's pod keys.

Pure: the sizes come from a ResolvedWorkload (the pod's own RayCluster, in a cluster read from a
watch-backed cache), the keys from the scheduler conventions in reference/ecosystem.md §4.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from webhook.karta.resolve import ResolvedWorkload
from webhook.kube.quantity import parse_quantity

# Written on every grouped pod whatever the scheduler, so the grouping can be seen and audited.
GROUP_ANNOTATION = "karta-admission.io/pod-group"
SIZE_ANNOTATION = "karta-admission.io/pod-group-size"


@dataclass(frozen=True)
class TaskGroup:
    name: str
    min_member: int
    min_resource: Mapping[str, str]


@dataclass(frozen=True)
class GroupInfo:
    """What a pod needs to know about its gang: its size in pods and, per task group, its share."""

    size: int
    task_groups: tuple[TaskGroup, ...] = ()


@dataclass(frozen=True)
class Convention:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


# Templates: {group} the group key, {size} the gang size, {task} the pod's task group (instance id,
# else component name), {taskGroups} YuniKorn's JSON list, {namespace}, {component}, {instance}.
CONVENTIONS: dict[str, Convention] = {
    # scheduler-plugins coscheduling; the PodGroup of that name must exist (KubeRay's
    # scheduler-plugins integration names it after the RayCluster too).
    "coscheduling": Convention({"scheduling.x-k8s.io/pod-group": "{group}"}, {}),
    # Volcano: KubeRay's own integration names the PodGroup ray-<cluster>-pg.
    "volcano": Convention({}, {"scheduling.k8s.io/group-name": "ray-{group}-pg", "volcano.sh/task-spec": "{task}"}),
    # Kueue plain-pod groups: name and total count on every member.
    "kueue": Convention(
        {"kueue.x-k8s.io/pod-group-name": "{group}"}, {"kueue.x-k8s.io/pod-group-total-count": "{size}"}
    ),
    # KAI: only honoured with kai.scheduler/skip-podgrouper on the owner; otherwise KAI's pod-grouper
    # decides and overwrites these.
    "kai": Convention({"kai.scheduler/subgroup-name": "{task}"}, {"pod-group-name": "{group}"}),
    # YuniKorn: app id plus task groups on every pod; the shim makes placeholders from them.
    "yunikorn": Convention(
        {"yunikorn.apache.org/app-id": "{group}"},
        {"yunikorn.apache.org/task-group-name": "{task}", "yunikorn.apache.org/task-groups": "{taskGroups}"},
    ),
    "none": Convention({}, {}),
}


def convention_for(
    scheduler: str, custom_labels: Mapping[str, str], custom_annotations: Mapping[str, str]
) -> Convention:
    if scheduler == "custom":
        return Convention(dict(custom_labels), dict(custom_annotations))
    return CONVENTIONS[scheduler]


def group_infos(workload: ResolvedWorkload) -> dict[tuple[str, str | None], GroupInfo]:
    """Group info for every pod-group member of the definition, keyed by (component, instance id).

    A member that is a multi-instance pod component also gets one entry per instance: Karta sizes such
    a member's gang from the pod's own instance only.
    """
    infos: dict[tuple[str, str | None], GroupInfo] = {}
    definition = workload.definition
    for group in definition.pod_groups:
        for member in group.members:
            name = member.component_name
            infos[(name, None)] = GroupInfo(workload.subtree_scale(name), _task_groups(workload, name))
            component = definition.component(name)
            resolved = workload.components.get(name)
            if component.instance_id_path and resolved is not None:
                for instance_id in resolved.by_id():
                    infos[(name, instance_id)] = GroupInfo(
                        workload.subtree_scale(name, instance_id), _task_groups(workload, name, instance_id)
                    )
    return infos


def _task_groups(workload: ResolvedWorkload, root: str, instance_id: str | None = None) -> tuple[TaskGroup, ...]:
    """One task group per pod-template instance in the subtree: its pods and one pod's resources."""
    definition = workload.definition
    names = [root]
    index = 0
    while index < len(names):
        names.extend(c.name for c in definition.children_of(names[index]))
        index += 1
    groups = []
    for name in names:
        resolved = workload.components.get(name)
        if resolved is None or not resolved.component.has_pod_definition:
            continue
        for instance in resolved.by_id().values():
            if instance_id is not None and name == root and instance.id != instance_id:
                continue
            members = instance.scale.effective_min if instance.scale is not None else 1
            spec = instance.pod.spec if instance.pod is not None else None
            groups.append(TaskGroup(instance.id or name, members, pod_requests(spec)))
    return tuple(groups)


def pod_requests(spec: Mapping[str, Any] | None) -> dict[str, str]:
    """Summed requests of a pod's containers, a limit standing in for a missing request."""
    totals: dict[str, Decimal] = {}
    containers = spec.get("containers") if spec else None
    for container in containers if isinstance(containers, list) else []:
        resources = container.get("resources") if isinstance(container, dict) else None
        if not isinstance(resources, dict):
            continue
        requests: Any = resources.get("requests") or {}
        limits: Any = resources.get("limits") or {}
        if not isinstance(requests, dict) or not isinstance(limits, dict):
            continue
        for name in {*requests, *limits}:
            try:
                amount = parse_quantity(requests.get(name, limits.get(name)))
            except ValueError:
                continue
            totals[name] = totals.get(name, Decimal(0)) + amount
    return {name: _format_decimal(amount) for name, amount in sorted(totals.items())}


def _format_decimal(amount: Decimal) -> str:
    if amount == amount.to_integral_value():
        return str(int(amount))
    milli = amount * 1000
    if milli == milli.to_integral_value():
        return f"{int(milli)}m"
    return str(amount.normalize())


@dataclass(frozen=True)
class PodGang:
    group: str
    component: str
    instance: str | None
    namespace: str
    info: GroupInfo | None


def desired_metadata(convention: Convention, gang: PodGang) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations a grouped pod should carry; keys needing an unknown size are left out."""
    values = {
        "group": gang.group,
        "namespace": gang.namespace,
        "component": gang.component,
        "instance": gang.instance or "",
        "task": gang.instance or gang.component,
    }
    if gang.info is not None:
        values["size"] = str(gang.info.size)
        values["taskGroups"] = json.dumps(
            [{"name": t.name, "minMember": t.min_member, "minResource": dict(t.min_resource)}
             for t in gang.info.task_groups],
            separators=(",", ":"),
        )  # fmt: skip

    def render(templates: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for key, template in templates.items():
            try:
                out[key] = template.format_map(values)
            except KeyError:
                continue  # needs the size, which is not known yet
        return out

    labels = render(convention.labels)
    annotations = render(convention.annotations)
    annotations[GROUP_ANNOTATION] = gang.group
    if gang.info is not None:
        annotations[SIZE_ANNOTATION] = str(gang.info.size)
    return labels, annotations
