"""The admission protocol core: verdicts, statuses, warnings, audit annotations, patches."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import jsonpatch
import pytest

from tests.builders import GPU, admission, container, gpu_worker, service, validate
from tests.gang import CLUSTER as CLUSTER_NAME
from tests.gang import Gangs, config, mutate, raycluster, worker
from tests.gang import admission as gang_admission
from tests.reviews import ray_pod, review
from webhook.admission import CLIPPED, WARNING_MAX, ReviewError, parse_review
from webhook.admission.answers import clip
from webhook.config import parse_config
from webhook.evaluation import Mode
from webhook.gang import GroupObjectStatus

QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


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
        'Invalid value: 10: worker group "small": replicas 10 is above maxReplicas 5; KubeRay would run 5 '
        "[replicas-within-bounds]"
    )
    assert status["details"]["causes"] == [{
        "reason": "FieldValueInvalid",
        "field": "spec.rayClusterConfig.workerGroupSpecs[0].replicas",
        "message": 'worker group "small": replicas 10 is above maxReplicas 5; KubeRay would run 5 '
                   "[replicas-within-bounds]",
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
    assert warning == (
        '[gpu-toleration] spec.rayClusterConfig.workerGroupSpecs[0].template.spec.tolerations: worker group "gpu": '
        "asks for GPUs but tolerates no GPU taint (nvidia.com/gpu, amd.com/gpu); it stays Pending on tainted GPU nodes"
    )
    assert len(warning) <= WARNING_MAX  # whole: the API server cuts warnings past 256 characters


def test_long_warnings_are_cut_at_a_word_and_say_so() -> None:
    text = 'worker group "g": ' + " ".join(f"word{i}" for i in range(80))
    clipped = clip(text, WARNING_MAX)
    assert len(clipped) <= WARNING_MAX and clipped.endswith(CLIPPED)
    kept = clipped.removesuffix(CLIPPED)
    assert text.startswith(kept) and text[len(kept)] == " "  # cut between words, not inside one


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
            "message": 'worker group "small": replicas 10 is above maxReplicas 5; KubeRay would run 5',
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


# --- mutation (the per-scheduler contracts are in test_gang_schedulers.py) ---

CLUSTER = raycluster(worker("small-group", 2))  # the cluster of tests.reviews.ray_pod: head + 2 workers


def test_coscheduling_keys_scheduler_name_and_size_from_the_owner() -> None:
    gangs = Gangs(config(), CLUSTER)
    patched, outcome = mutate(ray_pod(), config(), gangs)
    assert patched["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == CLUSTER_NAME
    assert patched["metadata"]["annotations"] == {
        "karta-admission.io/pod-group": CLUSTER_NAME,
        "karta-admission.io/pod-group-size": "3",
    }
    assert patched["spec"]["schedulerName"] == "scheduler-plugins-scheduler"  # was default-scheduler
    assert gangs.asked == [("default", CLUSTER_NAME)]
    assert outcome.verdict == "patched" and outcome.notes == [] and outcome.gang_reason is None


def test_without_a_cluster_no_key_that_needs_a_group_object() -> None:
    """`serve --no-cluster`: nobody creates PodGroups, so a pod-group label would hang the pod."""
    pod = ray_pod(annotations={"karta-admission.io/pod-group": "forged"})
    patched, outcome = mutate(pod, config())
    assert "scheduling.x-k8s.io/pod-group" not in patched["metadata"]["labels"]
    assert patched["spec"]["schedulerName"] == "default-scheduler"
    # Our own annotation states a grouping this product made: a pre-set one goes.
    assert patched["metadata"]["annotations"] == {}
    assert outcome.verdict == "patched" and outcome.gang_reason == "no-cluster"
    assert any(n.startswith("no-cluster: no cluster access") for n in outcome.notes)
    clean, outcome = mutate(ray_pod(), config())
    assert clean == ray_pod() and outcome.verdict == "withheld"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (GroupObjectStatus.CRD_MISSING, "crd-missing"),
        (GroupObjectStatus.FOREIGN, "foreign-group-object"),
        (GroupObjectStatus.UNMANAGED, "no-group-objects"),
        (GroupObjectStatus.UNKNOWN, "group-objects-unknown"),
    ],
)
def test_no_keys_and_no_scheduler_name_unless_the_group_object_is_expected(
    status: GroupObjectStatus, reason: str
) -> None:
    patched, outcome = mutate(ray_pod(), config(), Gangs(config(), CLUSTER, status=status))
    assert patched == ray_pod()
    assert outcome.verdict == "withheld" and outcome.gang_reason == reason


def test_a_gang_index_that_is_empty_at_start_is_still_asked() -> None:
    """An index with a length, empty until its first list, must be kept (found through the real API
    server: `owners or NoCluster()` replaced the server's owner cache for good)."""

    class FillsLater(Gangs):
        def __len__(self) -> int:
            return len(self.plans)

    gangs = FillsLater(config())
    mutate(ray_pod(), config(), gangs)
    assert gangs.asked == [("default", CLUSTER_NAME)]


def test_second_pass_yields_no_patch() -> None:
    for scheduler in ("coscheduling", "volcano", "kueue", "kai", "yunikorn"):
        cfg = config(scheduler)
        gangs = Gangs(cfg, CLUSTER)
        once, first = mutate(ray_pod(), cfg, gangs)
        assert first.verdict == "patched", scheduler
        twice, outcome = mutate(once, cfg, gangs)
        assert twice == once and outcome.verdict == "allowed", scheduler


def test_keys_someone_else_set_mean_nothing_is_added() -> None:
    pod = ray_pod(labels={"scheduling.x-k8s.io/pod-group": "mine"}, annotations={"keep": "me"})
    patched, outcome = mutate(pod, config(), Gangs(config(), CLUSTER))
    assert patched == pod
    assert outcome.gang_reason == "pod-has-keys"
    assert "scheduling.x-k8s.io/pod-group='mine'" in outcome.notes[-1]


def test_a_pod_on_another_scheduler_is_left_alone() -> None:
    pod = ray_pod()
    pod["spec"]["schedulerName"] = "yunikorn"
    patched, outcome = mutate(pod, config(), Gangs(config(), CLUSTER))
    assert patched == pod and outcome.gang_reason == "other-scheduler"


def test_scheduler_name_is_set_only_over_empty_or_default() -> None:
    gangs = Gangs(config(), CLUSTER)
    for before, after in (("", "scheduler-plugins-scheduler"), (None, "scheduler-plugins-scheduler"),
                          ("scheduler-plugins-scheduler", "scheduler-plugins-scheduler")):  # fmt: skip
        pod = ray_pod()
        if before is None:
            del pod["spec"]["schedulerName"]
        else:
            pod["spec"]["schedulerName"] = before
        patched, _ = mutate(pod, config(), gangs)
        assert patched["spec"]["schedulerName"] == after
        assert patched["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == CLUSTER_NAME
    # "" configured: keys only, the schedulerName is the user's business.
    unset = config(schedulerName="")
    patched, _ = mutate(ray_pod(), unset, Gangs(unset, CLUSTER))
    assert patched["spec"]["schedulerName"] == "default-scheduler"
    assert patched["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == CLUSTER_NAME
    # Another name configured.
    other = config(schedulerName="gang-scheduler")
    patched, _ = mutate(ray_pod(), other, Gangs(other, CLUSTER))
    assert patched["spec"]["schedulerName"] == "gang-scheduler"


def test_forged_informational_annotations_are_replaced_when_grouping() -> None:
    pod = ray_pod(annotations={"karta-admission.io/pod-group": "victim", "karta-admission.io/pod-group-size": "1"})
    patched, _ = mutate(pod, config(), Gangs(config(), CLUSTER))
    assert patched["metadata"]["annotations"] == {
        "karta-admission.io/pod-group": CLUSTER_NAME,
        "karta-admission.io/pod-group-size": "3",
    }


def test_a_recreated_owner_and_an_unknown_one_give_no_keys() -> None:
    gangs = Gangs(config(), raycluster(worker("small-group", 2), uid="another-uid"))
    patched, outcome = mutate(ray_pod(), config(), gangs)
    assert patched == ray_pod() and outcome.gang_reason == "uid"
    patched, outcome = mutate(ray_pod(cluster="elsewhere"), config(), gangs)
    assert outcome.gang_reason == "absent"


def test_custom_keys_without_a_cluster_leave_out_only_what_needs_the_size() -> None:
    custom = {"labels": {"example.com/group": "{group}"},
              "annotations": {"example.com/size": "{size}", "example.com/task": "{task}"}}  # fmt: skip
    cfg = config("custom", custom=custom)
    patched, outcome = mutate(ray_pod("head"), cfg)
    assert patched["metadata"]["labels"]["example.com/group"] == CLUSTER_NAME
    assert patched["metadata"]["annotations"] == {
        "example.com/task": "headgroup",
        "karta-admission.io/pod-group": CLUSTER_NAME,
    }
    assert outcome.gang_reason == "size-unknown" and outcome.verdict == "patched"
    patched, outcome = mutate(ray_pod("head"), cfg, Gangs(cfg, CLUSTER))
    assert patched["metadata"]["annotations"]["example.com/size"] == "3" and outcome.gang_reason is None


def test_keys_with_slashes_and_tildes_are_escaped() -> None:
    cfg = config("custom", custom={"annotations": {"example.com/odd~key": "{group}"}})
    pod = ray_pod(annotations={"x": "y"})
    outcome = gang_admission(cfg, Gangs(cfg, CLUSTER)).mutate(parse_review(review(pod)))
    ops = json.loads(base64.b64decode(outcome.response["response"]["patch"]))
    assert {"op": "add", "path": "/metadata/annotations/example.com~1odd~0key", "value": CLUSTER_NAME} in ops
    assert jsonpatch.apply_patch(pod, ops)["metadata"]["annotations"]["example.com/odd~key"] == CLUSTER_NAME


def test_missing_annotations_map_is_added_whole() -> None:
    pod = ray_pod()
    assert "annotations" not in pod["metadata"]
    outcome = gang_admission(config(), Gangs(config(), CLUSTER)).mutate(parse_review(review(pod)))
    ops = json.loads(base64.b64decode(outcome.response["response"]["patch"]))
    assert {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {"karta-admission.io/pod-group": CLUSTER_NAME, "karta-admission.io/pod-group-size": "3"},
    } in ops


@pytest.mark.parametrize(
    "pod",
    [
        {**ray_pod(), "metadata": {**ray_pod()["metadata"], "ownerReferences": []}},  # no controller
        ray_pod(owner_kind="Deployment"),  # owner kind without a definition
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "web"}}, "spec": {}},
    ],
)
def test_pods_not_claimed_are_left_alone(pod: dict[str, Any]) -> None:
    outcome = gang_admission(config(), Gangs(config(), CLUSTER)).mutate(parse_review(review(pod)))
    assert outcome.response["response"] == {"uid": outcome.response["response"]["uid"], "allowed": True}
    assert outcome.verdict == "skipped"


def test_pod_without_cluster_label_gets_no_keys() -> None:
    pod = ray_pod()
    del pod["metadata"]["labels"]["ray.io/cluster"]
    patched, outcome = mutate(pod, config(), Gangs(config(), CLUSTER))
    assert patched == pod
    assert outcome.verdict == "withheld" and outcome.gang_reason == "group-key"


def test_a_group_key_other_than_the_owners_name_gets_no_keys() -> None:
    pod = ray_pod()
    pod["metadata"]["labels"]["ray.io/cluster"] = "not-the-owner"
    patched, outcome = mutate(pod, config(), Gangs(config(), CLUSTER))
    assert patched == pod and outcome.gang_reason == "group-key-mismatch"


def test_a_worker_group_the_owner_does_not_have_gets_no_keys() -> None:
    _, outcome = mutate(ray_pod("worker", "gpu"), config(), Gangs(config(), CLUSTER))
    assert outcome.gang_reason == "unknown-task" and "gpu" in outcome.notes[-1]


def test_mutation_off() -> None:
    for cfg in (parse_config({"gang": {"scheduler": "none"}}, "t"), parse_config({"mode": "off"}, "t")):
        outcome = gang_admission(cfg, Gangs(cfg, CLUSTER)).mutate(parse_review(review(ray_pod())))
        assert "patch" not in outcome.response["response"]


def test_only_pod_create_is_mutated() -> None:
    body = review(ray_pod(), operation="UPDATE", old=ray_pod())
    assert (
        "patch"
        not in gang_admission(config(), Gangs(config(), CLUSTER)).mutate(parse_review(body)).response["response"]
    )


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
    # `make run` has no cluster: no gang keys, and the answer says why.
    assert outcome.verdict == "withheld" and outcome.gang_reason == "no-cluster"


@pytest.mark.parametrize("count", [1, 15, 16, 17, 18, 40])
def test_warning_budget_holds_for_any_count(count: int) -> None:
    groups = [{"groupName": f"group-with-a-long-name-{i:03d}", "replicas": 10, "maxReplicas": 5} for i in range(count)]
    warnings = validate(review(service(groups)), Mode.AUDIT)["response"]["warnings"]
    assert sum(len(w) for w in warnings) <= 4096
    shown = [w for w in warnings if not w.startswith("... and ")]
    hidden = int(warnings[-1].split()[2]) if warnings[-1].startswith("... and ") else 0
    assert len(shown) + hidden == count
