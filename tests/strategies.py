"""Hypothesis strategies: Ray objects and pods (valid and broken), reviews, and corrupted reviews."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st

from tests.reviews import ray_pod, review

JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

GROUP_NAMES = st.sampled_from(["small-group", "gpu", "cpu", "headgroup", "", "Bad Name!", "a" * 70, "x.y_z"]) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20
)
COUNTS = st.one_of(st.integers(-3, 20), st.none(), st.just(2147483647), st.sampled_from(["2", 2.5, True]))
QUANTITIES = st.sampled_from(["1", "2", "0.5", "500m", "-1", "1Ki", "lots", 1, 0, 1.5, "8"])
GPU_KEYS = st.sampled_from(
    ["nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-1g.10gb", "google.com/tpu", "cpu", "memory"]
)


@st.composite
def containers(draw: st.DrawFn) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": draw(st.sampled_from(["ray", "sidecar", "ray-worker"])),
        "image": "rayproject/ray",
    }
    if draw(st.booleans()):
        container["resources"] = {
            section: draw(st.dictionaries(GPU_KEYS, QUANTITIES, max_size=3))
            for section in draw(st.sets(st.sampled_from(["limits", "requests"])))
        }
    if draw(st.booleans()):
        container["env"] = [
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": draw(st.sampled_from(["all", "none", "0", ""]))}
        ]
    return container


@st.composite
def pod_templates(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": draw(st.lists(containers(), max_size=3))}
    if draw(st.booleans()):
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    if draw(st.booleans()):
        spec["nodeSelector"] = {"nvidia.com/gpu.product": "A100"}
    return {"spec": spec}


@st.composite
def worker_groups(draw: st.DrawFn) -> dict[str, Any]:
    group: dict[str, Any] = {"groupName": draw(GROUP_NAMES), "template": draw(pod_templates())}
    for key in ("replicas", "minReplicas", "maxReplicas", "numOfHosts"):
        value = draw(COUNTS)
        if value is not None:
            group[key] = value
    if draw(st.integers(0, 9)) == 0:
        group["rayStartParams"] = {"num-cpus": "1"}
        group["resources"] = {"CPU": "1"}
    return group


@st.composite
def cluster_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "headGroupSpec": {"rayStartParams": {}, "template": draw(pod_templates())},
        "workerGroupSpecs": draw(st.lists(worker_groups(), max_size=5)),
    }
    if draw(st.booleans()):
        spec["enableInTreeAutoscaling"] = draw(st.booleans())
    return spec


@st.composite
def ray_objects(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["RayService", "RayCluster", "RayJob"]))
    cluster = draw(cluster_specs())
    spec = {"RayService": {"rayClusterConfig": cluster}, "RayCluster": cluster, "RayJob": {"rayClusterSpec": cluster}}[
        kind
    ]
    name = draw(
        st.sampled_from(["sample", "x" * 60, "Bad_Name"]) | st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
    )
    return {"apiVersion": "ray.io/v1", "kind": kind, "metadata": {"name": name, "namespace": "ml"}, "spec": spec}


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    pod = ray_pod(
        draw(st.sampled_from(["head", "worker"])),
        draw(GROUP_NAMES) or "g",
        draw(st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True)),
        owner_kind=draw(st.sampled_from(["RayCluster", "RayCluster", "Deployment"])),
    )
    if draw(st.booleans()):
        del pod["metadata"]["labels"]["ray.io/cluster"]
    if draw(st.booleans()):
        pod["metadata"]["annotations"] = draw(
            st.dictionaries(st.sampled_from(["a", "scheduling.k8s.io/group-name"]), st.text(max_size=5))
        )
    return pod


@st.composite
def reviews(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed AdmissionReviews of Ray objects and Ray pods, in every operation."""
    if draw(st.booleans()):
        obj = draw(ray_objects())
        operation = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE"]))
        old = draw(ray_objects()) if operation != "CREATE" else None
        if operation == "DELETE":
            return review(
                None,
                operation="DELETE",
                old=old,
                uid=str(uuid.uuid4()),
                kind=("ray.io", "v1", old["kind"] if old else "RayService"),
            )
        return review(obj, operation=operation, old=old, dry_run=draw(st.booleans()),
                      sub_resource=draw(st.sampled_from([None, None, "status", "scale"])))  # fmt: skip
    return review(draw(pods()))


@st.composite
def corrupted_reviews(draw: st.DrawFn) -> Any:
    """Reviews with parts replaced by arbitrary JSON, or arbitrary JSON altogether."""
    if draw(st.integers(0, 4)) == 0:
        return draw(ANY_JSON)
    body = draw(reviews())
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["request", "object", "kind", "spec", "metadata", "uid", "top"]))
        value = draw(ANY_JSON)
        request = body.get("request") if isinstance(body.get("request"), dict) else None
        if target == "top":
            body[draw(st.sampled_from(["apiVersion", "kind", "request"]))] = value
        elif request is None:
            continue
        elif target in {"request", "uid", "kind"}:
            request[{"request": "operation", "uid": "uid", "kind": "kind"}[target]] = value
        elif isinstance(request.get("object"), dict):
            obj = request["object"]
            if target == "object":
                request["object"] = value
            elif target == "spec":
                obj["spec"] = value
            else:
                obj["metadata"] = value
    return body
