"""Rules specific to KubeRay: checks its controller makes only after the object is stored.

These read the Ray object directly (its cluster spec sits at a known place per kind) because what
they check has no counterpart in a Karta definition. Each mirrors a KubeRay validation that today
ends as a Ready=False/ValidationFailed condition or a warning event instead of an error at apply time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from webhook.karta.resolve import ResolvedWorkload
from webhook.kube import names
from webhook.kube.fieldpath import PathParts
from webhook.policy.model import Finding, RuleContext, Severity, rule

RAY_GROUP = "ray.io"
# Where each kind keeps the RayClusterSpec it runs.
CLUSTER_SPEC_PATHS: dict[str, PathParts] = {
    "RayCluster": ("spec",),
    "RayService": ("spec", "rayClusterConfig"),
    "RayJob": ("spec", "rayClusterSpec"),
}
# KubeRay appends "-xxxxx" to RayService and RayJob names for their clusters (53 - 6).
NAME_LIMITS = {"RayCluster": 53, "RayService": 47, "RayJob": 47}
_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")


def _cluster_spec(workload: ResolvedWorkload) -> tuple[PathParts, Mapping[str, Any]] | None:
    path = CLUSTER_SPEC_PATHS.get(workload.kind)
    node: Any = workload.obj
    for part in path or ():
        node = node.get(part) if isinstance(node, dict) else None
    return (path, node) if path is not None and isinstance(node, dict) else None


@rule(
    "ray-name",
    Severity.DENY,
    "the name fits KubeRay's limits (RayCluster 53 characters, RayService and RayJob 47) and is a DNS-1035 label",
    api_group=RAY_GROUP,
)
def ray_name(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    name = (workload.obj.get("metadata") or {}).get("name")
    limit = NAME_LIMITS.get(workload.kind)
    if not isinstance(name, str) or not name or limit is None:
        return  # generateName: the final name is not known at admission
    if len(name) > limit:
        yield Finding(
            ("metadata", "name"),
            f"{workload.kind} name {name!r} has {len(name)} characters; KubeRay accepts at most {limit}",
            name,
        )
    elif not names.is_dns1035_label(name):
        yield Finding(
            ("metadata", "name"),
            f"{workload.kind} name {name!r} must be a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter); KubeRay refuses it",
            name,
        )


@rule(
    "ray-nested-upgrade-strategy",
    Severity.DENY,
    "a RayService or RayJob does not set upgradeStrategy inside its cluster spec (the RayCluster it "
    "creates would be refused)",
    api_group=RAY_GROUP,
    kinds=("RayService", "RayJob"),
)
def ray_nested_upgrade_strategy(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    if workload.kind not in {"RayService", "RayJob"}:
        return
    found = _cluster_spec(workload)
    if found is None:
        return
    path, spec = found
    strategy = spec.get("upgradeStrategy")
    if isinstance(strategy, dict) and strategy.get("type") is not None:
        yield Finding(
            (*path, "upgradeStrategy"),
            f"upgradeStrategy cannot be set in the cluster spec of a {workload.kind}: KubeRay refuses the "
            f"RayCluster it creates from it",
            dict(strategy),
        )


@rule(
    "ray-resources-conflict",
    Severity.DENY,
    "a group sets Ray resources either in rayStartParams or in resources, not both (KubeRay refuses both)",
    api_group=RAY_GROUP,
)
def ray_resources_conflict(ctx: RuleContext) -> Iterator[Finding]:
    workload = ctx.workload
    found = _cluster_spec(workload)
    if found is None:
        return
    path, spec = found
    groups: list[tuple[PathParts, Any]] = [((*path, "headGroupSpec"), spec.get("headGroupSpec"))]
    workers = spec.get("workerGroupSpecs")
    for index, group in enumerate(workers if isinstance(workers, list) else []):
        groups.append(((*path, "workerGroupSpecs", index), group))
    for location, group in groups:
        if not isinstance(group, dict):
            continue
        params = group.get("rayStartParams")
        resources = group.get("resources")
        clashing = sorted(k for k in params if k in _RESOURCE_PARAMS) if isinstance(params, dict) else []
        if clashing and isinstance(resources, dict) and resources:
            label = "head group" if location[-1] == "headGroupSpec" else f"worker group {group.get('groupName')!r}"
            yield Finding(
                (*location, "resources"),
                f"{label}: resources is set together with rayStartParams {', '.join(clashing)}; "
                "KubeRay accepts only one of them",
                sorted(resources),
            )
