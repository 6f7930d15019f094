"""Scale and instance rules, read through the resolved Karta view (any workload kind)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from webhook.karta.resolve import Instance, ResolvedWorkload
from webhook.kube import names
from webhook.policy.model import READS_INSTANCE_IDS, READS_PODS, READS_SCALE, Finding, RuleContext, Severity, rule

# An idPath that reads a pod label: `.metadata.labels["ray.io/group"]` or `.metadata.labels.app`.
_LABEL_PATH = re.compile(r'\s*\.metadata\.labels(?:\[\s*"([^"]+)"\s*\]|\.([A-Za-z_][A-Za-z0-9_]*))\s*')


def _scaled(workload: ResolvedWorkload) -> Iterator[Instance]:
    for instance in workload.instances():
        if instance.scale is not None:
            yield instance


def _count(instance: Instance, pods: int) -> str:
    """A scale value (counted in pods) in the units the user wrote: replicas, and pods when they differ."""
    per_replica = instance.pods_per_replica
    if per_replica and per_replica > 1 and pods % per_replica == 0:
        return f"{pods // per_replica} ({pods} pods at {per_replica} per replica)"
    return str(pods)


def _runner(workload: ResolvedWorkload) -> str:
    """Who turns the scale into pods, for messages that say what would happen."""
    return "KubeRay" if workload.definition.root_kind.group == "ray.io" else "the controller"


@rule(
    "replicas-within-bounds",
    Severity.DENY,
    "an explicit, non-zero replicas lies within [minReplicas, maxReplicas]; outside it the controller "
    "silently clamps it (a warning only when an autoscaler owns replicas). replicas 0, which is also what "
    "an omitted replicas becomes, is left alone: the controller starts minReplicas, as meant",
    reads=(READS_SCALE,),
)
def replicas_within_bounds(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    soften = Severity.WARN if workload.autoscaling else None
    owner = " (the autoscaler owns replicas)" if workload.autoscaling else ""
    runner = _runner(workload)
    for instance in _scaled(workload):
        scale = instance.scale
        assert scale is not None
        replicas, low, high = scale.replicas, scale.min_replicas, scale.max_replicas
        # Nothing to say for a suspended instance (it runs no pods), for replicas 0 (the API server's
        # default for an omitted replicas, indistinguishable from an explicit 0), and where another rule
        # reports the fact (negative values, minReplicas above maxReplicas).
        if instance.suspended or replicas is None or replicas <= 0:
            continue
        if (low is not None and low < 0) or (high is not None and high < 0):
            continue
        if low is not None and high is not None and low > high:
            continue
        if high is not None and replicas > high:
            yield Finding(
                instance.field_location("replicas"),
                f"{instance.label}: replicas {_count(instance, replicas)} is above maxReplicas "
                f"{_count(instance, high)}; {runner} would run {_count(instance, high)}{owner}",
                replicas,
                excess=replicas - high,
                at_most=soften,
            )
        elif low is not None and replicas < low:
            yield Finding(
                instance.field_location("replicas"),
                f"{instance.label}: replicas {_count(instance, replicas)} is below minReplicas "
                f"{_count(instance, low)}; {runner} would run {_count(instance, low)}{owner}",
                replicas,
                excess=low - replicas,
                at_most=soften,
            )


@rule("min-not-above-max", Severity.DENY, "minReplicas is not greater than maxReplicas", reads=(READS_SCALE,))
def min_not_above_max(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    for instance in _scaled(workload):
        scale = instance.scale
        assert scale is not None
        low, high = scale.min_replicas, scale.max_replicas
        # A negative bound is its own fact (non-negative-scale); comparing it with the other bound,
        # perhaps a default the user never wrote, would report a second, misleading one.
        if low is None or high is None or low < 0 or high < 0 or low <= high:
            continue
        yield Finding(
            instance.field_location("minReplicas"),
            f"{instance.label}: minReplicas {_count(instance, low)} is greater than maxReplicas "
            f"{_count(instance, high)}; {_runner(workload)} refuses the group",
            low,
            excess=low - high,
        )


@rule(
    "non-negative-scale", Severity.DENY, "replicas, minReplicas and maxReplicas are not negative", reads=(READS_SCALE,)
)
def non_negative_scale(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    runner = _runner(workload)
    for instance in _scaled(workload):
        scale = instance.scale
        assert scale is not None
        for field, value in (("replicas", scale.replicas), ("minReplicas", scale.min_replicas),
                             ("maxReplicas", scale.max_replicas)):  # fmt: skip
            if value is None or value >= 0:
                continue
            if field == "replicas":
                start = max(scale.min_replicas or 0, 0)
                effect = f"{runner} would run {_count(instance, start)}"
            else:
                effect = f"{runner} refuses the group"
            yield Finding(
                instance.field_location(field),
                f"{instance.label}: {field} {value} is negative; {effect}",
                value,
                excess=-value,
            )


@rule(
    "pods-per-replica",
    Severity.DENY,
    "every replica has at least one pod (KubeRay numOfHosts >= 1; 0 silently gives the group no pods)",
)
def pods_per_replica(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    for instance in workload.instances():
        per_replica = instance.pods_per_replica
        if per_replica is not None and per_replica < 1:
            location = (*instance.location, "numOfHosts") if instance.location else None
            yield Finding(
                location,
                f"{instance.label}: pods per replica must be at least 1, got {per_replica}; "
                "the group would run no pods",
                per_replica,
                excess=1 - per_replica,
            )


@rule(
    "unique-instance-ids",
    Severity.DENY,
    "instance ids (e.g. worker group names) are unique",
    reads=(READS_INSTANCE_IDS,),
)
def unique_instance_ids(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    for resolved in workload.components.values():
        seen: dict[str, Instance] = {}
        for instance in resolved.instances:
            first = seen.get(instance.id)
            if first is None:
                seen[instance.id] = instance
                continue
            yield Finding(
                instance.id_location or instance.location,
                f"{resolved.component.name} name {instance.id!r} is used twice (also at index {first.index}); "
                "pods of both would be indistinguishable",
                instance.id,
            )


@rule(
    "instance-id-label-value",
    Severity.DENY,
    "instance ids that pods carry as a label value are valid label values",
    reads=(READS_INSTANCE_IDS,),
)
def instance_id_label_value(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    for resolved in workload.components.values():
        selector = resolved.component.pod_selector
        match = _LABEL_PATH.fullmatch(selector.instance_id_path) if selector and selector.instance_id_path else None
        if match is None:
            continue
        label = match.group(1) or match.group(2)
        for instance in resolved.instances:
            problems = names.label_value_problems(instance.id)
            if problems:
                yield Finding(
                    instance.id_location or instance.location,
                    f"{resolved.component.name} name {instance.id!r} becomes the pod label {label}, "
                    f"which it cannot be: {'; '.join(problems)}",
                    instance.id,
                )


@rule(
    "reserved-instance-id",
    Severity.DENY,
    "instance ids do not take a value reserved by the definition (Ray: a worker group named headgroup)",
    reads=(READS_INSTANCE_IDS,),
)
def reserved_instance_id(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    for name, resolved in workload.components.items():
        reserved = workload.definition.hints.for_component(name).reserved_instance_ids
        for instance in resolved.instances:
            if instance.id in reserved:
                yield Finding(
                    instance.id_location or instance.location,
                    f"{name} name {instance.id!r} is reserved: pods of another component carry it, so "
                    "selectors for this one would match them too",
                    instance.id,
                )


@rule("pod-template-containers", Severity.DENY, "every pod template has at least one container", reads=(READS_PODS,))
def pod_template_containers(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    for instance in workload.instances():
        pod = instance.pod
        if pod is None or pod.spec is None:
            continue
        containers = pod.spec.get("containers")
        if not isinstance(containers, list) or not containers:
            location = (*pod.spec_location, "containers") if pod.spec_location else instance.location
            yield Finding(location, f"{instance.label}: the pod template has no containers", containers)


@rule(
    "definition-resolution",
    Severity.DENY,
    "the object can be read through its Karta definition; one that cannot be read is refused in enforce mode, "
    "since the other rules cannot check it",
)
def definition_resolution(ctx: RuleContext) -> Iterator[Finding]:
    """An object that makes itself unreadable (1,000 worker groups, an empty group name) must not slip past.

    Denying is chosen over reading such an object some other way: Karta's runner fails the same paths
    (its result cap, its empty-id check), so no Karta consumer (gang sizing, the scheduler's view) could
    read the object either, and a cap-free read would let one object buy unbounded work per review.
    """
    workload = ctx.workload
    for error in workload.all_errors():
        yield Finding(
            None,
            f"the {workload.definition.name} definition cannot read this object, so the policy rules cannot "
            f"check it: {error}",
        )
