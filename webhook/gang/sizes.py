"""The gang of one pod-owning object, read through its Karta definition: its parts and their sizes.

Pure. A gang is everything one owner object (a RayCluster) runs under the definition's gang
instructions: one task per pod-template instance (the head, each worker group), with the pods the
operator runs for it now and its share of the minimum gang.

Sizes follow KubeRay (reference/kuberay.md §3): a task runs 0 pods when suspended, otherwise its
replicas clamped into [minReplicas, maxReplicas] (a missing replicas starts at minReplicas). The Ray
definitions count scale in pods (replicas × numOfHosts, docs/definitions.md), so that clamp already
is a pod count. The minimum gang is every pod, except that under an autoscaler a task's share is its
minReplicas (a task without a minReplicasPath, the head, counts all its pods).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from webhook.karta.model import Component, KartaDefinition
from webhook.karta.resolve import Instance, ResolvedWorkload
from webhook.kube.quantity import parse_quantity

# Template fields a placeholder needs to land where the real pod would (YuniKorn task groups).
PLACEMENT_FIELDS = ("nodeSelector", "tolerations", "affinity")


class GangError(ValueError):
    """Why an object has no gang this product can size (the message says what and where)."""


@dataclass(frozen=True)
class OwnerRef:
    api_version: str
    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class Task:
    """One part of a gang: the pods of one pod-template instance (Ray: the head, or one worker group)."""

    name: str  # the instance id (Ray: groupName), else the component's subGroupName hint or its name
    component: str
    instance: str | None  # None for a component without instance ids
    pods: int  # pods the operator runs for it now
    minimum: int  # its share of the minimum gang (0 <= minimum <= pods)
    resources: Mapping[str, str]  # one pod's requests (limits standing in for missing requests)
    placement: Mapping[str, Any] = field(default_factory=dict)  # the template's nodeSelector, tolerations, affinity


@dataclass(frozen=True)
class Gang:
    """The gang of one owner object: one group per owner, the group key being the owner's name."""

    owner: OwnerRef
    namespace: str
    key: str  # the group key pods of this owner carry (Ray: ray.io/cluster, the RayCluster's name)
    pod_group: str  # the Karta gang instruction it comes from (podGroups[0].name or podGroup.name)
    v2: bool  # from Karta's v2 `podGroup` block (no groupByKeyPaths: every pod of the owner is in)
    autoscaling: bool
    tasks: tuple[Task, ...]
    labels: Mapping[str, str]  # the owner's labels (queue names and the like)

    @property
    def pods(self) -> int:
        return sum(t.pods for t in self.tasks)

    @property
    def minimum(self) -> int:
        return sum(t.minimum for t in self.tasks)

    @property
    def components(self) -> frozenset[str]:
        return frozenset(t.component for t in self.tasks)

    def task_for(self, component: str, instance: str | None) -> Task | None:
        for task in self.tasks:
            if task.component == component and (task.instance is None or task.instance == instance):
                return task
        return None

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def resources(self, count: str = "minimum") -> dict[str, str]:
        """Summed requests of the minimum gang's pods ("minimum") or of all its pods ("pods")."""
        totals: dict[str, Decimal] = {}
        for task in self.tasks:
            times = task.minimum if count == "minimum" else task.pods
            if times <= 0:
                continue
            for name, quantity in task.resources.items():
                totals[name] = totals.get(name, Decimal(0)) + parse_quantity(quantity) * times
        return {name: format_quantity(amount) for name, amount in sorted(totals.items())}


def owns_pods(definition: KartaDefinition) -> bool:
    """The root kind is the controller of its pods: every pod component hangs directly under the root.

    A RayService's pods belong to the RayCluster it creates (an intermediate component), so a gang
    is sized from that RayCluster, never from the RayService.
    """
    leaves = [c for c in definition.components if c.has_pod_definition]
    root = definition.root.name
    return bool(leaves) and all(root in (c.name, c.owner_ref) for c in leaves)


def has_gang_instructions(definition: KartaDefinition) -> bool:
    return bool(definition.pod_groups) or definition.pod_group is not None


def gang_components(definition: KartaDefinition) -> tuple[str, str, bool]:
    """The components whose subtrees form the gang: (instruction name, comma-joined roots, v2).

    Karta's v2 `podGroup` wins over the alpha `podGroups` when both are set (KAI's rule,
    reference/karta.md §1.2); only the first `podGroups` entry is used: one gang per owner.
    """
    if definition.pod_group is not None:
        roots = definition.pod_group.sub_groups or (definition.root.name,)
        return definition.pod_group.name, ",".join(roots), True
    if not definition.pod_groups:
        raise GangError("the definition has no gang-scheduling instructions")
    group = definition.pod_groups[0]
    for member in group.members:
        if member.filters:
            # Filters are evaluated on pods: the owner alone cannot tell which pods they keep out.
            raise GangError(
                f"podGroups '{group.name}' member '{member.component_name}' has filters; a gang with filtered "
                "members cannot be sized from its owner"
            )
    return group.name, ",".join(m.component_name for m in group.members), False


def _subtree(definition: KartaDefinition, roots: list[str]) -> list[Component]:
    names: list[str] = []
    queue = list(roots)
    while queue:
        name = queue.pop(0)
        if name in names:
            continue
        names.append(name)
        queue.extend(c.name for c in definition.children_of(name))
    return [definition.component(n) for n in names]


def clamp_pods(instance: Instance) -> int:
    """The pods the operator runs for an instance now (KubeRay's GetWorkerGroupDesiredReplicas)."""
    if instance.suspended:
        return 0
    scale = instance.scale
    if scale is None:
        return 1
    low = scale.min_replicas if scale.min_replicas is not None else 0
    replicas = scale.replicas if scale.replicas is not None else low
    if replicas < low:
        replicas = low
    elif scale.max_replicas is not None and replicas > scale.max_replicas:
        replicas = scale.max_replicas
    return max(replicas, 0)


def minimum_pods(instance: Instance, pods: int, autoscaling: bool) -> int:
    """An instance's share of the minimum gang: all its pods, or minReplicas under an autoscaler."""
    if not autoscaling or instance.scale is None or instance.scale.min_replicas is None:
        return pods
    return min(max(instance.scale.min_replicas, 0), pods)


def gang_of(workload: ResolvedWorkload) -> Gang:
    """The gang of a resolved owner object; GangError when it has none this product can size."""
    definition = workload.definition
    errors = workload.all_errors()
    if errors:
        raise GangError("the object cannot be resolved through its definition: " + "; ".join(errors))
    if not owns_pods(definition):
        raise GangError(f"{definition.root_kind.kind} does not own its pods directly; its pods' owner has the gang")
    pod_group, roots, v2 = gang_components(definition)
    meta = workload.obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise GangError("the object has no metadata.name")
    for root in roots.split(","):
        try:
            definition.component(root)
        except KeyError:
            raise GangError(f"gang member component '{root}' is not defined") from None
    tasks: list[Task] = []
    for component in _subtree(definition, roots.split(",")):
        if not component.has_pod_definition:
            continue
        resolved = workload.components.get(component.name)
        hint = definition.hints.for_component(component.name).sub_group_name
        for instance in resolved.by_id().values() if resolved is not None else ():
            multi = bool(component.instance_id_path)
            pods = clamp_pods(instance)
            spec = instance.pod.spec if instance.pod is not None else None
            tasks.append(
                Task(
                    name=instance.id if multi else (hint or component.name),
                    component=component.name,
                    instance=instance.id if multi else None,
                    pods=pods,
                    minimum=minimum_pods(instance, pods, workload.autoscaling),
                    resources=pod_requests(spec),
                    placement={k: spec[k] for k in PLACEMENT_FIELDS if isinstance(spec, dict) and spec.get(k)},
                )
            )
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GangError(f"several parts of the gang are named {', '.join(map(repr, duplicates))}")
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    owner = OwnerRef(str(workload.obj.get("apiVersion") or ""), workload.kind, name, str(meta.get("uid") or ""))
    return Gang(
        owner=owner,
        namespace=workload.namespace,
        key=name,
        pod_group=pod_group,
        v2=v2,
        autoscaling=workload.autoscaling,
        tasks=tuple(tasks),
        labels={str(k): str(v) for k, v in (labels or {}).items()},
    )


def pod_requests(spec: Mapping[str, Any] | None) -> dict[str, str]:
    """Summed requests of a pod's containers, a limit standing in for a missing request (as KubeRay
    counts them; init containers are not counted)."""
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
            except (ValueError, TypeError):
                continue
            totals[str(name)] = totals.get(str(name), Decimal(0)) + amount
    return {name: format_quantity(amount) for name, amount in sorted(totals.items())}


def format_quantity(amount: Decimal) -> str:
    """A Kubernetes quantity string: whole units, else milli-units, else the decimal itself."""
    if amount == amount.to_integral_value():
        return str(int(amount))
    milli = amount * 1000
    if milli == milli.to_integral_value():
        return f"{int(milli)}m"
    return str(amount.normalize())
