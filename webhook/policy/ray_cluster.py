"""KubeRay rules on the groups of a cluster spec: Ray node labels, suspension, pod names, upgradeStrategy.

Each mirrors a check of KubeRay's ValidateRayClusterSpec / ValidateRayClusterUpgradeOptions
(ray-operator/controllers/ray/utils/validation.go at feeaf72f), which KubeRay makes only after the
object is stored, except `ray-group-name-pod-name`: a failure KubeRay meets only when it creates pods.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from webhook.kube import names
from webhook.policy.kuberay import RAY_GROUP
from webhook.policy.model import Finding, RuleContext, Severity, rule
from webhook.policy.ray_spec import as_map, ray_cluster

# Characters a pod name (a DNS-1123 subdomain) may hold once KubeRay has lower-cased it.
_POD_NAME_CHARS = re.compile(r"[a-z0-9.-]*")


@rule(
    "ray-group-labels",
    Severity.DENY,
    "Ray node labels go in a group's labels field (not rayStartParams.labels), as valid Kubernetes labels",
    api_group=RAY_GROUP,
)
def ray_group_labels(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None:
        return
    for group in cluster.groups():
        params = as_map(group.spec.get("rayStartParams"))
        if "labels" in params:
            yield Finding(
                (*group.path, "rayStartParams", "labels"),
                f"{group.label}: rayStartParams.labels is not supported; KubeRay wants Ray node labels in "
                "the group's labels field",
                params["labels"],
            )
        for key, value in as_map(group.spec.get("labels")).items():
            key_problems = names.label_key_problems(str(key))
            if key_problems:
                yield Finding(
                    (*group.path, "labels", str(key)),
                    f"{group.label}: label key {key!r} is not a valid label key: {key_problems[0]}",
                    key,
                )
            value_problems = names.label_value_problems(value) if isinstance(value, str) else ["not a string"]
            if value_problems:
                yield Finding(
                    (*group.path, "labels", str(key)),
                    f"{group.label}: label {key}={value!r} is not a valid label value: {value_problems[0]}",
                    value,
                )


@rule(
    "ray-worker-suspend",
    Severity.DENY,
    "no worker group is suspended while the autoscaler is on (KubeRay refuses it)",
    api_group=RAY_GROUP,
)
def ray_worker_suspend(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None or not cluster.autoscaling:
        return
    for group in cluster.workers():
        if group.spec.get("suspend") is True:
            yield Finding(
                (*group.path, "suspend"),
                f"{group.label}: cannot be suspended while enableInTreeAutoscaling is true; KubeRay refuses it",
                True,
            )


@rule(
    "ray-group-name-pod-name",
    Severity.DENY,
    "worker group names fit in pod names (KubeRay names pods <cluster>-<group>-worker-xxxxx, lower-cased)",
    api_group=RAY_GROUP,
)
def ray_group_name_pod_name(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None:
        return
    for group in cluster.workers():
        name = group.name or ""
        leftover = _POD_NAME_CHARS.sub("", name.lower())
        if leftover:
            bad = sorted(set(leftover))
            yield Finding(
                (*group.path, "groupName"),
                f"{group.label}: pod names <cluster>-{name.lower()}-worker-xxxxx cannot hold "
                f"{' '.join(repr(c) for c in bad)}; KubeRay could not create the group's pods",
                name,
            )


@rule(
    "ray-cluster-upgrade-strategy",
    Severity.DENY,
    "a RayCluster created by a RayJob or RayService (label ray.io/originated-from-crd) sets no upgradeStrategy",
    api_group=RAY_GROUP,
    kinds=("RayCluster",),
)
def ray_cluster_upgrade_strategy(ctx: RuleContext) -> Iterator[Finding]:
    cluster = ray_cluster(ctx)
    if cluster is None or cluster.kind != "RayCluster":
        return
    creator = cluster.labels.get("ray.io/originated-from-crd")
    strategy = as_map(cluster.spec.get("upgradeStrategy"))
    if creator in {"RayJob", "RayService"} and strategy.get("type") is not None:
        yield Finding(
            cluster.at("upgradeStrategy", "type"),
            f"upgradeStrategy cannot be set on a RayCluster created by a {creator}; KubeRay refuses it",
            strategy.get("type"),
        )
