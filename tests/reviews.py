"""AdmissionReview requests as kube-apiserver builds them."""

from __future__ import annotations

import copy
import uuid
from typing import Any

PLURALS = {"RayService": "rayservices", "RayCluster": "rayclusters", "RayJob": "rayjobs", "Pod": "pods"}


def review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    uid: str | None = None,
    sub_resource: str | None = None,
    dry_run: bool = False,
    namespace: str | None = None,
    kind: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    source = obj or old or {}
    api_version = source.get("apiVersion", "v1")
    group, _, version = api_version.rpartition("/")
    group, version, kind_name = kind or (group, version, source.get("kind", ""))
    meta = source.get("metadata") or {}
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind_name},
        "resource": {"group": group, "version": version, "resource": PLURALS.get(kind_name, kind_name.lower() + "s")},
        "requestKind": {"group": group, "version": version, "kind": kind_name},
        "name": meta.get("name", ""),
        "namespace": namespace if namespace is not None else meta.get("namespace", "default"),
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": copy.deepcopy(obj),
        "oldObject": copy.deepcopy(old),
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def ray_pod(
    node_type: str = "worker",
    group: str = "small-group",
    cluster: str = "rayservice-sample-x7k2p",
    *,
    owner_kind: str = "RayCluster",
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Ray pod as KubeRay creates it (generateName, no uid yet, controller ownerReference)."""
    pod_labels = {
        "ray.io/cluster": cluster,
        "ray.io/node-type": node_type,
        "ray.io/group": group if node_type == "worker" else "headgroup",
        "ray.io/is-ray-node": "yes",
        "ray.io/identifier": f"{cluster}-{node_type}",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    pod_labels.update(labels or {})
    metadata: dict[str, Any] = {
        "generateName": f"{cluster}-{group}-worker-" if node_type == "worker" else f"{cluster}-head-",
        "namespace": namespace,
        "labels": pod_labels,
        "ownerReferences": [
            {
                "apiVersion": "ray.io/v1",
                "kind": owner_kind,
                "name": cluster,
                "uid": "4f1c2f7e-0000-4000-8000-000000000001",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [{"name": "ray-worker", "image": "rayproject/ray:2.52.0"}],
            "schedulerName": "default-scheduler",
        },
    }
