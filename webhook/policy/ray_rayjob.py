"""KubeRay's checks of a RayJob outside its cluster spec: ValidateRayJobSpec (validation.go at feeaf72f)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from webhook.kube.fieldpath import PathParts
from webhook.policy.kuberay import RAY_GROUP
from webhook.policy.model import Finding, RuleContext, Severity, rule
from webhook.policy.ray_spec import as_list, as_map, cluster_view, spec_of

SPEC: PathParts = ("spec",)
# KubeRay deletes in this order; a later step's TTL may not be shorter than an earlier one's.
DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")


def _job(ctx: RuleContext) -> Mapping[str, Any] | None:
    return spec_of(ctx) if ctx.workload.kind == "RayJob" else None


def _selector_mode(spec: Mapping[str, Any]) -> bool:
    return bool(as_map(spec.get("clusterSelector")))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _autoscaling(ctx: RuleContext) -> bool:
    cluster = cluster_view(ctx.workload)
    return cluster is not None and cluster.autoscaling


@rule(
    "ray-job-cluster-source",
    Severity.DENY,
    "a RayJob has a rayClusterSpec or a clusterSelector naming a cluster (ray.io/cluster)",
    api_group=RAY_GROUP,
    kinds=("RayJob",),
)
def ray_job_cluster_source(ctx: RuleContext) -> Iterator[Finding]:
    spec = _job(ctx)
    if spec is None:
        return
    if _selector_mode(spec):
        if not as_map(spec.get("clusterSelector")).get("ray.io/cluster"):
            yield Finding(
                (*SPEC, "clusterSelector"),
                "clusterSelector must name the cluster in ray.io/cluster",
                dict(as_map(spec.get("clusterSelector"))),
            )
    elif spec.get("rayClusterSpec") is None:
        yield Finding(
            (*SPEC, "rayClusterSpec"), "a RayJob needs rayClusterSpec or a clusterSelector; KubeRay refuses it", None
        )


@rule(
    "ray-job-suspend",
    Severity.DENY,
    "a suspended RayJob has shutdownAfterJobFinishes: true and its own cluster (not a clusterSelector)",
    api_group=RAY_GROUP,
    kinds=("RayJob",),
)
def ray_job_suspend(ctx: RuleContext) -> Iterator[Finding]:
    spec = _job(ctx)
    if spec is None or spec.get("suspend") is not True:
        return
    if spec.get("shutdownAfterJobFinishes") is not True:
        yield Finding(
            (*SPEC, "suspend"),
            "a RayJob can be suspended only with shutdownAfterJobFinishes: true; KubeRay refuses it",
            True,
        )
    elif _selector_mode(spec):
        yield Finding(
            (*SPEC, "suspend"), "a RayJob using a clusterSelector cannot be suspended; KubeRay refuses it", True
        )


@rule(
    "ray-job-ttl",
    Severity.DENY,
    "ttlSecondsAfterFinished is not negative and is set only with shutdownAfterJobFinishes: true",
    api_group=RAY_GROUP,
    kinds=("RayJob",),
)
def ray_job_ttl(ctx: RuleContext) -> Iterator[Finding]:
    spec = _job(ctx)
    ttl = _int(spec.get("ttlSecondsAfterFinished")) if spec is not None else None
    if spec is None or ttl is None:
        return
    location = (*SPEC, "ttlSecondsAfterFinished")
    if ttl < 0:
        yield Finding(location, f"ttlSecondsAfterFinished {ttl} is negative; KubeRay refuses it", ttl)
    elif ttl > 0 and spec.get("shutdownAfterJobFinishes") is not True:
        yield Finding(location, "ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true; KubeRay refuses it", ttl)


@rule(
    "ray-job-submission-mode",
    Severity.DENY,
    "submissionMode fits the rest: SidecarMode has no clusterSelector, submitterPodTemplate or submitterConfig and "
    "a head restartPolicy of Never; InteractiveMode and clusterSelector have no backoffLimit",
    api_group=RAY_GROUP,
    kinds=("RayJob",),
)
def ray_job_submission_mode(ctx: RuleContext) -> Iterator[Finding]:
    spec = _job(ctx)
    if spec is None:
        return
    mode = spec.get("submissionMode")
    backoff = _int(spec.get("backoffLimit"))
    selector = _selector_mode(spec)
    if selector and mode == "SidecarMode":
        yield Finding((*SPEC, "submissionMode"), "SidecarMode cannot be used with a clusterSelector", mode)
    if backoff is not None and backoff > 0 and (selector or mode == "InteractiveMode"):
        reason = "a clusterSelector" if selector else "InteractiveMode"
        yield Finding(
            (*SPEC, "backoffLimit"), f"backoffLimit {backoff} cannot be used with {reason}; KubeRay refuses it", backoff
        )
    if mode != "SidecarMode":
        return
    for field in ("submitterPodTemplate", "submitterConfig"):
        if spec.get(field) is not None:
            yield Finding((*SPEC, field), f"SidecarMode does not support {field}; KubeRay refuses it", None)
    head = as_map(as_map(spec.get("rayClusterSpec")).get("headGroupSpec"))
    policy = as_map(as_map(head.get("template")).get("spec")).get("restartPolicy")
    if policy not in (None, "", "Never"):
        yield Finding(
            (*SPEC, "rayClusterSpec", "headGroupSpec", "template", "spec", "restartPolicy"),
            f"head group: restartPolicy {policy} is not allowed in SidecarMode (Never or unset)",
            policy,
        )


@rule(
    "ray-job-limits",
    Severity.DENY,
    "activeDeadlineSeconds and preRunningDeadlineSeconds are positive and backoffLimit is not negative",
    api_group=RAY_GROUP,
    kinds=("RayJob",),
)
def ray_job_limits(ctx: RuleContext) -> Iterator[Finding]:
    spec = _job(ctx)
    if spec is None:
        return
    for field, lowest in (("activeDeadlineSeconds", 1), ("preRunningDeadlineSeconds", 1), ("backoffLimit", 0)):
        value = _int(spec.get(field))
        if value is not None and value < lowest:
            need = "positive" if lowest else "at least 0"
            yield Finding((*SPEC, field), f"{field} {value} must be {need}; KubeRay refuses it", value)


@rule(
    "ray-job-runtime-env",
    Severity.DENY,
    "runtimeEnvYAML is a YAML mapping (KubeRay refuses a RayJob whose runtime env it cannot read)",
    api_group=RAY_GROUP,
    kinds=("RayJob",),
)
def ray_job_runtime_env(ctx: RuleContext) -> Iterator[Finding]:
    spec = _job(ctx)
    text = spec.get("runtimeEnvYAML") if spec is not None else None
    if not isinstance(text, str) or not text.strip():
        return
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
    else:
        if parsed is None or isinstance(parsed, dict):
            return
        problem = f"it is a {type(parsed).__name__}, not a mapping"
    yield Finding(
        (*SPEC, "runtimeEnvYAML"), f"runtimeEnvYAML is not a YAML mapping ({problem}); KubeRay refuses it", None
    )


@rule(
    "ray-job-deletion-strategy",
    Severity.DENY,
    "deletionStrategy is either onSuccess and onFailure with a policy each, or deletionRules (then without "
    "shutdownAfterJobFinishes), unique and ordered, and fits the cluster (no DeleteWorkers with the autoscaler)",
    api_group=RAY_GROUP,
    kinds=("RayJob",),
)
def ray_job_deletion_strategy(ctx: RuleContext) -> Iterator[Finding]:
    spec = _job(ctx)
    strategy = spec.get("deletionStrategy") if spec is not None else None
    if spec is None or not isinstance(strategy, dict):
        return
    path = (*SPEC, "deletionStrategy")
    shutdown = spec.get("shutdownAfterJobFinishes") is True
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = as_list(strategy.get("deletionRules"))
    if rules and shutdown:
        yield Finding(
            (*path, "deletionRules"),
            "deletionRules and shutdownAfterJobFinishes: true cannot be used together; KubeRay refuses it",
            None,
        )
    elif rules and legacy:
        yield Finding(path, "deletionRules and onSuccess/onFailure cannot be used together", None)
    elif legacy:
        yield from _legacy(ctx, spec, strategy, path)
    elif rules:
        yield from _rules(ctx, spec, rules, (*path, "deletionRules"))
    else:
        yield Finding(path, "deletionStrategy needs both onSuccess and onFailure, or deletionRules", None)


def _legacy(
    ctx: RuleContext, spec: Mapping[str, Any], strategy: Mapping[str, Any], path: PathParts
) -> Iterator[Finding]:
    policies: dict[str, Any] = {}
    for field in ("onSuccess", "onFailure"):
        entry = strategy.get(field)
        if not isinstance(entry, dict):
            yield Finding((*path, field), f"deletionStrategy.{field} must be set with the legacy policy fields", None)
            return
        if entry.get("policy") is None:
            yield Finding((*path, field, "policy"), f"deletionStrategy.{field}.policy must be set", None)
            return
        policies[field] = entry["policy"]
    for field, policy in policies.items():
        if _selector_mode(spec) and policy in {"DeleteCluster", "DeleteWorkers"}:
            yield Finding((*path, field, "policy"), f"{policy} cannot be used with a clusterSelector", policy)
            return
    for field, policy in policies.items():
        if policy == "DeleteWorkers" and _autoscaling(ctx):
            yield Finding((*path, field, "policy"), "DeleteWorkers cannot be used with the autoscaler on", policy)
            return
    for field, policy in policies.items():
        if policy == "DeleteNone" and spec.get("shutdownAfterJobFinishes") is True:
            yield Finding((*path, field, "policy"), "DeleteNone contradicts shutdownAfterJobFinishes: true", policy)
            return


def _rules(ctx: RuleContext, spec: Mapping[str, Any], rules: list[Any], path: PathParts) -> Iterator[Finding]:
    ttls: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    for index, raw_entry in enumerate(rules):
        entry = as_map(raw_entry)
        condition = as_map(entry.get("condition"))
        policy = entry.get("policy")
        at = (*path, index)
        status = condition.get("jobStatus")
        deployment = condition.get("jobDeploymentStatus")
        ttl = _int(condition.get("ttlSeconds")) or 0
        if (status is None) == (deployment is None):
            yield Finding(
                (*at, "condition"), "a deletion rule needs exactly one of jobStatus and jobDeploymentStatus", None
            )
            continue
        if ttl < 0:
            yield Finding((*at, "condition", "ttlSeconds"), f"ttlSeconds {ttl} is negative", ttl)
            continue
        if _selector_mode(spec) and policy in {"DeleteCluster", "DeleteWorkers"}:
            yield Finding((*at, "policy"), f"{policy} cannot be used with a clusterSelector", policy)
            continue
        if policy == "DeleteWorkers" and _autoscaling(ctx):
            yield Finding((*at, "policy"), "DeleteWorkers cannot be used with the autoscaler on", policy)
            continue
        key = ("jobStatus", str(status)) if status is not None else ("jobDeploymentStatus", str(deployment))
        by_policy = ttls.setdefault(key, {})
        if str(policy) in by_policy:
            yield Finding(at, f"a second {policy} rule for {key[0]} {key[1]}", policy)
            continue
        by_policy[str(policy)] = (ttl, index)
    for (field, value), by_policy in ttls.items():
        previous: tuple[str, int] | None = None
        for policy in DELETION_ORDER:
            if policy not in by_policy:
                continue
            ttl, index = by_policy[policy]
            if previous is not None and ttl < previous[1]:
                yield Finding(
                    (*path, index, "condition", "ttlSeconds"),
                    f"{field} {value}: {policy} ttlSeconds {ttl} "
                    f"is shorter than {previous[0]}'s {previous[1]}; KubeRay refuses it",
                    ttl,
                )
            previous = (policy, ttl)
