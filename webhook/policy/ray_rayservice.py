"""KubeRay's checks of a RayService outside its cluster spec: ValidateRayServiceMetadata and
ValidateRayServiceSpec (validation.go at feeaf72f)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from webhook.policy.kuberay import RAY_GROUP
from webhook.policy.model import Finding, RuleContext, Severity, rule
from webhook.policy.ray_spec import as_map, ray_cluster, spec_of

INITIALIZING_TIMEOUT = "ray.io/initializing-timeout"
UPGRADE_TYPES = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
INCREMENTAL = "NewClusterWithIncrementalUpgrade"
# Go's time.ParseDuration: signed sequence of decimal numbers with units ("5m", "1h30m", "1.5s"), or "0".
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|[-+]?0")
_GO_INT = re.compile(r"[-+]?\d+")


def _go_duration_positive(text: str) -> bool | None:
    """Whether a Go duration is positive; None when the text is not a Go duration."""
    if not _GO_DURATION.fullmatch(text):
        return None
    numbers = re.findall(r"\d+(?:\.\d*)?|\.\d+", text)
    return not text.startswith("-") and any(float(n) > 0 for n in numbers)


@rule(
    "ray-initializing-timeout",
    Severity.DENY,
    f"a RayService's {INITIALIZING_TIMEOUT} annotation is a positive Go duration (5m) or number of seconds",
    api_group=RAY_GROUP,
    kinds=("RayService",),
)
def ray_initializing_timeout(ctx: RuleContext) -> Iterator[Finding]:
    if ctx.workload.kind != "RayService":
        return
    value = as_map(as_map(ctx.workload.obj.get("metadata")).get("annotations")).get(INITIALIZING_TIMEOUT)
    if not isinstance(value, str) or not value:
        return
    location = ("metadata", "annotations", INITIALIZING_TIMEOUT)
    positive = _go_duration_positive(value)
    if positive is None and _GO_INT.fullmatch(value):
        positive = int(value) > 0
    if positive is None:
        yield Finding(
            location,
            f"{INITIALIZING_TIMEOUT} {value!r} is neither a Go duration (5m, 1h) nor a number "
            "of seconds; KubeRay refuses it",
            value,
        )
    elif not positive:
        yield Finding(location, f"{INITIALIZING_TIMEOUT} {value!r} must be positive; KubeRay refuses it", value)


@rule(
    "ray-service-head-service-name",
    Severity.DENY,
    "a RayService does not name its head Service (headGroupSpec.headService.metadata.name); KubeRay names it",
    api_group=RAY_GROUP,
    kinds=("RayService",),
)
def ray_service_head_service_name(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None or cluster.kind != "RayService":
        return
    name = as_map(as_map(cluster.head.spec.get("headService")).get("metadata")).get("name")
    if name:
        yield Finding(
            (*cluster.head.path, "headService", "metadata", "name"),
            "headService.metadata.name cannot be "
            "set in a RayService: KubeRay names the head Service; KubeRay refuses it",
            name,
        )


@rule(
    "ray-service-upgrade-strategy",
    Severity.DENY,
    f"upgradeStrategy.type is one of {', '.join(UPGRADE_TYPES)}; {INCREMENTAL} comes with the autoscaler and "
    "complete clusterUpgradeOptions (when KubeRay's RayServiceIncrementalUpgrade gate is on)",
    api_group=RAY_GROUP,
    kinds=("RayService",),
)
def ray_service_upgrade_strategy(ctx: RuleContext) -> Iterator[Finding]:
    if ctx.workload.kind != "RayService":
        return
    strategy = as_map(spec_of(ctx).get("upgradeStrategy"))
    kind = strategy.get("type")
    path = ("spec", "upgradeStrategy")
    if kind is not None and kind not in UPGRADE_TYPES:
        yield Finding(
            (*path, "type"),
            f"upgradeStrategy.type {kind!r} is not one of {', '.join(UPGRADE_TYPES)}; KubeRay refuses it",
            kind,
        )
        return
    if kind != INCREMENTAL or not ctx.settings.kuberay.gate("RayServiceIncrementalUpgrade"):
        return  # with the gate off KubeRay ignores the options
    cluster = ray_cluster(ctx)
    if cluster is not None and not cluster.autoscaling:
        yield Finding(
            (*path, "type"),
            f"{INCREMENTAL} needs the Ray autoscaler (rayClusterConfig."
            "enableInTreeAutoscaling: true); KubeRay refuses it",
            kind,
        )
        return
    options = strategy.get("clusterUpgradeOptions")
    if not isinstance(options, dict):
        yield Finding((*path, "clusterUpgradeOptions"), f"{INCREMENTAL} needs clusterUpgradeOptions", None)
        return
    at = (*path, "clusterUpgradeOptions")
    surge, step, interval = (
        options.get("maxSurgePercent", 100),
        options.get("stepSizePercent"),
        options.get("intervalSeconds"),
    )
    if not isinstance(surge, int) or not 0 <= surge <= 100:
        yield Finding((*at, "maxSurgePercent"), f"maxSurgePercent {surge} must be between 0 and 100", surge)
    elif not isinstance(step, int) or not 0 <= step <= 100:
        yield Finding((*at, "stepSizePercent"), f"stepSizePercent {step} must be between 0 and 100", step)
    elif step > surge:
        yield Finding((*at, "stepSizePercent"), f"stepSizePercent {step} is above maxSurgePercent {surge}", step)
    elif not isinstance(interval, int) or interval <= 0:
        yield Finding((*at, "intervalSeconds"), f"intervalSeconds {interval} must be greater than 0", interval)
    elif not options.get("gatewayClassName"):
        yield Finding((*at, "gatewayClassName"), f"{INCREMENTAL} needs a gatewayClassName", None)
