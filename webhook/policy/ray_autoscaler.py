"""KubeRay's checks of the Ray autoscaler settings (ValidateRayClusterSpec, validation.go at feeaf72f).

Autoscaler v2 is on when `autoscalerOptions.version: v2`, or (KubeRay < 1.4 style) when the head's
Ray container sets `RAY_enable_autoscaler_v2` to "1" or "true".
"""

from __future__ import annotations

from collections.abc import Iterator

from webhook.policy.kuberay import RAY_GROUP
from webhook.policy.model import Finding, RuleContext, Severity, rule
from webhook.policy.ray_spec import AUTOSCALER_V2_ENV, as_list, find_env, parse_version, ray_cluster

# KubeRay injects this into the autoscaler container; a user value would shadow the generated command.
GENERATED_START_CMD_ENV = "KUBERAY_GEN_AUTOSCALER_START_CMD"
PRIORITY_MIN_RAY = (2, 56, 0)


@rule(
    "ray-autoscaler-v2-env",
    Severity.DENY,
    f"the head's {AUTOSCALER_V2_ENV} does not turn on autoscaler v2 without the autoscaler, nor repeat "
    "autoscalerOptions.version",
    api_group=RAY_GROUP,
)
def ray_autoscaler_v2_env(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    env = cluster.autoscaler_v2_env if cluster is not None else None
    if cluster is None or env is None:
        return
    location, value = env
    if not cluster.autoscaling and value in {"1", "true"}:
        yield Finding(
            (*location, "value"),
            f"head group: {AUTOSCALER_V2_ENV}={value!r} needs enableInTreeAutoscaling: true; KubeRay refuses it",
            value,
        )
    elif cluster.autoscaling and cluster.autoscaler_options.get("version") is not None:
        yield Finding(
            location,
            f"head group: {AUTOSCALER_V2_ENV} and autoscalerOptions.version are both set; KubeRay wants only "
            "autoscalerOptions.version",
            value,
        )


@rule(
    "ray-autoscaler-restart-policy",
    Severity.DENY,
    "under autoscaler v2 pod templates leave restartPolicy unset or Never (a warning under v1, as KubeRay's event)",
    api_group=RAY_GROUP,
)
def ray_autoscaler_restart_policy(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None or not cluster.autoscaling:
        return
    v2 = cluster.autoscaler_v2_by_version
    for group in cluster.groups():
        policy = group.pod_spec.get("restartPolicy")
        if policy in (None, "", "Never"):
            continue
        if v2:
            yield Finding(
                (*group.pod_spec_path, "restartPolicy"),
                f"{group.label}: restartPolicy {policy} is not allowed with autoscaler v2 (Never or unset); "
                "KubeRay refuses it",
                policy,
            )
        elif group.name is not None:  # v1: KubeRay warns about worker groups only
            yield Finding(
                (*group.pod_spec_path, "restartPolicy"),
                f"{group.label}: restartPolicy {policy} restarts Ray workers the autoscaler has removed; use Never",
                policy,
                at_most=Severity.WARN,
            )


@rule(
    "ray-autoscaler-options",
    Severity.DENY,
    f"autoscalerOptions: idleTimeoutSeconds is not negative and env does not set {GENERATED_START_CMD_ENV}",
    api_group=RAY_GROUP,
)
def ray_autoscaler_options(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None:
        return
    options = cluster.autoscaler_options
    timeout = options.get("idleTimeoutSeconds")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout < 0:
        yield Finding(
            cluster.at("autoscalerOptions", "idleTimeoutSeconds"),
            f"autoscalerOptions.idleTimeoutSeconds {timeout} is negative; KubeRay refuses it",
            timeout,
        )
    found = find_env(as_list(options.get("env")), GENERATED_START_CMD_ENV, cluster.at("autoscalerOptions", "env"))
    if found is not None:
        yield Finding(
            found[0],
            f"autoscalerOptions.env must not set {GENERATED_START_CMD_ENV}: KubeRay generates it",
            GENERATED_START_CMD_ENV,
        )


@rule(
    "ray-worker-idle-timeout",
    Severity.DENY,
    "a worker group's idleTimeoutSeconds is not negative and is set only under autoscaler v2",
    api_group=RAY_GROUP,
)
def ray_worker_idle_timeout(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None:
        return
    for group in cluster.workers():
        timeout = group.spec.get("idleTimeoutSeconds")
        if not isinstance(timeout, int) or isinstance(timeout, bool):
            continue
        location = (*group.path, "idleTimeoutSeconds")
        if timeout < 0:
            yield Finding(location, f"{group.label}: idleTimeoutSeconds {timeout} is negative", timeout)
        elif not cluster.autoscaler_v2:
            yield Finding(
                location,
                f"{group.label}: idleTimeoutSeconds needs autoscaler v2 (autoscalerOptions.version: v2); "
                "KubeRay refuses it",
                timeout,
            )


@rule(
    "ray-worker-priority",
    Severity.DENY,
    "a worker group's non-zero priority comes with autoscaler v2 and rayVersion 2.56.0 or later",
    api_group=RAY_GROUP,
)
def ray_worker_priority(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None:
        return
    minimum = ".".join(map(str, PRIORITY_MIN_RAY))
    for group in cluster.workers():
        priority = group.spec.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool) or priority == 0:
            continue
        location = (*group.path, "priority")
        version = parse_version(cluster.ray_version) if cluster.ray_version else None
        if version is None or version < PRIORITY_MIN_RAY:
            got = f"rayVersion is {cluster.ray_version!r}" if cluster.ray_version else "rayVersion is not set"
            yield Finding(
                location,
                f"{group.label}: priority needs rayVersion {minimum} or later, but {got}; KubeRay refuses it",
                priority,
            )
        elif not cluster.autoscaler_v2:
            yield Finding(
                location,
                f"{group.label}: priority {priority} needs autoscaler v2 (autoscalerOptions.version: v2); "
                "KubeRay refuses it",
                priority,
            )
