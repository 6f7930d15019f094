"""Each gang scheduler's contract, as its source states it, checked against what the product does.

Every test docstring quotes the contract with the file and line it comes from (snapshots and details
in reference/gang-schedulers.md). The product's output is checked through Pod admission (the pods as
admitted) and the plan's group object (as the controller creates it), validated against the
scheduler's own CRD (tests/data/corpus/schedulers).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.corpus import ray_object_params
from tests.crds import all_problems
from tests.gang import Gangs, config, mutate, plan, pod_from, raycluster, worker
from webhook.gang import GroupObjectStatus
from webhook.gang.kuberay import cluster_of
from webhook.gang.plan import TASK_GROUPS_MAX_BYTES, yunikorn_app_id
from webhook.kube import names
from webhook.kube.defaults import CRDDefaults

GPU_TEMPLATE = {
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]}]}}},
}  # fmt: skip


def gpu_cluster(**kwargs: Any) -> dict[str, Any]:
    """Head, a CPU group of 3 (min 1, max 5), a GPU group of 2 (min 1, 2 hosts per replica), a suspended group."""
    return raycluster(
        worker("cpu", 3, min_replicas=1, max_replicas=5, requests={"cpu": "2", "memory": "4Gi"}),
        worker("gpu", 1, min_replicas=1, max_replicas=2, hosts=2, requests={"cpu": "8"},
               limits={"nvidia.com/gpu": "1", "cpu": "8"}, pod_spec=GPU_TEMPLATE),
        worker("spare", 4, min_replicas=0, max_replicas=4, suspend=True),
        head_requests={"cpu": "1"},
        **kwargs,
    )  # fmt: skip


GROUPS = ("headgroup", "cpu", "gpu", "spare")


def admitted(obj: dict[str, Any], scheduler: str, **gang: Any) -> dict[str, dict[str, Any]]:
    """Every group's pod as admitted, by group name."""
    cfg = config(scheduler, **gang)
    gangs = Gangs(cfg, obj)
    return {group: mutate(pod_from(obj, group), cfg, gangs)[0] for group in GROUPS}


def pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    return dict(pod["metadata"].get("labels") or {})


def pod_annotations(pod: dict[str, Any]) -> dict[str, str]:
    return dict(pod["metadata"].get("annotations") or {})


# --- sizes, common to every scheduler -----------------------------------------------------------


def test_sizes_follow_kuberay() -> None:
    """KubeRay's GetWorkerGroupDesiredReplicas (reference/kuberay.md §3): a suspended group runs 0
    pods, replicas is clamped into [minReplicas, maxReplicas], pods = replicas × numOfHosts; under the
    autoscaler the minimum is head + Σ non-suspended minReplicas × numOfHosts (status.minWorkerReplicas)."""
    fixed = plan(gpu_cluster()).gang
    assert fixed is not None
    assert {t.name: (t.pods, t.minimum) for t in fixed.tasks} == {
        "headgroup": (1, 1), "cpu": (3, 3), "gpu": (2, 2), "spare": (0, 0),
    }  # fmt: skip
    scaled = plan(gpu_cluster(autoscaling=True)).gang
    assert scaled is not None
    assert {t.name: (t.pods, t.minimum) for t in scaled.tasks} == {
        "headgroup": (1, 1), "cpu": (3, 1), "gpu": (2, 2), "spare": (0, 0),
    }  # fmt: skip
    clamped = plan(raycluster(worker("w", 10, min_replicas=1, max_replicas=5), worker("v", 0, min_replicas=2))).gang
    assert clamped is not None and [t.pods for t in clamped.tasks] == [1, 5, 2]


# --- scheduler-plugins Coscheduling -----------------------------------------------------------


def test_coscheduling_contract() -> None:
    """scheduler-plugins Coscheduling: the pod label scheduling.x-k8s.io/pod-group names a PodGroup in
    the pod's namespace (pkg/util/podgroup.go:50-62, pkg/coscheduling/core/core.go:392-402); the size is
    only PodGroup.spec.minMember >= 1, with minResources and scheduleTimeoutSeconds
    (apis/scheduling/v1alpha1/types.go:145-160); nobody but its creator makes the PodGroup
    (pkg/controllers/podgroup_controller.go only writes status); minMember above the labelled pods
    waits forever (core.go:262-266); the scheduler runs as scheduler-plugins-scheduler
    (manifests/install/charts/as-a-second-scheduler/values.yaml)."""
    obj = gpu_cluster(namespace="team-a")
    planned = plan(obj, config(scheduleTimeoutSeconds=600))
    group = planned.group_object
    assert group is not None and all_problems(group) == []
    assert (group["apiVersion"], group["kind"]) == ("scheduling.x-k8s.io/v1alpha1", "PodGroup")
    assert group["metadata"]["namespace"] == "team-a"
    assert group["spec"] == {
        "minMember": 6,  # head + 3 cpu + 2 gpu (two hosts), the suspended group 0
        "minResources": {"cpu": "23", "memory": "12884901888", "nvidia.com/gpu": "2"},
        "scheduleTimeoutSeconds": 600,
    }
    pods = admitted(obj, "coscheduling")
    for name, pod in pods.items():
        assert pod_labels(pod)["scheduling.x-k8s.io/pod-group"] == group["metadata"]["name"], name
        assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
    # Every pod KubeRay runs carries the label, so minMember never exceeds the labelled pods.
    assert group["spec"]["minMember"] <= planned.gang.pods if planned.gang else False


def test_coscheduling_defers_to_kuberay() -> None:
    """KubeRay --batch-scheduler=scheduler-plugins with ray.io/gang-scheduling-enabled creates PodGroup
    <cluster> itself, create-only, and labels the pods (batchscheduler/scheduler-plugins/
    scheduler_plugins.go:48-114): that PodGroup is foreign, so nothing is added; the same label
    value on the pod is no conflict."""
    obj = gpu_cluster()
    cfg = config()
    pod = pod_from(obj, "cpu", labels={"scheduling.x-k8s.io/pod-group": obj["metadata"]["name"]},
                   scheduler_name="scheduler-plugins-scheduler")  # fmt: skip
    foreign, outcome = mutate(pod, cfg, Gangs(cfg, obj, status=GroupObjectStatus.FOREIGN))
    assert foreign == pod and outcome.gang_reason == "foreign-group-object"
    ours, outcome = mutate(pod, cfg, Gangs(cfg, obj))
    assert pod_labels(ours) == pod_labels(pod) and outcome.gang_reason is None


# --- Volcano -------------------------------------------------------------------------------------


def test_volcano_contract() -> None:
    """Volcano: the pod annotation scheduling.k8s.io/group-name names the PodGroup and
    volcano.sh/task-spec the pod's task (pkg/scheduler/api/job_info.go:179-199); a job whose PodGroup
    does not exist is never scheduled (pkg/scheduler/cache/cache.go:1564-1571); spec.minMember,
    minResources and queue (a DNS subdomain, CRD pattern); schedulerName volcano. KubeRay's own
    integration names the PodGroup ray-<cluster>-pg, uses task-spec headgroup for the head and reads
    the queue from label volcano.sh/queue-name (volcano_scheduler.go:60-207)."""
    obj = gpu_cluster(labels={"volcano.sh/queue-name": "research", "ray.io/priority-class-name": "high"})
    group = plan(obj, config("volcano")).group_object
    assert group is not None and all_problems(group) == []
    name = f"ray-{obj['metadata']['name']}-pg"
    assert group["metadata"]["name"] == name
    assert group["spec"]["minMember"] == 6
    assert group["spec"]["queue"] == "research" and group["spec"]["priorityClassName"] == "high"
    for task, pod in admitted(obj, "volcano").items():
        assert pod_annotations(pod)["scheduling.k8s.io/group-name"] == name
        assert pod_annotations(pod)["volcano.sh/task-spec"] == task
        assert pod["spec"]["schedulerName"] == "volcano"


def test_volcano_never_suppresses_its_fallback_without_a_podgroup() -> None:
    """Volcano's pg-controller makes a fallback PodGroup only for pods with schedulerName volcano and
    no group-name annotation (pkg/controllers/podgroup/pg_controller.go:167-170): when our PodGroup
    cannot exist, the annotation is not written and the fallback still happens."""
    obj = gpu_cluster()
    cfg = config("volcano")
    pod = pod_from(obj, "cpu", scheduler_name="volcano")
    for status in (GroupObjectStatus.CRD_MISSING, GroupObjectStatus.UNMANAGED, GroupObjectStatus.FOREIGN):
        admitted_pod, _ = mutate(pod, cfg, Gangs(cfg, obj, status=status))
        assert "scheduling.k8s.io/group-name" not in pod_annotations(admitted_pod)
    invalid = gpu_cluster(labels={"volcano.sh/queue-name": "Not_A_Queue"})
    assert plan(invalid, cfg).withheld is not None  # the API server would refuse that PodGroup


def test_volcano_defers_to_kuberay() -> None:
    """KubeRay --batch-scheduler=volcano writes the annotations before Create, naming ray-<rayjob>-pg
    for a RayJob's cluster (volcano_scheduler.go:263-268): nothing is added."""
    obj = gpu_cluster()
    cfg = config("volcano")
    pod = pod_from(obj, "gpu", annotations={"scheduling.k8s.io/group-name": "ray-myjob-pg",
                                             "volcano.sh/task-spec": "gpu"}, scheduler_name="volcano")  # fmt: skip
    kept, outcome = mutate(pod, cfg, Gangs(cfg, obj))
    assert kept == pod and outcome.gang_reason == "pod-has-keys"


# --- Kueue ---------------------------------------------------------------------------------------


def test_kueue_contract() -> None:
    """Kueue plain-pod groups: label kueue.x-k8s.io/pod-group-name and annotation
    kueue.x-k8s.io/pod-group-total-count on every member (pkg/controller/jobs/pod/constants/
    constants.go:24-29). The count must equal the group's pods exactly: too high, no Workload
    (pod_controller.go:857-861); too low, the excess pods are deleted (:1005-1045); differing counts,
    an unretryable error (:875-887). The label without the count is refused by Kueue's webhook
    (pod_webhook.go:290-300). Kueue needs no schedulerName."""
    obj = gpu_cluster()
    pods = admitted(obj, "kueue")
    exact = 1 + 3 + 2  # what KubeRay runs: the suspended group none
    counts = set()
    for pod in pods.values():
        assert pod_labels(pod)["kueue.x-k8s.io/pod-group-name"] == obj["metadata"]["name"]
        counts.add(pod_annotations(pod)["kueue.x-k8s.io/pod-group-total-count"])
        assert pod["spec"].get("schedulerName") is None
    assert counts == {str(exact)}
    assert plan(obj, config("kueue")).group_object is None


@pytest.mark.parametrize(
    "labels_",
    [
        None,  # autoscaling: the size changes
        {"kueue.x-k8s.io/queue-name": "team"},  # Kueue admits the RayCluster itself
    ],
)
def test_kueue_exact_count_or_no_keys_at_all(labels_: dict[str, str] | None) -> None:
    """Kueue: never the group label without the count (pod_webhook.go:290-300), never a count that
    is not the exact pod count: under an autoscaler, and when Kueue manages the RayCluster itself
    (an owner in the chain is Kueue-managed, pkg/controller/jobframework/reconciler.go:950), no keys."""
    obj = gpu_cluster(autoscaling=labels_ is None, labels=labels_)
    cfg = config("kueue")
    for group in GROUPS:
        pod, outcome = mutate(pod_from(obj, group), cfg, Gangs(cfg, obj))
        assert "kueue.x-k8s.io/pod-group-name" not in pod_labels(pod)
        assert "kueue.x-k8s.io/pod-group-total-count" not in pod_annotations(pod)
        assert outcome.gang_reason in {"autoscaling", "kueue-manages-owner"}
    # Without the owner known (no cluster), neither key either.
    pod, outcome = mutate(pod_from(obj, "cpu"), cfg)
    assert not {k for k in pod_labels(pod) if k.startswith("kueue")} and outcome.gang_reason == "no-cluster"


# --- KAI -----------------------------------------------------------------------------------------


def test_kai_contract() -> None:
    """KAI's external PodGroup (kai-scheduler/KAI-Scheduler docs/batch/README.md "External
    PodGroups"): create scheduling.run.ai/v2alpha2 PodGroup (minMember, queue, subGroups[{name,
    minMember}]), annotate pods pod-group-name, label them kai.scheduler/subgroup-name, and annotate
    kai.scheduler/skip-podgrouper: "true" so the pod-grouper leaves them (pkg/podgrouper/
    pod_controller.go:101, 240-252; pkg/common/constants/constants.go:55). PodGroup.spec.queue is
    authoritative; KAI's default queue is default-queue (plugins/constants/constants.go:22); a pod
    naming a sub-group the PodGroup does not have is ignored (pkg/scheduler/api/podgroup_info/
    job_info.go:314-321); sub-group names are DNS labels (CRD pattern), minMember >= 0 (CRD;
    subgroup_info/factory.go:16)."""
    obj = gpu_cluster(labels={"kai.scheduler/queue": "team-a"})
    group = plan(obj, config("kai")).group_object
    assert group is not None and all_problems(group) == []
    spec = group["spec"]
    assert spec["queue"] == "team-a"
    assert spec["subGroups"] == [
        {"name": "headgroup", "minMember": 1}, {"name": "cpu", "minMember": 3},
        {"name": "gpu", "minMember": 2}, {"name": "spare", "minMember": 0},
    ]  # fmt: skip
    assert spec["minMember"] == sum(s["minMember"] for s in spec["subGroups"]) == 6
    sub_groups = {s["name"] for s in spec["subGroups"]}
    for pod in admitted(obj, "kai").values():
        assert pod_annotations(pod)["pod-group-name"] == group["metadata"]["name"]
        assert pod_annotations(pod)["kai.scheduler/skip-podgrouper"] == "true"
        assert pod_labels(pod)["kai.scheduler/subgroup-name"] in sub_groups
        assert pod["spec"]["schedulerName"] == "kai-scheduler"
    assert plan(gpu_cluster(), config("kai")).group_object["spec"]["queue"] == "default-queue"  # type: ignore[index]


def test_kai_without_sub_groups_when_a_group_name_is_not_a_dns_label() -> None:
    """A sub-group name must match ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ (the CRD): with a worker group named
    otherwise, one gang without sub-groups and no sub-group label on any pod."""
    obj = raycluster(worker("GPU_workers", 2))
    group = plan(obj, config("kai")).group_object
    assert group is not None and all_problems(group) == []
    assert "subGroups" not in group["spec"] and group["spec"]["minMember"] == 3
    cfg = config("kai")
    pod, _ = mutate(pod_from(obj, "GPU_workers"), cfg, Gangs(cfg, obj))
    assert "kai.scheduler/subgroup-name" not in pod_labels(pod)
    assert pod_annotations(pod)["pod-group-name"] == obj["metadata"]["name"]


def test_kai_defers_to_its_own_pod_grouper_keys() -> None:
    """A pod-group-name already on the pod (set by whoever runs KAI's grouping) is not overridden."""
    obj = gpu_cluster()
    cfg = config("kai")
    pod = pod_from(obj, "cpu", annotations={"pod-group-name": "pg-mine"}, scheduler_name="kai-scheduler")
    kept, outcome = mutate(pod, cfg, Gangs(cfg, obj))
    assert kept == pod and outcome.gang_reason == "pod-has-keys"


# --- YuniKorn ------------------------------------------------------------------------------------


def yunikorn_task_groups(text: str) -> list[dict[str, Any]]:
    """YuniKorn's own checks of the task-groups annotation (k8shim pkg/cache/utils.go:40-67):
    a name, a minResource, a minMember above 0, no negative resource, no "pods" key."""
    groups: list[dict[str, Any]] = json.loads(text)
    for group in groups:
        assert group["name"]
        assert isinstance(group["minResource"], dict)
        assert group["minMember"] > 0
        assert "pods" not in group["minResource"]
        assert not any(str(v).startswith("-") for v in group["minResource"].values())
        assert set(group) <= {"name", "minMember", "minResource", "nodeSelector", "tolerations", "affinity",
                              "topologySpreadConstraints", "labels", "annotations"}  # fmt: skip
    return groups


def test_yunikorn_contract() -> None:
    """YuniKorn: task groups in annotation yunikorn.apache.org/task-groups (name, minMember,
    minResource; nodeSelector, tolerations, affinity; pkg/cache/amprotocol.go:47-57), the pod's group in
    yunikorn.apache.org/task-group-name; one task group with minMember 0 and the whole annotation is
    refused (pkg/cache/utils.go:55-58); a placeholder is placed from its task group only
    (pkg/cache/placeholder.go:80, 149-152), so a GPU task group needs the template's toleration;
    application ids are cluster-wide (pkg/cache/context.go:1016, 1048) and label placeholder pods
    (placeholder.go:117-119); schedulerName yunikorn."""
    obj = gpu_cluster(autoscaling=True)  # cpu's minimum is 1, spare's 0
    pods = admitted(obj, "yunikorn")
    texts = {pod_annotations(p)["yunikorn.apache.org/task-groups"] for p in pods.values()}
    assert len(texts) == 1  # the same definition on every pod, whichever YuniKorn sees first
    groups = {g["name"]: g for g in yunikorn_task_groups(texts.pop())}
    assert {n: g["minMember"] for n, g in groups.items()} == {"headgroup": 1, "cpu": 1, "gpu": 2}
    assert groups["gpu"]["tolerations"] == GPU_TEMPLATE["tolerations"]
    assert groups["gpu"]["nodeSelector"] == GPU_TEMPLATE["nodeSelector"]
    assert groups["gpu"]["affinity"] == GPU_TEMPLATE["affinity"]
    assert groups["gpu"]["minResource"] == {"cpu": "8", "nvidia.com/gpu": "1"}
    app_ids = {pod_annotations(p)["yunikorn.apache.org/app-id"] for p in pods.values()}
    assert app_ids == {yunikorn_app_id("default", obj["metadata"]["name"])}
    (app_id,) = app_ids
    assert app_id.startswith(f"default-{obj['metadata']['name']}-")
    for name, pod in pods.items():
        assert pod["spec"]["schedulerName"] == "yunikorn"
        if name == "spare":  # no task group of 0: the pod is outside the gang
            assert "yunikorn.apache.org/task-group-name" not in pod_annotations(pod)
        else:
            assert pod_annotations(pod)["yunikorn.apache.org/task-group-name"] == name


APP_ID_CASES = [("a-b", "c"), ("a", "b-c"), ("n" * 63, "c" * 63), ("n" * 63, "c" * 62 + "d"), ("n" * 27, "rc"),
                ("ml", "raycluster.v2"), ("ml", "raycluster-v2")]  # fmt: skip


@pytest.mark.parametrize(("namespace", "cluster"), APP_ID_CASES)
def test_yunikorn_app_ids_are_unique_valid_labels_and_make_valid_placeholder_names(
    namespace: str, cluster: str
) -> None:
    """Same-named clusters in two namespaces would merge into one application (context.go:1016, 1048);
    placeholders are labelled with the id (placeholder.go:117-119) and named
    tg-<appID[:28]>-<taskGroup[:20]>-<nonce> (gang_utils.go:61-66)."""
    app_id = yunikorn_app_id(namespace, cluster)
    assert names.label_value_problems(app_id) == []
    placeholder = f"tg-{app_id[:28]}-{'headgroup'[:20]}-{'a1b2c3d4e5'}"
    assert names.is_dns1123_subdomain(placeholder), placeholder
    others = {yunikorn_app_id(n, c) for n, c in APP_ID_CASES if (n, c) != (namespace, cluster)}
    assert app_id not in others


def test_yunikorn_needs_task_group_names_that_name_pods() -> None:
    planned = plan(raycluster(worker("GPU_workers", 2)), config("yunikorn"))
    assert planned.withheld is not None and planned.withheld.reason == "invalid-name"


def test_yunikorn_keeps_an_existing_app_id_and_refuses_an_autogenerated_one() -> None:
    """The app id is read from label yunikorn.apache.org/app-id, the same annotation, label
    applicationId, label spark-app-selector, in that order (pkg/common/utils/utils.go:141-186): a
    canonical key written on the pod would override KubeRay's applicationId (copied from the
    RayCluster's label). YuniKorn's admission controller makes up namespace-wide ids
    yunikorn-<ns>-autogen or <ns>-uniqueautogen (utils.go:122-136): a gang cannot share those."""
    obj = gpu_cluster()
    cfg = config("yunikorn")
    gangs = Gangs(cfg, obj)
    kuberay = pod_from(obj, "cpu", labels={"applicationId": "my-app"}, scheduler_name="yunikorn")
    pod, outcome = mutate(kuberay, cfg, gangs)
    assert "yunikorn.apache.org/app-id" not in pod_annotations(pod) and pod_labels(pod)["applicationId"] == "my-app"
    assert pod_annotations(pod)["yunikorn.apache.org/task-group-name"] == "cpu"
    assert any("kept the pod's YuniKorn application id 'my-app'" in n for n in outcome.notes)
    for autogen in ("yunikorn-default-autogen", "default-uniqueautogen"):
        auto = pod_from(obj, "cpu", labels={"yunikorn.apache.org/app-id": autogen})
        pod, outcome = mutate(auto, cfg, gangs)
        assert pod == auto and outcome.gang_reason == "app-id-autogen"


def test_yunikorn_task_groups_are_bounded() -> None:
    """The API server refuses more than 256 KiB of annotations: past a bound, no keys."""
    big = {"nodeSelector": {f"example.com/key-{i}": "v" * 60 for i in range(200)}}
    obj = raycluster(*(worker(f"group-{i}", 1, pod_spec=big) for i in range(10)))
    planned = plan(obj, config("yunikorn"))
    assert planned.withheld is not None and planned.withheld.reason == "too-large"
    assert TASK_GROUPS_MAX_BYTES < 256 * 1024


# --- custom and schedulerName ---------------------------------------------------------------------


def test_custom_templates() -> None:
    obj = gpu_cluster()
    custom = {"labels": {"example.com/gang": "{group}"},
              "annotations": {"example.com/min": "{size}", "example.com/part": "{namespace}/{task}"}}  # fmt: skip
    pods = admitted(obj, "custom", custom=custom)
    assert pod_labels(pods["gpu"])["example.com/gang"] == obj["metadata"]["name"]
    assert pod_annotations(pods["gpu"])["example.com/min"] == "6"
    assert pod_annotations(pods["gpu"])["example.com/part"] == "default/gpu"
    assert "schedulerName" not in pods["gpu"]["spec"]  # custom: none unless configured


@pytest.mark.parametrize(
    ("scheduler", "name"),
    [("coscheduling", "scheduler-plugins-scheduler"), ("volcano", "volcano"), ("kai", "kai-scheduler"),
     ("yunikorn", "yunikorn"), ("kueue", "default-scheduler")],
)  # fmt: skip
def test_default_scheduler_names(scheduler: str, name: str) -> None:
    assert admitted(gpu_cluster(), scheduler)["cpu"]["spec"].get("schedulerName", "default-scheduler") == name


# --- every group object against its CRD, for every KubeRay sample ---------------------------------


def _samples_with_a_cluster() -> list[Any]:
    """Every KubeRay sample that makes a RayCluster (a RayJob with a clusterSelector runs on an existing one)."""
    defaults = CRDDefaults.packaged()
    return [p for p in ray_object_params() if cluster_of(defaults.apply(p.values[1]))[0] is not None]


def test_only_the_job_on_an_existing_cluster_makes_no_cluster() -> None:
    assert len(ray_object_params()) - len(_samples_with_a_cluster()) == 1


@pytest.mark.parametrize("scheduler", ["coscheduling", "volcano", "kai"])
@pytest.mark.parametrize(("path", "raw"), _samples_with_a_cluster())
def test_every_sample_group_object_validates_against_the_crd(path: str, raw: dict[str, Any], scheduler: str) -> None:
    defaults = CRDDefaults.packaged()
    cluster, _ = cluster_of(defaults.apply(raw))
    assert cluster is not None
    cluster = defaults.apply(cluster)
    cluster["metadata"].update(namespace="ml", uid="7d9e5c1a-0000-4000-8000-000000000001")
    planned = plan(cluster, config(scheduler))
    assert planned.withheld is None, planned.withheld
    assert planned.group_object is not None
    assert all_problems(planned.group_object) == []
    assert planned.gang is not None and 1 <= planned.group_object["spec"]["minMember"] <= planned.gang.pods


def test_the_crd_checks_catch_what_the_api_server_would_refuse_or_drop() -> None:
    """The checks above can fail: refused values and fields the API server would silently prune."""
    group = plan(gpu_cluster(), config()).group_object
    assert group is not None
    broken = json.loads(json.dumps(group))
    broken["spec"]["minMember"] = 0
    broken["spec"]["minMembers"] = 3
    broken["metadata"]["ownerReferences"][0]["uid"] = ""
    problems = all_problems(broken)
    assert any("minMember: 0 is less than the minimum of 1" in p for p in problems)
    assert "unknown field .spec.minMembers" in problems
    assert "ownerReference without uid" in problems
    kai = plan(gpu_cluster(), config("kai")).group_object
    assert kai is not None
    bad = json.loads(json.dumps(kai))
    bad["spec"]["subGroups"][1]["name"] = "Not_A_Label"
    assert any("does not match" in p for p in all_problems(bad))
