"""Per scheduler: the group object a gang needs and the keys its pods carry. Pure: a gang in, a plan out.

Each scheduler's contract, read from its source, is in reference/gang-schedulers.md; the citations
in tests/unit/test_gang_schedulers.py check the plan against it. In short:

- coscheduling: `scheduling.x-k8s.io/v1alpha1 PodGroup` `<cluster>`; pod label
  `scheduling.x-k8s.io/pod-group`.
- volcano: `scheduling.volcano.sh/v1beta1 PodGroup` `ray-<cluster>-pg`; pod annotations
  `scheduling.k8s.io/group-name`, `volcano.sh/task-spec`.
- kai: `scheduling.run.ai/v2alpha2 PodGroup` `<cluster>` with a sub-group per task; pod annotations
  `pod-group-name`, `kai.scheduler/skip-podgrouper`, label `kai.scheduler/subgroup-name`.
- kueue: no object; label `kueue.x-k8s.io/pod-group-name` and the exact pod count in annotation
  `kueue.x-k8s.io/pod-group-total-count`.
- yunikorn: no object; annotations `yunikorn.apache.org/app-id`, `task-group-name`, `task-groups`.
- custom: no object; the configured templates.

The group objects are created by the controller (webhook/cluster/podgroups.py), the pod keys
written at Pod CREATE (webhook/gang/pods.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.gang.settings import GangSettings
from webhook.gang.sizes import Gang, GangError, Task, gang_of
from webhook.karta.model import GVK
from webhook.karta.resolve import ResolvedWorkload
from webhook.kube import names

# Marks the group objects this product creates; the controller never touches an object without it.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "karta-admission"
# The spec fields the controller sets on its group object, so that it can drop one it no longer sets.
MANAGED_FIELDS_ANNOTATION = "karta-admission.io/managed-fields"
# Written on grouped pods next to the scheduler's keys, so that the grouping can be seen and audited.
GROUP_ANNOTATION = "karta-admission.io/pod-group"
SIZE_ANNOTATION = "karta-admission.io/pod-group-size"
INFORMATIONAL_ANNOTATIONS = (GROUP_ANNOTATION, SIZE_ANNOTATION)

DEFAULT_SCHEDULER = "default-scheduler"
# The API server refuses an object whose annotations add up to more than 256 KiB; YuniKorn's task
# groups repeat every template's placement, so they are bounded well below that.
TASK_GROUPS_MAX_BYTES = 64 * 1024

# Owner labels the schedulers' own KubeRay integrations read (reference/kuberay.md §6).
VOLCANO_QUEUE_LABEL = "volcano.sh/queue-name"
RAY_PRIORITY_CLASS_LABEL = "ray.io/priority-class-name"
KAI_QUEUE_LABEL = "kai.scheduler/queue"
KAI_DEFAULT_QUEUE = "default-queue"  # KAI's pod-grouper default (plugins/constants/constants.go:22)
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

YUNIKORN_APP_ID = "yunikorn.apache.org/app-id"
YUNIKORN_TASK_GROUP_NAME = "yunikorn.apache.org/task-group-name"
YUNIKORN_TASK_GROUPS = "yunikorn.apache.org/task-groups"


@dataclass(frozen=True)
class Scheduler:
    """A gang scheduler's conventions: its usual name, its group object and the pod keys it reads."""

    name: str
    scheduler_name: str  # its usual spec.schedulerName; "" when it needs none
    group_kind: GVK | None  # the group object it needs; None when it needs none
    labels: tuple[str, ...] = ()  # pod label keys it reads: already set by someone else means defer
    annotations: tuple[str, ...] = ()

    @property
    def needs_group_object(self) -> bool:
        return self.group_kind is not None


SCHEDULERS: dict[str, Scheduler] = {
    "coscheduling": Scheduler(
        "coscheduling",
        "scheduler-plugins-scheduler",
        GVK("scheduling.x-k8s.io", "v1alpha1", "PodGroup"),
        labels=("scheduling.x-k8s.io/pod-group",),
    ),
    "volcano": Scheduler(
        "volcano",
        "volcano",
        GVK("scheduling.volcano.sh", "v1beta1", "PodGroup"),
        annotations=("scheduling.k8s.io/group-name", "volcano.sh/task-spec"),
    ),
    "kai": Scheduler(
        "kai",
        "kai-scheduler",
        GVK("scheduling.run.ai", "v2alpha2", "PodGroup"),
        labels=("kai.scheduler/subgroup-name",),
        annotations=("pod-group-name", "kai.scheduler/skip-podgrouper"),
    ),
    "kueue": Scheduler(
        "kueue",
        "",
        None,
        labels=("kueue.x-k8s.io/pod-group-name",),
        annotations=("kueue.x-k8s.io/pod-group-total-count",),
    ),
    "yunikorn": Scheduler("yunikorn", "yunikorn", None, annotations=(YUNIKORN_TASK_GROUP_NAME, YUNIKORN_TASK_GROUPS)),
    "custom": Scheduler("custom", "", None),
    "none": Scheduler("none", "", None),
}


def scheduler_of(settings: GangSettings) -> Scheduler:
    """The configured scheduler; for `custom`, its pod keys are the configured templates' keys."""
    base = SCHEDULERS[settings.scheduler]
    if settings.scheduler == "custom":
        return Scheduler("custom", "", None, tuple(settings.custom_labels), tuple(settings.custom_annotations))
    return base


def scheduler_name_of(settings: GangSettings) -> str:
    """spec.schedulerName to set on grouped pods ("" leaves it alone)."""
    if settings.scheduler_name is not None:
        return settings.scheduler_name
    return scheduler_of(settings).scheduler_name


@dataclass(frozen=True)
class PodKeys:
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Withheld:
    """Why pods get no gang keys: a stable reason (a metric label) and a sentence for people."""

    reason: str
    message: str


@dataclass(frozen=True)
class GangPlan:
    """Everything the controller and Pod admission do for one owner object under one scheduler."""

    scheduler: Scheduler
    gang: Gang | None
    group_object: Mapping[str, Any] | None  # the full object the controller keeps; None: none needed, or withheld
    scheduler_name: str  # set on grouped pods whose schedulerName is empty or default-scheduler; "": never
    keys: Mapping[str, PodKeys]  # per task name
    size: int | None  # the size the scheduler enforces (minimum gang; Kueue: exact pod count)
    withheld: Withheld | None = None  # set: no pod of this owner gets keys
    notes: tuple[str, ...] = ()

    @property
    def group_object_name(self) -> str | None:
        return str(self.group_object["metadata"]["name"]) if self.group_object is not None else None


def plan_gang(workload: ResolvedWorkload, settings: GangSettings) -> GangPlan:
    """The plan for one resolved owner object (a RayCluster) under the configured scheduler."""
    scheduler = scheduler_of(settings)
    try:
        gang = gang_of(workload)
    except GangError as exc:
        return _withheld(scheduler, settings, None, "no-gang", str(exc))
    return plan_for_gang(gang, settings)


def plan_for_gang(gang: Gang, settings: GangSettings) -> GangPlan:
    scheduler = scheduler_of(settings)
    if gang.minimum < 1:
        return _withheld(scheduler, settings, gang, "empty-gang", "the gang's minimum is 0 pods")
    if scheduler.name == "none":
        return _withheld(scheduler, settings, gang, "scheduler-none", "gang.scheduler is none")
    builder = _BUILDERS[scheduler.name]
    return builder(gang, settings, scheduler)


def _withheld(scheduler: Scheduler, settings: GangSettings, gang: Gang | None, reason: str, message: str) -> GangPlan:
    return GangPlan(scheduler, gang, None, scheduler_name_of(settings), {}, None, Withheld(reason, message))


def _label_problem(keys: Mapping[str, PodKeys]) -> str | None:
    for pod_keys in keys.values():
        for key, value in pod_keys.labels.items():
            problems = names.label_value_problems(value)
            if problems:
                return f"label {key}={value!r} is not a valid label value: {problems[0]}"
    return None


def _finish(
    scheduler: Scheduler,
    settings: GangSettings,
    gang: Gang,
    group_object: Mapping[str, Any] | None,
    keys: dict[str, PodKeys],
    *,
    size: int,
    notes: tuple[str, ...] = (),
) -> GangPlan:
    problem = _label_problem(keys)
    if problem:
        return _withheld(scheduler, settings, gang, "invalid-label", problem)
    if group_object is not None and not names.is_dns1123_subdomain(str(group_object["metadata"]["name"])):
        name = group_object["metadata"]["name"]
        return _withheld(scheduler, settings, gang, "invalid-name", f"{name!r} is not a valid object name")
    return GangPlan(scheduler, gang, group_object, scheduler_name_of(settings), keys, size, None, notes)


def group_object(scheduler: Scheduler, gang: Gang, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A full group object: ours (label), owned by the gang's owner (garbage-collected with it).

    No blockOwnerDeletion: setting it needs update rights on the owner's finalizers, and nothing here
    must wait for the group object to go.
    """
    assert scheduler.group_kind is not None
    return {
        "apiVersion": scheduler.group_kind.api_version,
        "kind": scheduler.group_kind.kind,
        "metadata": {
            "name": name,
            "namespace": gang.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {GROUP_ANNOTATION: gang.key, MANAGED_FIELDS_ANNOTATION: ",".join(sorted(spec))},
            "ownerReferences": [
                {
                    "apiVersion": gang.owner.api_version,
                    "kind": gang.owner.kind,
                    "name": gang.owner.name,
                    "uid": gang.owner.uid,
                    "controller": True,
                }
            ],
        },
        "spec": dict(spec),
    }


def _with_resources(spec: dict[str, Any], gang: Gang, field_name: str) -> dict[str, Any]:
    resources = gang.resources("minimum")
    if resources:
        spec[field_name] = resources
    return spec


# --- per scheduler ----------------------------------------------------------------------------


def _coscheduling(gang: Gang, settings: GangSettings, scheduler: Scheduler) -> GangPlan:
    """scheduler-plugins Coscheduling: PodGroup named after the cluster (as KubeRay names it), label on pods."""
    name = gang.key
    spec = _with_resources({"minMember": gang.minimum}, gang, "minResources")
    if settings.schedule_timeout_seconds is not None:
        spec["scheduleTimeoutSeconds"] = settings.schedule_timeout_seconds
    keys = {t.name: PodKeys(labels={"scheduling.x-k8s.io/pod-group": name}) for t in gang.tasks}
    return _finish(scheduler, settings, gang, group_object(scheduler, gang, name, spec), keys, size=gang.minimum)


def _volcano(gang: Gang, settings: GangSettings, scheduler: Scheduler) -> GangPlan:
    """Volcano: PodGroup ray-<cluster>-pg (KubeRay's name), queue and priority from the owner's labels."""
    name = f"ray-{gang.key}-pg"
    spec = _with_resources({"minMember": gang.minimum}, gang, "minResources")
    queue = gang.labels.get(VOLCANO_QUEUE_LABEL)
    if queue:
        if not names.is_dns1123_subdomain(queue):
            return _withheld(
                scheduler, settings, gang, "invalid-queue", f"label {VOLCANO_QUEUE_LABEL}={queue!r} is not a queue name"
            )
        spec["queue"] = queue
    priority = gang.labels.get(RAY_PRIORITY_CLASS_LABEL)
    if priority:
        spec["priorityClassName"] = priority
    keys = {
        t.name: PodKeys(annotations={"scheduling.k8s.io/group-name": name, "volcano.sh/task-spec": t.name})
        for t in gang.tasks
    }
    return _finish(scheduler, settings, gang, group_object(scheduler, gang, name, spec), keys, size=gang.minimum)


def _kai(gang: Gang, settings: GangSettings, scheduler: Scheduler) -> GangPlan:
    """KAI's external PodGroup: sub-groups per task, pod-grouper told to skip the pods."""
    name = gang.key
    queue = gang.labels.get(KAI_QUEUE_LABEL) or KAI_DEFAULT_QUEUE
    spec: dict[str, Any] = {"minMember": gang.minimum, "queue": queue}
    notes: tuple[str, ...] = ()
    # A sub-group name must be a DNS label (the CRD's pattern); every task gets one, even with a
    # minimum of 0, since a pod naming a sub-group that does not exist is ignored by KAI.
    use_sub_groups = all(names.is_dns1123_label(t.name) for t in gang.tasks)
    if use_sub_groups:
        spec["subGroups"] = [{"name": t.name, "minMember": t.minimum} for t in gang.tasks]
    else:
        bad = [t.name for t in gang.tasks if not names.is_dns1123_label(t.name)]
        notes = (f"no KAI sub-groups: {', '.join(map(repr, bad))} is not a DNS label; one gang of {gang.minimum}",)
    priority = gang.labels.get(RAY_PRIORITY_CLASS_LABEL)
    if priority:
        spec["priorityClassName"] = priority
    keys = {
        t.name: PodKeys(
            labels={"kai.scheduler/subgroup-name": t.name} if use_sub_groups else {},
            annotations={"pod-group-name": name, "kai.scheduler/skip-podgrouper": "true"},
        )
        for t in gang.tasks
    }
    group = group_object(scheduler, gang, name, spec)
    return _finish(scheduler, settings, gang, group, keys, size=gang.minimum, notes=notes)


def _kueue(gang: Gang, settings: GangSettings, scheduler: Scheduler) -> GangPlan:
    """Kueue plain-pod group: the exact pod count on every pod, or nothing."""
    if gang.autoscaling:
        return _withheld(
            scheduler, settings, gang, "autoscaling",
            "an autoscaler changes the cluster's size and a Kueue pod group needs its exact pod count; "
            f"use Kueue's RayCluster integration instead (label {KUEUE_QUEUE_LABEL} on the RayCluster)",
        )  # fmt: skip
    if gang.labels.get(KUEUE_QUEUE_LABEL):
        return _withheld(
            scheduler, settings, gang, "kueue-manages-owner",
            f"the {gang.owner.kind} has label {KUEUE_QUEUE_LABEL}: Kueue admits it as a whole, its pods' "
            "group keys would be ignored",
        )  # fmt: skip
    count = gang.pods
    keys = {
        t.name: PodKeys(
            labels={"kueue.x-k8s.io/pod-group-name": gang.key},
            annotations={"kueue.x-k8s.io/pod-group-total-count": str(count)},
        )
        for t in gang.tasks
    }
    return _finish(scheduler, settings, gang, None, keys, size=count)


def yunikorn_app_id(namespace: str, key: str) -> str:
    """An application id unique across namespaces (YuniKorn's ids are cluster-wide: context.go:1016,
    1048) through a digest of the pair, a valid label value (placeholder pods are labelled with it,
    placeholder.go:117-119) and, cut at 28 characters, still part of a valid pod name
    (`tg-<appID[:28]>-<taskGroup[:20]>-<nonce>`, gang_utils.go:61-66): lowercase, digits and dashes."""
    digest = hashlib.sha256(f"{namespace}/{key}".encode()).hexdigest()[:10]
    head = f"{namespace}-{key}".lower().replace(".", "-").replace("_", "-")
    head = head[: names.LABEL_VALUE_MAX - len(digest) - 1].strip("-")
    return f"{head}-{digest}"


def task_group(task: Task) -> dict[str, Any]:
    """A YuniKorn task group: its members' minimum and one pod's resources, and the template's
    placement, since a placeholder is placed from the task group alone (placeholder.go:149-152)."""
    group: dict[str, Any] = {"name": task.name, "minMember": task.minimum, "minResource": dict(task.resources)}
    group.update(task.placement)
    return group


def _yunikorn(gang: Gang, settings: GangSettings, scheduler: Scheduler) -> GangPlan:
    """YuniKorn: one application per cluster, task groups with a minimum above 0 on every pod."""
    bad = [t.name for t in gang.tasks if not names.is_dns1123_label(t.name)]
    if bad:
        # Placeholder pods are named after the task group: tg-<app>-<taskGroup[:20]>-<nonce>.
        return _withheld(
            scheduler, settings, gang, "invalid-name",
            f"{', '.join(map(repr, bad))} cannot name YuniKorn placeholder pods (tg-<app>-<task group>-<nonce> "
            "must be a valid pod name: lowercase letters, digits and dashes)",
        )  # fmt: skip
    grouped = [t for t in gang.tasks if t.minimum > 0]
    left_out = [t.name for t in gang.tasks if t.minimum == 0]
    task_groups = json.dumps([task_group(t) for t in grouped], separators=(",", ":"), sort_keys=True)
    if len(task_groups.encode()) > TASK_GROUPS_MAX_BYTES:
        return _withheld(
            scheduler, settings, gang, "too-large",
            f"the task groups take {len(task_groups.encode())} bytes, more than {TASK_GROUPS_MAX_BYTES} in a pod "
            "annotation",
        )  # fmt: skip
    app_id = yunikorn_app_id(gang.namespace, gang.key)
    keys = {}
    for t in gang.tasks:
        annotations = {YUNIKORN_APP_ID: app_id, YUNIKORN_TASK_GROUPS: task_groups}
        if t.minimum > 0:
            annotations[YUNIKORN_TASK_GROUP_NAME] = t.name
        keys[t.name] = PodKeys(annotations=annotations)
    notes = (
        (f"no task group for {', '.join(map(repr, left_out))} (its minimum is 0; YuniKorn refuses a task group "
         "of 0 members): those pods are scheduled outside the gang",)
        if left_out else ()
    )  # fmt: skip
    return _finish(scheduler, settings, gang, None, keys, size=gang.minimum, notes=notes)


def render_custom(templates: Mapping[str, str], values: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Rendered templates, and the keys left out because they need a value not known (the size)."""
    out: dict[str, str] = {}
    missing: list[str] = []
    for key, template in templates.items():
        try:
            out[key] = template.format_map(values)
        except KeyError:
            missing.append(key)
    return out, missing


def _custom(gang: Gang, settings: GangSettings, scheduler: Scheduler) -> GangPlan:
    keys = {}
    for t in gang.tasks:
        values = {
            "group": gang.key, "size": str(gang.minimum), "namespace": gang.namespace,
            "component": t.component, "instance": t.instance or "", "task": t.name,
        }  # fmt: skip
        labels, _ = render_custom(settings.custom_labels, values)
        annotations, _ = render_custom(settings.custom_annotations, values)
        keys[t.name] = PodKeys(labels, annotations)
    return _finish(scheduler, settings, gang, None, keys, size=gang.minimum)


_BUILDERS: dict[str, Callable[[Gang, GangSettings, Scheduler], GangPlan]] = {
    "coscheduling": _coscheduling,
    "volcano": _volcano,
    "kai": _kai,
    "kueue": _kueue,
    "yunikorn": _yunikorn,
    "custom": _custom,
}
