"""Gang test helpers: RayClusters as the API server stores them, their plans, and an in-memory gang index."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

import jsonpatch

from tests.reviews import ray_pod, review
from webhook.admission import Admission, Outcome, parse_review
from webhook.config import Config, build_evaluator, load_definitions, parse_config
from webhook.gang import ClusterGang, GangLookup, GangPlan, GroupObjectStatus, plan_gang
from webhook.karta.registry import DefinitionSet
from webhook.kube.defaults import CRDDefaults

CLUSTER = "rayservice-sample-x7k2p"  # the cluster tests.reviews.ray_pod belongs to
UID = "4f1c2f7e-0000-4000-8000-000000000001"  # its owner uid there
IMAGE = "rayproject/ray:2.52.0"


def container(
    name: str, requests: Mapping[str, Any] | None = None, limits: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = dict(requests)
    if limits:
        resources["limits"] = dict(limits)
    return {"name": name, "image": IMAGE, "resources": resources}


def worker(
    name: str = "small-group",
    replicas: int | None = 1,
    *,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    hosts: int | None = None,
    suspend: bool | None = None,
    requests: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
    pod_spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    group: dict[str, Any] = {
        "groupName": name,
        "rayStartParams": {},
        "template": {"spec": {"containers": [container("ray-worker", requests, limits)], **(pod_spec or {})}},
    }
    for key, value in (("replicas", replicas), ("minReplicas", min_replicas), ("maxReplicas", max_replicas),
                       ("numOfHosts", hosts), ("suspend", suspend)):  # fmt: skip
        if value is not None:
            group[key] = value
    return group


def raycluster(
    *groups: dict[str, Any],
    name: str = CLUSTER,
    namespace: str = "default",
    uid: str = UID,
    autoscaling: bool = False,
    labels: Mapping[str, str] | None = None,
    head_requests: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RayCluster with its CRD defaults applied, as the API server stores it."""
    obj: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": dict(labels or {})},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {"containers": [container("ray-head", head_requests)]}},
            },
            "workerGroupSpecs": list(groups),
        },
    }
    if autoscaling:
        obj["spec"]["enableInTreeAutoscaling"] = True
    return CRDDefaults.packaged().apply(obj)


def config(scheduler: str = "coscheduling", **gang: Any) -> Config:
    return parse_config({"gang": {"scheduler": scheduler, **gang}}, "test")


def plan(obj: Mapping[str, Any], cfg: Config | None = None) -> GangPlan:
    cfg = cfg or config()
    compiled = load_definitions(cfg).for_object(obj)
    assert compiled is not None
    return plan_gang(compiled.resolve(obj), cfg.gang)


class Gangs:
    """A GangIndex over planned RayClusters, as the owner cache would answer."""

    def __init__(self, cfg: Config, *clusters: Mapping[str, Any], status: GroupObjectStatus | None = None) -> None:
        self.plans = {}
        self.status = status
        self.asked: list[tuple[str, str]] = []
        for obj in clusters:
            meta = obj["metadata"]
            self.plans[(meta["namespace"], meta["name"])] = (meta["uid"], plan(obj, cfg))

    def gang(self, namespace: str, owner: Mapping[str, Any]) -> GangLookup:
        self.asked.append((namespace, str(owner.get("name"))))
        found = self.plans.get((namespace, str(owner.get("name"))))
        if found is None:
            return GangLookup(None, "absent")
        uid, planned = found
        if owner.get("uid") and owner["uid"] != uid:
            return GangLookup(None, "uid")
        status = self.status
        if status is None:
            status = GroupObjectStatus.EXPECTED if planned.group_object else GroupObjectStatus.NOT_NEEDED
        return GangLookup(ClusterGang(planned, status))


def admission(cfg: Config | None = None, gangs: Any = None, definitions: DefinitionSet | None = None) -> Admission:
    cfg = cfg or config()
    return Admission(build_evaluator(cfg, definitions), cfg.gang, gangs)


def mutate(
    pod: dict[str, Any], cfg: Config | None = None, gangs: Any = None, definitions: DefinitionSet | None = None
) -> tuple[dict[str, Any], Outcome]:
    """The pod as admitted (patch applied) and the outcome."""
    outcome = admission(cfg, gangs, definitions).mutate(parse_review(review(pod)))
    response = outcome.response["response"]
    if "patch" not in response:
        return copy.deepcopy(pod), outcome
    assert response["patchType"] == "JSONPatch"
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    return patched, outcome


def pod_from(
    obj: Mapping[str, Any], group: str = "headgroup", *, labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None, scheduler_name: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A pod of a planned RayCluster as KubeRay creates it: its template, Ray's labels, owned by the cluster."""
    meta = obj["metadata"]
    spec = obj["spec"]
    if group == "headgroup":
        template = spec["headGroupSpec"]["template"]
        pod = ray_pod("head", cluster=meta["name"], namespace=meta["namespace"])
    else:
        template = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == group)["template"]
        pod = ray_pod("worker", group, meta["name"], namespace=meta["namespace"])
    pod["metadata"]["ownerReferences"][0]["uid"] = meta["uid"]
    template_meta = template.get("metadata") or {}
    pod["metadata"]["labels"].update(template_meta.get("labels") or {})
    pod["metadata"]["labels"].update(labels or {})
    merged = {**(template_meta.get("annotations") or {}), **(annotations or {})}
    if merged:
        pod["metadata"]["annotations"] = merged
    pod["spec"] = copy.deepcopy(template.get("spec") or {})
    if scheduler_name is not None:
        pod["spec"]["schedulerName"] = scheduler_name
    return pod
