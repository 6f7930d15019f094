"""A read-only view of the Ray cluster spec an object runs, for the KubeRay-specific rules.

KubeRay validates a RayClusterSpec the same way wherever it sits (RayCluster `spec`, RayService
`spec.rayClusterConfig`, RayJob `spec.rayClusterSpec`); the rules read it through this view so that
each one is a few lines, points at the field it means, and names the group the way messages should
(`worker group "small-group"`, `head group`). Facts come from KubeRay's
`ray-operator/controllers/ray/utils/{validation,util}.go` at feeaf72f.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from webhook.karta.resolve import ResolvedWorkload
from webhook.kube.fieldpath import PathParts
from webhook.policy.kuberay import CLUSTER_SPEC_PATHS
from webhook.policy.model import RuleContext

AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"
# KubeRay reads `ray start` settings, env and mounts from the first container only (RayContainerIndex).
RAY_CONTAINER = 0
# k8s.io/apimachinery version.ParseGeneric: at least "major.minor", an optional "v", numbers only.
_GENERIC_VERSION = re.compile(r"\s*v?([0-9]+(?:\.[0-9]+)+)(.*)")


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def parse_version(text: str) -> tuple[int, ...] | None:
    """Go's version.ParseGeneric, enough to compare Ray versions (None: KubeRay cannot parse it)."""
    match = _GENERIC_VERSION.fullmatch(text)
    if match is None or (match.group(2) and not re.fullmatch(r"[-+.][0-9A-Za-z.+-]*", match.group(2))):
        return None
    parts = tuple(int(p) for p in match.group(1).split("."))
    return parts + (0,) * (3 - len(parts))  # missing components count as 0, as Go compares them


@dataclass(slots=True)
class Group:
    """The head group or one worker group of the cluster spec.

    Not frozen: one is built for every group of every review (frozen ones take three times as long to
    build); nothing assigns to one after it is built.
    """

    label: str  # `head group` or `worker group "name"`
    name: str | None  # the worker group's groupName; None for the head
    path: PathParts
    spec: Mapping[str, Any]

    @property
    def pod_spec(self) -> Mapping[str, Any]:
        return as_map(as_map(self.spec.get("template")).get("spec"))

    @property
    def pod_spec_path(self) -> PathParts:
        return (*self.path, "template", "spec")

    @property
    def ray_container(self) -> Mapping[str, Any] | None:
        containers = as_list(self.pod_spec.get("containers"))
        first = containers[RAY_CONTAINER] if len(containers) > RAY_CONTAINER else None
        return first if isinstance(first, dict) else None

    @property
    def ray_container_path(self) -> PathParts:
        return (*self.pod_spec_path, "containers", RAY_CONTAINER)

    def env(self, name: str) -> tuple[PathParts, Mapping[str, Any]] | None:
        """The Ray container's env entry `name` (the first one, as KubeRay's EnvVarByName), and where it is."""
        return find_env(as_list(as_map(self.ray_container).get("env")), name, (*self.ray_container_path, "env"))


def find_env(entries: list[Any], name: str, path: PathParts) -> tuple[PathParts, Mapping[str, Any]] | None:
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("name") == name:
            return (*path, index), entry
    return None


@dataclass(frozen=True)
class RayClusterView:
    kind: str
    path: PathParts  # where the RayClusterSpec sits in the object
    spec: Mapping[str, Any]
    metadata: Mapping[str, Any]

    def at(self, *parts: str | int) -> PathParts:
        return (*self.path, *parts)

    @property
    def annotations(self) -> Mapping[str, Any]:
        return as_map(self.metadata.get("annotations"))

    @property
    def labels(self) -> Mapping[str, Any]:
        return as_map(self.metadata.get("labels"))

    # The views are cached on the instance (one view per review, shared by the rules through
    # ray_cluster()), since several rules walk every worker group.
    @cached_property
    def head(self) -> Group:
        return Group("head group", None, self.at("headGroupSpec"), as_map(self.spec.get("headGroupSpec")))

    @cached_property
    def worker_groups(self) -> tuple[Group, ...]:
        found = []
        for index, group in enumerate(as_list(self.spec.get("workerGroupSpecs"))):
            if isinstance(group, dict):
                name = group.get("groupName")
                text = str(name) if name is not None else ""
                found.append(Group(f'worker group "{text}"', text, self.at("workerGroupSpecs", index), group))
        return tuple(found)

    def workers(self) -> Iterator[Group]:
        return iter(self.worker_groups)

    def groups(self) -> Iterator[Group]:
        yield self.head
        yield from self.worker_groups

    @property
    def autoscaling(self) -> bool:
        """KubeRay's IsAutoscalingEnabled: enableInTreeAutoscaling is true."""
        return self.spec.get("enableInTreeAutoscaling") is True

    @property
    def autoscaler_options(self) -> Mapping[str, Any]:
        return as_map(self.spec.get("autoscalerOptions"))

    @property
    def autoscaler_v2_by_version(self) -> bool:
        """KubeRay's IsAutoscalingV2Enabled: autoscalerOptions.version is v2."""
        return self.autoscaler_options.get("version") == "v2"

    @property
    def autoscaler_v2_env(self) -> tuple[PathParts, str] | None:
        """The head's RAY_enable_autoscaler_v2 entry and its value, if present."""
        found = self.head.env(AUTOSCALER_V2_ENV)
        if found is None:
            return None
        value = found[1].get("value")
        return found[0], value if isinstance(value, str) else ""

    @property
    def autoscaler_v2(self) -> bool:
        """v2 by version, or by the head env set to "1"/"true" (the test KubeRay makes for group fields)."""
        env = self.autoscaler_v2_env
        return self.autoscaler_v2_by_version or (env is not None and env[1] in {"1", "true"})

    @property
    def ray_version(self) -> str:
        value = self.spec.get("rayVersion")
        return value if isinstance(value, str) else ""


def ray_cluster(ctx: RuleContext) -> RayClusterView | None:
    """The cluster spec of a RayCluster, RayService or RayJob (None for other kinds or when absent)."""

    def build() -> RayClusterView | None:
        return cluster_view(ctx.workload)

    return ctx.memo("ray-cluster", build)  # type: ignore[no-any-return]


def cluster_view(workload: ResolvedWorkload) -> RayClusterView | None:
    path = CLUSTER_SPEC_PATHS.get(workload.kind)
    if path is None:
        return None
    node: Any = workload.obj
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    return RayClusterView(workload.kind, path, node, as_map(workload.obj.get("metadata")))


def spec_of(ctx: RuleContext) -> Mapping[str, Any]:
    """The object's own `spec` (RayJob and RayService fields outside the cluster spec)."""
    return as_map(ctx.workload.obj.get("spec"))
