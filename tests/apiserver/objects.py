"""Ray objects and pods as a user or KubeRay would send them, for the real-API-server tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

RAY_IMAGE = "rayproject/ray:2.52.0"


def _container(name: str, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": RAY_IMAGE}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return container


def cluster_spec(replicas: int = 1, min_replicas: int = 0, max_replicas: int = 5, *, head_gpus: int = 0,
                 group: str = "small-group") -> dict[str, Any]:  # fmt: skip
    return {
        "rayVersion": "2.52.0",
        "headGroupSpec": {
            "rayStartParams": {}, "template": {"spec": {"containers": [_container("ray-head", head_gpus)]}},
        },
        "workerGroupSpecs": [{
            "groupName": group, "replicas": replicas, "minReplicas": min_replicas, "maxReplicas": max_replicas,
            "rayStartParams": {}, "template": {"spec": {"containers": [_container("ray-worker")]}},
        }],
    }  # fmt: skip


def raycluster(name: str, namespace: str, replicas: int = 1, min_replicas: int = 0, max_replicas: int = 5,
               **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name, "namespace": namespace},
            "spec": cluster_spec(replicas, min_replicas, max_replicas, **kwargs)}  # fmt: skip


def rayservice(name: str, namespace: str, replicas: int = 1, min_replicas: int = 0, max_replicas: int = 5,
               **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name, "namespace": namespace},
            "spec": {"serveConfigV2": "applications: []\n",
                     "rayClusterConfig": cluster_spec(replicas, min_replicas, max_replicas, **kwargs)}}  # fmt: skip


def rayjob(name: str, namespace: str, replicas: int = 1, min_replicas: int = 0, max_replicas: int = 5,
           **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {"entrypoint": "python -c 'print(1)'",
                     "rayClusterSpec": cluster_spec(replicas, min_replicas, max_replicas, **kwargs)}}  # fmt: skip


BUILDERS = {"RayService": rayservice, "RayCluster": raycluster, "RayJob": rayjob}
# Where the worker group sits in each kind (the field path the webhook's messages name).
WORKER_PATH = {
    "RayService": "spec.rayClusterConfig.workerGroupSpecs[0]",
    "RayCluster": "spec.workerGroupSpecs[0]",
    "RayJob": "spec.rayClusterSpec.workerGroupSpecs[0]",
}


def ray_pod(name: str, namespace: str, cluster: str, owner_uid: str, *, node_type: str = "worker",
            group: str = "small-group", owner_kind: str = "RayCluster",
            labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A Ray pod as KubeRay creates it: its labels and a controller reference to its RayCluster."""
    pod_labels = {
        "ray.io/cluster": cluster,
        "ray.io/node-type": node_type,
        "ray.io/group": group if node_type == "worker" else "headgroup",
        "ray.io/is-ray-node": "yes",
        "app.kubernetes.io/created-by": "kuberay-operator",
        **(labels or {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": pod_labels,
            "ownerReferences": [{"apiVersion": "ray.io/v1", "kind": owner_kind, "name": cluster, "uid": owner_uid,
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"containers": [{"name": "ray-worker" if node_type == "worker" else "ray-head", "image": RAY_IMAGE}]},
    }  # fmt: skip


def plain_pod(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}  # fmt: skip


# The namespace label that picks a namespace's validation mode (the chart's per-namespace webhooks).
MODE_LABEL = "karta-admission.io/mode"
# The pod-group label of coscheduling, the chart's default gang.scheduler.
GROUP_LABEL = "scheduling.x-k8s.io/pod-group"


def to_yaml(*documents: Mapping[str, Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)
