"""`karta-admission gang`: what the server would do for a Ray cluster, offline, with the server's code.

Pure: objects in, entries out. For each RayCluster (a RayService or RayJob yields the one KubeRay
would create), the plan the owner cache and the controller compute (`plan_gang`), and for each part
of the gang the decision Pod admission would make for a pod made from its template (`decide`), as if
in a cluster where the scheduler's CRD is installed and no other group object of that name exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.gang.kuberay import cluster_of
from webhook.gang.plan import DEFAULT_SCHEDULER, GangPlan, plan_gang
from webhook.gang.pods import decide
from webhook.gang.settings import GangSettings
from webhook.gang.state import GroupObjectStatus
from webhook.karta.registry import DefinitionSet
from webhook.karta.resolve import ResolvedWorkload

DEFAULT_NAMESPACE = "default"


@dataclass
class PreviewEntry:
    file: str
    kind: str
    name: str
    namespace: str
    scheduler: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "kind": self.kind, "name": self.name, "namespace": self.namespace,
            "scheduler": self.scheduler, "objects": self.objects, "pods": self.pods, "notes": self.notes,
        }  # fmt: skip


def _template(
    workload: ResolvedWorkload, component: str, instance: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    resolved = workload.components.get(component)
    found = resolved.by_id().get(instance or "") if resolved is not None else None
    view = found.pod if found is not None else None
    metadata = dict(view.metadata) if view is not None and view.metadata else {}
    spec = dict(view.spec) if view is not None and view.spec else {}
    return metadata, spec


def _pods(plan: GangPlan, workload: ResolvedWorkload, notes: list[str]) -> list[dict[str, Any]]:
    gang = plan.gang
    if gang is None:
        return []
    status = GroupObjectStatus.EXPECTED if plan.scheduler.needs_group_object else GroupObjectStatus.NOT_NEEDED
    pods = []
    for task in gang.tasks:
        metadata, spec = _template(workload, task.component, task.instance)
        pod = {
            "metadata": {
                "labels": dict(metadata.get("labels") or {}),
                "annotations": dict(metadata.get("annotations") or {}),
            },
            "spec": spec,
        }
        decision = decide(pod, plan, task.name, status)
        if decision.withheld is not None and plan.withheld is None:
            notes.append(f"{task.name}: {decision.withheld.reason}: {decision.withheld.message}")
        for note in decision.notes:
            if note not in notes and note not in plan.notes:
                notes.append(note)
        scheduler_name = decision.scheduler_name or str(spec.get("schedulerName") or "") or DEFAULT_SCHEDULER
        pods.append({
            "group": task.name,
            "count": task.pods,
            "schedulerName": scheduler_name,
            "labels": dict(decision.labels),
            "annotations": dict(decision.annotations),
        })  # fmt: skip
    return pods


def preview(
    obj: Mapping[str, Any],
    file: str,
    definitions: DefinitionSet,
    settings: GangSettings,
    defaults: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> tuple[PreviewEntry | None, list[str]]:
    """The entry for one object (None when it yields no RayCluster), and notes for what was skipped."""
    cluster, notes = cluster_of(defaults(obj))
    if cluster is None:
        return None, notes
    cluster = defaults(cluster)
    meta = cluster.setdefault("metadata", {})
    if not meta.get("namespace"):
        meta["namespace"] = DEFAULT_NAMESPACE
        notes.append(f"no namespace in the file: {DEFAULT_NAMESPACE} assumed")
    if not meta.get("uid"):
        notes.append("ownerReferences[].uid is the RayCluster's uid, given by the API server (empty here)")
    compiled = definitions.for_object(cluster)
    entry = PreviewEntry(file, "RayCluster", str(meta.get("name") or ""), meta["namespace"], settings.scheduler)
    if compiled is None:
        entry.notes = [*notes, "no Karta definition covers RayCluster"]
        return entry, []
    workload = compiled.resolve(cluster)
    plan = plan_gang(workload, settings)
    if plan.group_object is not None:
        entry.objects.append(dict(plan.group_object))
    entry.notes = notes
    if plan.withheld is not None:
        entry.notes.append(f"no gang keys: {plan.withheld.reason}: {plan.withheld.message}")
    entry.notes.extend(plan.notes)
    if plan.scheduler.needs_group_object and plan.group_object is not None:
        entry.notes.append(
            f"assumes the cluster serves {plan.scheduler.group_kind} and no other object named "
            f"{plan.group_object_name!r} exists; otherwise pods get no keys"
        )
    entry.pods = _pods(plan, workload, entry.notes)
    return entry, []
