"""The RayCluster KubeRay creates from a RayService or a RayJob (reference/kuberay.md §5), for previews.

Pure. A RayService's or RayJob's pods belong to that RayCluster, so its gang is the RayCluster's. Only
the offline preview needs this: in a cluster the RayCluster itself is watched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# The spec field a RayCluster's spec is copied from, per kind.
CLUSTER_SPEC_FIELDS = {"RayService": "rayClusterConfig", "RayJob": "rayClusterSpec"}
# KubeRay appends five random characters (from bcdfghjklmnpqrstvwxz2456789) to the name; these are
# five of them, so the preview's names are names KubeRay could give.
PREVIEW_SUFFIX = "xxxxx"


def cluster_of(obj: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The RayCluster an object stands for (itself, or the one KubeRay would create), and notes.

    None when it creates none (a RayJob that runs on an existing cluster) or is not a Ray kind.
    """
    kind = str(obj.get("kind") or "")
    api_version = str(obj.get("apiVersion") or "")
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    notes = []
    if not name and meta.get("generateName"):
        # The API server appends five characters of the same alphabet to a generateName.
        name = f"{meta['generateName']}{PREVIEW_SUFFIX}"
        notes.append(f"{kind} {meta['generateName']}*: the API server completes generateName; shown as {name}")
    if not api_version.startswith("ray.io/"):
        return None, []
    if kind == "RayCluster":
        cluster = copy.deepcopy(dict(obj))
        cluster["metadata"] = {**cluster.get("metadata", {}), "name": name}
        return cluster, notes
    field = CLUSTER_SPEC_FIELDS.get(kind)
    if field is None:
        return None, []
    spec = (obj.get("spec") or {}).get(field)
    if not isinstance(spec, dict):
        selector = (obj.get("spec") or {}).get("clusterSelector")
        reason = "it runs on an existing RayCluster (clusterSelector)" if selector else f"it has no spec.{field}"
        return None, [*notes, f"{kind} {name} creates no RayCluster: {reason}"]
    cluster_name = f"{name}-{PREVIEW_SUFFIX}"
    labels = {
        **(meta.get("labels") or {}),
        "ray.io/originated-from-crd": kind,
        "ray.io/originated-from-cr-name": name,
    }
    metadata: dict[str, Any] = {"name": cluster_name, "labels": labels}
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    if meta.get("annotations"):
        metadata["annotations"] = dict(meta["annotations"])
    metadata["ownerReferences"] = [
        {"apiVersion": api_version, "kind": kind, "name": name, "uid": str(meta.get("uid") or ""),
         "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    cluster = {"apiVersion": api_version, "kind": "RayCluster", "metadata": metadata, "spec": copy.deepcopy(spec)}
    note = (
        f"the RayCluster KubeRay creates for {kind} {name} (with its labels and spec.{field}); KubeRay names it "
        f"{name}-<5 random characters>, shown as {cluster_name}"
    )
    return cluster, [*notes, note]
