"""What one pod gets at CREATE: the scheduler's keys for its gang, its schedulerName, or nothing and why.

Pure: the pod, how the definition classifies it, and its owner's gang state in; a decision out.

Rules, whatever the scheduler:
- All or nothing per pod. A pod gets every key of its gang (and the schedulerName), or none: never
  a key for a size not known yet, never a key naming a group object that cannot exist (its CRD is not
  served, nobody creates it, or another object of that name is there).
- Defer, never fight. A key the scheduler reads that is already on the pod with another value (set
  by KubeRay's batch-scheduler integration or by the user), or a schedulerName naming another
  scheduler, means the pod is someone else's: nothing is added.
- Only add. A key already there with the same value stays (a second pass adds nothing); a
  schedulerName is set only over "" or default-scheduler.
- Trust. The product reads no value of its own annotations back (karta-admission.io/pod-group and
  -size decide nothing; whoever creates the pod can write them). They state what this product
  decided: set to its values when it groups a pod, removed when it does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonpointer import escape as escape_pointer

from webhook.gang.plan import (
    DEFAULT_SCHEDULER,
    GROUP_ANNOTATION,
    INFORMATIONAL_ANNOTATIONS,
    SIZE_ANNOTATION,
    YUNIKORN_APP_ID,
    GangPlan,
    Scheduler,
    Withheld,
    render_custom,
    scheduler_name_of,
    scheduler_of,
)
from webhook.gang.settings import GangSettings
from webhook.gang.state import GangLookup, GroupObjectStatus
from webhook.karta.model import KartaDefinition
from webhook.karta.pods import PodClaim
from webhook.kube import names

# Where YuniKorn looks for an application id, in its order (k8shim pkg/common/utils/utils.go:141-186).
YUNIKORN_APP_ID_KEYS = (
    ("labels", YUNIKORN_APP_ID),
    ("annotations", YUNIKORN_APP_ID),
    ("labels", "applicationId"),
    ("labels", "spark-app-selector"),
)

_OBJECT_WITHHELD = {
    GroupObjectStatus.FOREIGN: (
        "foreign-group-object",
        "a {kind} named {name!r} exists that karta-admission did not create; its owner decides the gang",
    ),
    GroupObjectStatus.CRD_MISSING: (
        "crd-missing",
        "the cluster does not serve {api} {kind} (the scheduler's CRD is not installed)",
    ),
    GroupObjectStatus.UNMANAGED: (
        "no-group-objects",
        "nobody creates {kind} objects here (no cluster access); a key would name a group that never appears",
    ),
    GroupObjectStatus.UNKNOWN: (
        "group-objects-unknown",
        "the {kind} objects are not listed yet",
    ),
}


@dataclass(frozen=True)
class PodDecision:
    grouped: bool = False  # the pod belongs to a gang of its definition
    labels: Mapping[str, str] = field(default_factory=dict)  # to add
    annotations: Mapping[str, str] = field(default_factory=dict)  # to add, or to set (ours only)
    remove_annotations: tuple[str, ...] = ()  # ours, found on a pod that this product does not group
    scheduler_name: str | None = None  # to set
    withheld: Withheld | None = None  # why the pod got no keys
    notes: tuple[str, ...] = ()

    def patch(self, pod: Mapping[str, Any]) -> list[dict[str, Any]]:
        """RFC 6902 operations for this decision against this pod."""
        metadata = pod.get("metadata")
        ops: list[dict[str, Any]] = []
        if not isinstance(metadata, dict):
            if not (self.labels or self.annotations):
                return self._scheduler_op(pod)
            ops.append({"op": "add", "path": "/metadata", "value": {}})
            metadata = {}
        for field_name, wanted in (("labels", self.labels), ("annotations", self.annotations)):
            existing = metadata.get(field_name)
            changed = {k: v for k, v in wanted.items() if not isinstance(existing, dict) or existing.get(k) != v}
            if not changed:
                continue
            if not isinstance(existing, dict):
                ops.append({"op": "add", "path": f"/metadata/{field_name}", "value": dict(sorted(changed.items()))})
                continue
            for key, value in sorted(changed.items()):
                # add replaces an existing member (only ever one of our own annotations).
                ops.append({"op": "add", "path": f"/metadata/{field_name}/{escape_pointer(key)}", "value": value})
        existing_annotations = metadata.get("annotations")
        for key in self.remove_annotations:
            if isinstance(existing_annotations, dict) and key in existing_annotations:
                ops.append({"op": "remove", "path": f"/metadata/annotations/{escape_pointer(key)}"})
        return ops + self._scheduler_op(pod)

    def _scheduler_op(self, pod: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.scheduler_name is None or not isinstance(pod.get("spec"), dict):
            return []
        return [{"op": "add", "path": "/spec/schedulerName", "value": self.scheduler_name}]


def _withhold(pod: Mapping[str, Any], reason: str, message: str, notes: tuple[str, ...] = ()) -> PodDecision:
    """No keys; and our own annotations, if the pod came with them, go (they would state a grouping)."""
    annotations = (pod.get("metadata") or {}).get("annotations")
    present = tuple(k for k in INFORMATIONAL_ANNOTATIONS if isinstance(annotations, dict) and k in annotations)
    return PodDecision(grouped=True, remove_annotations=present, withheld=Withheld(reason, message), notes=notes)


def decide(pod: Mapping[str, Any], plan: GangPlan, task_name: str, group_object: GroupObjectStatus) -> PodDecision:
    """The keys one pod of a planned gang gets, given what is already on it."""
    if plan.withheld is not None or plan.gang is None:
        withheld = plan.withheld or Withheld("no-gang", "no gang")
        return _withhold(pod, withheld.reason, withheld.message, plan.notes)
    scheduler = plan.scheduler
    if scheduler.needs_group_object and group_object is not GroupObjectStatus.EXPECTED:
        reason, template = _OBJECT_WITHHELD.get(group_object, ("group-objects-unknown", "{kind}: state unknown"))
        kind = scheduler.group_kind
        assert kind is not None
        message = template.format(kind=kind.kind, api=kind.api_version, name=plan.group_object_name)
        return _withhold(pod, reason, message, plan.notes)
    keys = plan.keys.get(task_name)
    if keys is None:
        return _withhold(pod, "unknown-task", f"the gang has no part named {task_name!r}", plan.notes)
    labels, annotations = _section(pod, "labels"), _section(pod, "annotations")
    current = _scheduler_name(pod)
    target = plan.scheduler_name
    if target and current not in ("", DEFAULT_SCHEDULER, target):
        return _withhold(pod, "other-scheduler", f"the pod's schedulerName is {current!r}, not {target!r}", plan.notes)
    wanted_labels = dict(keys.labels)
    wanted_annotations = dict(keys.annotations)
    notes = list(plan.notes)
    if YUNIKORN_APP_ID in wanted_annotations:
        existing = _yunikorn_app_id(labels, annotations)
        if existing is not None:
            namespace = plan.gang.namespace
            if _yunikorn_autogenerated(existing, namespace):
                return _withhold(
                    pod, "app-id-autogen",
                    f"YuniKorn's admission controller gave the pod the namespace-wide application id {existing!r}; "
                    "a gang needs one application per cluster",
                    plan.notes,
                )  # fmt: skip
            del wanted_annotations[YUNIKORN_APP_ID]
            notes.append(f"kept the pod's YuniKorn application id {existing!r}")
    conflict = _conflict(scheduler, labels, annotations, wanted_labels, wanted_annotations)
    if conflict is not None:
        return _withhold(pod, "pod-has-keys", conflict, plan.notes)
    wanted_annotations[GROUP_ANNOTATION] = plan.gang.key
    if plan.size is not None:
        wanted_annotations[SIZE_ANNOTATION] = str(plan.size)
    return PodDecision(
        grouped=True,
        labels={k: v for k, v in wanted_labels.items() if k not in labels},
        annotations={
            k: v
            for k, v in wanted_annotations.items()
            if (k not in annotations) or (k in INFORMATIONAL_ANNOTATIONS and annotations[k] != v)
        },
        scheduler_name=target if target and current in ("", DEFAULT_SCHEDULER) else None,
        notes=tuple(notes),
    )


def _conflict(
    scheduler: Scheduler,
    labels: Mapping[str, Any],
    annotations: Mapping[str, Any],
    wanted_labels: Mapping[str, str],
    wanted_annotations: Mapping[str, str],
) -> str | None:
    """A key the scheduler reads that the pod already carries with another value than ours."""
    for section, present, wanted, keys in (
        ("label", labels, wanted_labels, (*scheduler.labels, *wanted_labels)),
        ("annotation", annotations, wanted_annotations, (*scheduler.annotations, *wanted_annotations)),
    ):
        for key in keys:
            if key in present and present[key] != wanted.get(key):
                return f"the pod already has {section} {key}={present[key]!r} (KubeRay's batch scheduler or the user)"
    return None


def _yunikorn_app_id(labels: Mapping[str, Any], annotations: Mapping[str, Any]) -> str | None:
    for section, key in YUNIKORN_APP_ID_KEYS:
        value = (labels if section == "labels" else annotations).get(key)
        if value:
            return str(value)
    return None


def _yunikorn_autogenerated(app_id: str, namespace: str) -> bool:
    """The ids YuniKorn's admission controller makes up (k8shim pkg/common/utils/utils.go:122-136)."""
    return app_id in (f"yunikorn-{namespace}-autogen"[:63], f"{namespace[:26]}-uniqueautogen")


def admit_pod(
    pod: Mapping[str, Any],
    claim: PodClaim,
    definition: KartaDefinition,
    lookup: GangLookup,
    *,
    settings: GangSettings,
    namespace: str,
) -> PodDecision:
    """The decision for one pod at CREATE: its claim (component, instance, grouping) under its owner's
    definition, and its owner's gang state from the cluster edge."""
    cluster = lookup.cluster
    v2 = definition.pod_group is not None
    if cluster is None:
        if claim.grouping is None and not v2:
            return PodDecision()
        if settings.scheduler == "custom":
            miss = lookup.miss or "unknown"
            return _custom_without_owner(pod, claim, definition, settings=settings, namespace=namespace, miss=miss)
        reason = lookup.miss or "owner-unknown"
        return _withhold(pod, reason, _MISS_MESSAGES.get(reason, f"the pod's owner is not known ({reason})"))
    plan = cluster.plan
    gang = plan.gang
    if gang is None:
        if claim.grouping is None and not v2:
            return PodDecision()
        withheld = plan.withheld or Withheld("no-gang", "no gang")
        return _withhold(pod, withheld.reason, withheld.message)
    if gang.v2:
        if claim.component not in gang.components:
            return PodDecision()
    elif claim.grouping is None or claim.grouping.pod_group != gang.pod_group:
        return PodDecision()
    if claim.errors:
        return _withhold(pod, "group-key", "; ".join(claim.errors))
    if not gang.v2 and claim.group_name != gang.key:
        return _withhold(
            pod, "group-key-mismatch",
            f"the pod's group key {claim.group_name!r} is not its {gang.owner.kind}'s name {gang.key!r}: "
            "one gang per owner is what karta-admission sizes",
        )  # fmt: skip
    task = gang.task_for(claim.component, claim.instance_id)
    if task is None:
        label = f"{claim.component} {claim.instance_id!r}" if claim.instance_id else claim.component
        return _withhold(pod, "unknown-task", f"{label} is not in the {gang.owner.kind}'s spec as last seen")
    return decide(pod, plan, task.name, cluster.group_object)


_MISS_MESSAGES = {
    "no-cluster": "no cluster access: the pod's owner and its gang are not known, and nobody creates group objects",
    "absent": "the pod's owner is not in the owner cache (yet)",
    "uid": "the pod's owner in the owner cache is another object of the same name",
    "stale": "the Karta definitions changed; the owner cache is catching up",
}


def _custom_without_owner(
    pod: Mapping[str, Any],
    claim: PodClaim,
    definition: KartaDefinition,
    *,
    settings: GangSettings,
    namespace: str,
    miss: str,
) -> PodDecision:
    """A custom convention needs no group object: keys that need no size are written from the pod alone."""
    if claim.errors or claim.group_name is None:
        return _withhold(pod, "group-key", "; ".join(claim.errors) or "no group key")
    hint = definition.hints.for_component(claim.component).sub_group_name
    values = {
        "group": claim.group_name, "namespace": namespace, "component": claim.component,
        "instance": claim.instance_id or "", "task": claim.instance_id or hint or claim.component,
    }  # fmt: skip
    labels, missing_labels = render_custom(settings.custom_labels, values)
    annotations, missing_annotations = render_custom(settings.custom_annotations, values)
    for key, value in labels.items():
        if names.label_value_problems(value):
            return _withhold(pod, "invalid-label", f"label {key}={value!r} is not a valid label value")
    scheduler = scheduler_of(settings)
    conflict = _conflict(scheduler, _section(pod, "labels"), _section(pod, "annotations"), labels, annotations)
    if conflict is not None:
        return _withhold(pod, "pod-has-keys", conflict)
    current = _scheduler_name(pod)
    target = scheduler_name_of(settings)
    if target and current not in ("", DEFAULT_SCHEDULER, target):
        return _withhold(pod, "other-scheduler", f"the pod's schedulerName is {current!r}, not {target!r}")
    present_labels, present_annotations = _section(pod, "labels"), _section(pod, "annotations")
    annotations[GROUP_ANNOTATION] = claim.group_name
    missing = [*missing_labels, *missing_annotations]
    return PodDecision(
        grouped=True,
        labels={k: v for k, v in labels.items() if k not in present_labels},
        annotations={
            k: v
            for k, v in annotations.items()
            if k not in present_annotations or (k == GROUP_ANNOTATION and present_annotations[k] != v)
        },
        remove_annotations=(SIZE_ANNOTATION,) if SIZE_ANNOTATION in present_annotations else (),
        scheduler_name=target if target and current in ("", DEFAULT_SCHEDULER) else None,
        withheld=Withheld("size-unknown", f"{', '.join(missing)} need the gang's size, not known ({miss})")
        if missing
        else None,
    )


def _section(pod: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = (pod.get("metadata") or {}).get(name)
    return section if isinstance(section, dict) else {}


def _scheduler_name(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec")
    return str(spec.get("schedulerName") or "") if isinstance(spec, dict) else ""
