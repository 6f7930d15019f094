"""The admission protocol core: verdicts, statuses, warnings, audit annotations, patches."""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Mapping
from typing import Any

import jsonpatch
import pytest

from tests.reviews import ray_pod, review
from tests.unit.test_rules import GPU, container, gpu_worker, service
from webhook.admission import Admission, ReviewError, parse_review
from webhook.checker import Checker
from webhook.config import Mode, parse_config
from webhook.gang import GroupInfo, TaskGroup
from webhook.karta.registry import DefinitionSet

QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def admission(config: dict[str, Any] | None = None, owners: Any = None) -> Admission:
    return Admission(Checker(DefinitionSet.builtin(), parse_config(config or {}, "test")), owners)


def validate(body: dict[str, Any], mode: Mode | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return admission(config).validate(parse_review(body), mode).response


BROKEN = service([{"replicas": 10, "maxReplicas": 5}])


def test_well_formed_answer_echoes_uid_and_api_version() -> None:
    body = review(service([{}]), uid="abc-123")
    answer = validate(body)
    assert answer == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "response": {"uid": "abc-123", "allowed": True}}  # fmt: skip


def test_denial_names_object_field_value_and_rule() -> None:
    response = validate(review(BROKEN))["response"]
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"] == (
        'RayService.ray.io "svc" is invalid: spec.rayClusterConfig.workerGroupSpecs[0].replicas: '
        "Invalid value: 10: worker 'small': replicas 10 is above maxReplicas 5, so only 5 would run "
        "[replicas-within-bounds]"
    )
    assert status["details"]["causes"] == [{
        "reason": "FieldValueInvalid",
        "field": "spec.rayClusterConfig.workerGroupSpecs[0].replicas",
        "message": "worker 'small': replicas 10 is above maxReplicas 5, so only 5 would run [replicas-within-bounds]",
    }]  # fmt: skip
    assert status["details"]["kind"] == "RayService" and status["details"]["group"] == "ray.io"


def test_several_denials_are_listed_like_an_aggregate() -> None:
    obj = service([{"replicas": 10, "maxReplicas": 5}, {"groupName": "headgroup"}])
    message = validate(review(obj))["response"]["status"]["message"]
    assert message.startswith('RayService.ray.io "svc" is invalid: [') and message.endswith("]")
    assert "[replicas-within-bounds]" in message and "[reserved-instance-id]" in message


def test_warnings_accompany_allowed_objects() -> None:
    obj = service([gpu_worker(container(**GPU))])  # no GPU toleration: a warning
    response = validate(review(obj))["response"]
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert warning.startswith(
        "[gpu-toleration] spec.rayClusterConfig.workerGroupSpecs[0].template.spec.tolerations: worker 'gpu': the pod "
        "template asks for GPUs but tolerates none of the GPU taints (nvidia.com/gpu, amd.com/gpu)"
    )
    # Longer than the API server keeps: clipped to 256 characters by us, visibly.
    assert len(warning) == 256 and warning.endswith("...")


def test_audit_mode_never_denies_and_annotates() -> None:
    response = validate(review(BROKEN), Mode.AUDIT)["response"]
    assert response["allowed"] is True
    assert response["warnings"][0].startswith(
        "[replicas-within-bounds] spec.rayClusterConfig.workerGroupSpecs[0].replicas:"
    )
    annotations = response["auditAnnotations"]
    assert annotations["mode"] == "audit"
    entries = json.loads(annotations["replicas-within-bounds"])
    assert entries == [
        {
            "path": "spec.rayClusterConfig.workerGroupSpecs[0].replicas",
            "severity": "deny",
            "message": "worker 'small': replicas 10 is above maxReplicas 5, so only 5 would run",
        }
    ]
    for key in annotations:
        assert "/" not in key and len(key) <= 63 and QUALIFIED_NAME.fullmatch(key)


def test_global_mode_from_config() -> None:
    assert validate(review(BROKEN), config={"mode": "audit"})["response"]["allowed"] is True
    body = review(BROKEN)
    assert validate(body, config={"mode": "off"})["response"] == {"uid": body["request"]["uid"], "allowed": True}
    # A fixed mode (the per-namespace paths) wins over the configured one.
    assert validate(body, Mode.ENFORCE, config={"mode": "audit"})["response"]["allowed"] is False


def test_off_mode_says_nothing() -> None:
    response = validate(review(BROKEN), Mode.OFF)["response"]
    assert set(response) == {"uid", "allowed"} and response["allowed"] is True


def test_many_violations_stay_within_the_warning_budget() -> None:
    groups = [{"groupName": f"g{i}", "replicas": 10, "maxReplicas": 5} for i in range(60)]
    response = validate(review(service(groups)), Mode.AUDIT)["response"]
    warnings = response["warnings"]
    assert sum(len(w) for w in warnings) <= 4096
    assert warnings[-1].startswith("... and ") and "more violations" in warnings[-1]
    entries = json.loads(response["auditAnnotations"]["replicas-within-bounds"])
    assert entries[-1].keys() == {"more"} and len(response["auditAnnotations"]["replicas-within-bounds"]) <= 2048


@pytest.mark.parametrize("dry_run", [False, True])
def test_dry_run_gets_the_same_answer(dry_run: bool) -> None:
    body = review(BROKEN, uid="same", dry_run=dry_run)
    assert validate(body) == validate(review(BROKEN, uid="same"))


def test_update_keeping_an_old_violation_is_allowed_with_a_warning() -> None:
    edited = copy.deepcopy(BROKEN)
    edited["metadata"]["finalizers"] = []
    response = validate(review(edited, operation="UPDATE", old=BROKEN))["response"]
    assert response["allowed"] is True
    assert "already present before this update" in response["warnings"][0]


def test_update_making_it_worse_is_denied() -> None:
    worse = service([{"replicas": 12, "maxReplicas": 5}])
    assert validate(review(worse, operation="UPDATE", old=BROKEN))["response"]["allowed"] is False


def test_update_introducing_a_violation_is_denied() -> None:
    response = validate(review(BROKEN, operation="UPDATE", old=service([{}])))["response"]
    assert response["allowed"] is False


@pytest.mark.parametrize(
    "body",
    [
        review(None, operation="DELETE", old=BROKEN),
        review(BROKEN, operation="UPDATE", old=BROKEN, sub_resource="status"),
        review(BROKEN, operation="UPDATE", old=BROKEN, sub_resource="scale"),
        review({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        review({**BROKEN, "apiVersion": "ray.io/v2"}),
    ],
)
def test_never_denied(body: dict[str, Any]) -> None:
    assert validate(body)["response"] == {"uid": body["request"]["uid"], "allowed": True}


def test_object_without_kind_fields_uses_the_request_kind() -> None:
    obj = {k: v for k, v in BROKEN.items() if k not in {"apiVersion", "kind"}}
    body = review(obj, kind=("ray.io", "v1", "RayService"))
    assert validate(body)["response"]["allowed"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not a JSON object"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "Foo"}, "expected apiVersion admission.k8s.io/v1"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "has no request"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}, "request.uid is missing"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "object": 3}},
         "request.object is not an object"),
    ],
)  # fmt: skip
def test_malformed_reviews(body: Any, message: str) -> None:
    with pytest.raises(ReviewError, match=re.escape(message)):
        parse_review(body)


# --- mutation ---


class Owners:
    """An owner index holding precomputed group info, as the cluster cache does."""

    def __init__(self, infos: Mapping[tuple[str, str, str | None], GroupInfo]) -> None:
        self.infos = infos
        self.asked: list[tuple[str, str, str, str | None]] = []

    def group_info(
        self, namespace: str, owner: Mapping[str, Any], component: str, instance: str | None
    ) -> GroupInfo | None:
        self.asked.append((namespace, str(owner["name"]), component, instance))
        return self.infos.get((str(owner["name"]), component, instance))


INFO = GroupInfo(3, (TaskGroup("head", 1, {"cpu": "1"}), TaskGroup("small-group", 2, {"cpu": "2", "memory": "4Gi"})))


def mutate(pod: dict[str, Any], config: dict[str, Any] | None = None, owners: Any = None) -> tuple[dict[str, Any], Any]:
    outcome = admission(config, owners).mutate(parse_review(review(pod)))
    response = outcome.response["response"]
    if "patch" not in response:
        return pod, outcome
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(pod, ops), outcome


def test_coscheduling_label_and_size_from_the_owner() -> None:
    owners = Owners({("rayservice-sample-x7k2p", "raycluster", None): INFO})
    patched, outcome = mutate(ray_pod(), owners=owners)
    assert patched["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "rayservice-sample-x7k2p"
    assert patched["metadata"]["annotations"] == {
        "karta-admission.io/pod-group": "rayservice-sample-x7k2p",
        "karta-admission.io/pod-group-size": "3",
    }
    assert owners.asked == [("default", "rayservice-sample-x7k2p", "raycluster", None)]
    assert outcome.verdict == "patched" and outcome.notes == []


def test_an_owner_index_that_is_empty_at_start_is_still_asked() -> None:
    """The cluster owner cache has a length and is empty until its first list: it must be kept
    (found through the real API server: the server replaced it for good with NoOwnerIndex)."""

    class FillsLater(Owners):
        def __len__(self) -> int:
            return len(self.infos)

    owners = FillsLater({})
    adm = admission(owners=owners)
    owners.infos = {("rayservice-sample-x7k2p", "raycluster", None): INFO}
    outcome = adm.mutate(parse_review(review(ray_pod())))
    assert owners.asked and outcome.notes == []


def test_unknown_size_still_writes_the_group() -> None:
    patched, outcome = mutate(ray_pod())
    assert patched["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "rayservice-sample-x7k2p"
    assert "karta-admission.io/pod-group-size" not in patched["metadata"]["annotations"]
    assert outcome.notes == ["size-unknown"]


def test_second_pass_yields_no_patch() -> None:
    owners = Owners({("rayservice-sample-x7k2p", "raycluster", None): INFO})
    for scheduler in ("coscheduling", "volcano", "kueue", "kai", "yunikorn"):
        config = {"gang": {"scheduler": scheduler}}
        once, _ = mutate(ray_pod(), config, owners)
        twice, outcome = mutate(once, config, owners)
        assert twice == once and outcome.verdict == "allowed", scheduler


def test_existing_keys_are_never_replaced() -> None:
    pod = ray_pod(labels={"scheduling.x-k8s.io/pod-group": "mine"}, annotations={"keep": "me"})
    patched, _ = mutate(pod)
    assert patched["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "mine"
    assert patched["metadata"]["annotations"]["keep"] == "me"


def test_keys_with_slashes_and_tildes_are_escaped() -> None:
    config = {"gang": {"scheduler": "custom", "custom": {"annotations": {"example.com/odd~key": "{group}"}}}}
    pod = ray_pod(annotations={"x": "y"})
    outcome = admission(config).mutate(parse_review(review(pod)))
    ops = json.loads(base64.b64decode(outcome.response["response"]["patch"]))
    assert {
        "op": "add",
        "path": "/metadata/annotations/example.com~1odd~0key",
        "value": "rayservice-sample-x7k2p",
    } in ops
    assert (
        jsonpatch.apply_patch(pod, ops)["metadata"]["annotations"]["example.com/odd~key"] == "rayservice-sample-x7k2p"
    )


def test_missing_annotations_map_is_added_whole() -> None:
    pod = ray_pod()
    assert "annotations" not in pod["metadata"]
    outcome = admission().mutate(parse_review(review(pod)))
    ops = json.loads(base64.b64decode(outcome.response["response"]["patch"]))
    assert {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {"karta-admission.io/pod-group": "rayservice-sample-x7k2p"},
    } in ops


@pytest.mark.parametrize(
    ("scheduler", "labels", "annotations"),
    [
        ("volcano", {},
         {"scheduling.k8s.io/group-name": "ray-rayservice-sample-x7k2p-pg", "volcano.sh/task-spec": "small-group"}),
        ("kueue", {"kueue.x-k8s.io/pod-group-name": "rayservice-sample-x7k2p"},
         {"kueue.x-k8s.io/pod-group-total-count": "3"}),
        ("kai", {"kai.scheduler/subgroup-name": "small-group"}, {"pod-group-name": "rayservice-sample-x7k2p"}),
        ("yunikorn", {"yunikorn.apache.org/app-id": "rayservice-sample-x7k2p"},
         {"yunikorn.apache.org/task-group-name": "small-group",
          "yunikorn.apache.org/task-groups": json.dumps(
              [{"name": "head", "minMember": 1, "minResource": {"cpu": "1"}},
               {"name": "small-group", "minMember": 2, "minResource": {"cpu": "2", "memory": "4Gi"}}],
              separators=(",", ":"))}),
    ],
)  # fmt: skip
def test_scheduler_conventions(scheduler: str, labels: dict[str, str], annotations: dict[str, str]) -> None:
    owners = Owners({("rayservice-sample-x7k2p", "raycluster", None): INFO})
    patched, _ = mutate(ray_pod(), {"gang": {"scheduler": scheduler}}, owners)
    for key, value in labels.items():
        assert patched["metadata"]["labels"][key] == value
    for key, value in annotations.items():
        assert patched["metadata"]["annotations"][key] == value


def test_head_pod_task_is_its_component() -> None:
    patched, _ = mutate(ray_pod("head"), {"gang": {"scheduler": "volcano"}})
    assert patched["metadata"]["annotations"]["volcano.sh/task-spec"] == "head"


@pytest.mark.parametrize(
    "pod",
    [
        {**ray_pod(), "metadata": {**ray_pod()["metadata"], "ownerReferences": []}},  # no controller
        ray_pod(owner_kind="Deployment"),  # owner kind without a definition
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "web"}}, "spec": {}},
    ],
)
def test_pods_not_claimed_are_left_alone(pod: dict[str, Any]) -> None:
    outcome = admission().mutate(parse_review(review(pod)))
    assert outcome.response["response"] == {"uid": outcome.response["response"]["uid"], "allowed": True}


def test_pod_without_cluster_label_is_allowed_unpatched() -> None:
    pod = ray_pod()
    del pod["metadata"]["labels"]["ray.io/cluster"]
    outcome = admission().mutate(parse_review(review(pod)))
    assert "patch" not in outcome.response["response"]
    assert outcome.verdict == "ungrouped"


def test_mutation_off() -> None:
    for config in ({"gang": {"scheduler": "none"}}, {"mode": "off"}):
        outcome = admission(config).mutate(parse_review(review(ray_pod())))
        assert "patch" not in outcome.response["response"]


def test_only_pod_create_is_mutated() -> None:
    body = review(ray_pod(), operation="UPDATE", old=ray_pod())
    assert "patch" not in admission().mutate(parse_review(body)).response["response"]


def test_documented_example_reviews() -> None:
    """The reviews the README and `make run` tell people to send get the answers they promise."""
    examples = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "examples"
    broken = json.loads((examples / "review-broken-rayservice.json").read_text())
    response = validate(broken)["response"]
    assert response["allowed"] is False
    assert "replicas 10 is above maxReplicas 5" in response["status"]["message"]
    assert "nvidia.com/gpu limits must be a whole number of GPUs" in response["status"]["message"]
    pod = json.loads((examples / "review-ray-worker-pod.json").read_text())
    outcome = admission().mutate(parse_review(pod))
    assert outcome.verdict == "patched"


@pytest.mark.parametrize("count", [1, 15, 16, 17, 18, 40])
def test_warning_budget_holds_for_any_count(count: int) -> None:
    groups = [{"groupName": f"group-with-a-long-name-{i:03d}", "replicas": 10, "maxReplicas": 5} for i in range(count)]
    warnings = validate(review(service(groups)), Mode.AUDIT)["response"]["warnings"]
    assert sum(len(w) for w in warnings) <= 4096
    shown = [w for w in warnings if not w.startswith("... and ")]
    hidden = int(warnings[-1].split()[2]) if warnings[-1].startswith("... and ") else 0
    assert len(shown) + hidden == count
