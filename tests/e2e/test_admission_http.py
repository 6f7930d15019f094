"""End to end: the real server (gunicorn, TLS) answering real AdmissionReviews over HTTPS."""

from __future__ import annotations

import base64
import copy
import json
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest

from tests.builders import GPU, TOLERATE, container, gpu_worker, service
from tests.corpus import ray_object_params
from tests.e2e.server import RunningServer, metric_total, serving
from tests.reviews import ray_pod, review
from webhook.kube.defaults import CRDDefaults

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("admission_http")]

QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
BROKEN = service([{"replicas": 10, "maxReplicas": 5}])


@pytest.fixture(scope="module")
def enforce() -> Iterator[RunningServer]:
    with serving({"mode": "enforce"}) as server:
        yield server


@pytest.fixture(scope="module")
def audit() -> Iterator[RunningServer]:
    # A custom convention needs no group object, so it is written even without a cluster.
    gang = {"scheduler": "custom", "custom": {"labels": {"example.com/gang": "{group}"},
                                              "annotations": {"example.com/odd~key": "{task}"}}}  # fmt: skip
    with serving({"mode": "audit", "gang": gang}) as server:
        yield server


def answer(server: RunningServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = server.post(path, body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    document: dict[str, Any] = reply.json()
    assert document["apiVersion"] == "admission.k8s.io/v1" and document["kind"] == "AdmissionReview"
    assert document["response"]["uid"] == body["request"]["uid"]
    return document["response"]  # type: ignore[no-any-return]


def check_limits(response: dict[str, Any]) -> None:
    warnings = response.get("warnings", [])
    assert all(len(w) <= 256 for w in warnings) and sum(map(len, warnings)) <= 4096
    for key in response.get("auditAnnotations", {}):
        assert "/" not in key and len(key) <= 63 and QUALIFIED_NAME.fullmatch(key)


@pytest.mark.parametrize(("path", "raw"), ray_object_params())
def test_every_kuberay_sample_is_allowed(enforce: RunningServer, path: str, raw: dict[str, Any]) -> None:
    obj = CRDDefaults.packaged().apply(raw)
    obj.setdefault("metadata", {}).setdefault("namespace", "default")
    response = answer(enforce, "/validate", review(obj))
    assert response["allowed"] is True, response
    check_limits(response)


def test_broken_rayservice_is_denied_like_a_field_error(enforce: RunningServer) -> None:
    response = answer(enforce, "/validate", review(BROKEN))
    assert response["allowed"] is False
    status = response["status"]
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["message"].startswith('RayService.ray.io "svc" is invalid: spec.rayClusterConfig.workerGroupSpecs[0]')
    assert "Invalid value: 10" in status["message"] and "[replicas-within-bounds]" in status["message"]
    assert status["details"]["causes"][0]["field"] == "spec.rayClusterConfig.workerGroupSpecs[0].replicas"


@pytest.mark.parametrize(
    ("obj", "rule"),
    [
        (service([{"groupName": "a"}, {"groupName": "a"}]), "unique-instance-ids"),
        (service([gpu_worker(container(limits={"nvidia.com/gpu": "0.5"}), **TOLERATE)]), "gpu-whole-number"),
        (
            service(
                [
                    gpu_worker(
                        {"name": "ray", "image": "ray", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}
                    )
                ]
            ),
            "nvidia-visible-devices",
        ),
        (service([{"numOfHosts": 0}]), "pods-per-replica"),
    ],
)
def test_broken_variants_are_denied_naming_the_rule(enforce: RunningServer, obj: dict[str, Any], rule: str) -> None:
    response = answer(enforce, "/validate", review(obj))
    assert response["allowed"] is False
    assert f"[{rule}]" in response["status"]["message"]


def test_warnings_on_allowed_objects(enforce: RunningServer) -> None:
    response = answer(enforce, "/validate", review(service([gpu_worker(container(**GPU))])))
    assert response["allowed"] is True
    assert response["warnings"][0].startswith("[gpu-toleration]")
    check_limits(response)


def test_audit_mode_allows_warns_and_annotates(audit: RunningServer) -> None:
    response = answer(audit, "/validate", review(BROKEN))
    assert response["allowed"] is True
    assert response["warnings"][0].startswith("[replicas-within-bounds]")
    assert response["auditAnnotations"]["mode"] == "audit"
    assert json.loads(response["auditAnnotations"]["replicas-within-bounds"])[0]["severity"] == "deny"
    check_limits(response)


def test_fixed_mode_paths(enforce: RunningServer, audit: RunningServer) -> None:
    assert answer(enforce, "/validate/audit", review(BROKEN))["allowed"] is True
    assert answer(audit, "/validate/enforce", review(BROKEN))["allowed"] is False


def test_update_rules(enforce: RunningServer) -> None:
    edited = copy.deepcopy(BROKEN)
    edited["metadata"]["finalizers"] = []
    kept = answer(enforce, "/validate", review(edited, operation="UPDATE", old=BROKEN))
    assert kept["allowed"] is True and "already present before this update" in kept["warnings"][0]
    worse = service([{"replicas": 20, "maxReplicas": 5}])
    assert answer(enforce, "/validate", review(worse, operation="UPDATE", old=BROKEN))["allowed"] is False


@pytest.mark.parametrize(
    "body",
    [
        review(None, operation="DELETE", old=BROKEN),
        review(BROKEN, operation="UPDATE", old=BROKEN, sub_resource="status"),
        review(BROKEN, operation="UPDATE", old=BROKEN, sub_resource="scale"),
        review({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}}),
    ],
)
def test_never_denied_and_untouched(enforce: RunningServer, body: dict[str, Any]) -> None:
    assert answer(enforce, "/validate", body) == {"uid": body["request"]["uid"], "allowed": True}


def test_dry_run_gets_the_same_answer(enforce: RunningServer) -> None:
    plain = answer(enforce, "/validate", review(BROKEN, uid="same"))
    dry = answer(enforce, "/validate", review(BROKEN, uid="same", dry_run=True))
    assert plain == dry


def apply_patch(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    return patched


def test_pod_mutation_without_a_cluster_writes_no_coscheduling_label(enforce: RunningServer) -> None:
    """--no-cluster: nobody creates PodGroups, so a pod-group label would leave the pod Pending."""
    pod = ray_pod(annotations={"keep": "me"}, labels={"app": "ray"})
    response = answer(enforce, "/mutate", review(pod))
    assert response == {"uid": response["uid"], "allowed": True}


def test_pod_mutation_custom_with_escaped_keys_and_idempotence(audit: RunningServer) -> None:
    pod = ray_pod(annotations={"keep": "me"}, labels={"app": "ray"})
    response = answer(audit, "/mutate", review(pod))
    ops = json.loads(base64.b64decode(response["patch"]))
    assert {"op": "add", "path": "/metadata/annotations/example.com~1odd~0key", "value": "small-group"} in ops
    patched = apply_patch(pod, response)
    assert patched["metadata"]["labels"]["example.com/gang"] == "rayservice-sample-x7k2p"
    assert patched["metadata"]["labels"]["app"] == "ray" and patched["metadata"]["annotations"]["keep"] == "me"
    again = answer(audit, "/mutate", review(patched))
    assert "patch" not in again and again["allowed"] is True


def test_pods_not_claimed_are_untouched(enforce: RunningServer) -> None:
    body = review({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "x", "labels": {}}})
    assert answer(enforce, "/mutate", body) == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("data", [b"{", b"[1, 2]", b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}'])
def test_malformed_bodies_get_400(enforce: RunningServer, data: bytes) -> None:
    reply = enforce.post("/validate", data=data)
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("not an AdmissionReview")


def test_oversized_body_gets_413(enforce: RunningServer) -> None:
    host, port = enforce.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(enforce.ca_file))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 8388608\r\n\r\n" + b"{" * 65536
        )
        head = tls.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head


def test_health_and_metrics(enforce: RunningServer) -> None:
    assert enforce.get("/healthz").json() == {"status": "ok"}
    assert enforce.get("/readyz").json()["status"] == "ready"
    labels = {"path": "/validate", "kind": "RayService", "operation": "CREATE", "verdict": "denied", "mode": "enforce"}
    before = metric_total(enforce.get("/metrics").text, "karta_admission_requests_total", **labels)
    bad_before = metric_total(enforce.get("/metrics").text, "karta_admission_bad_requests_total", code="400")
    sent = 12  # over new connections too, so both gunicorn workers answer some
    for _ in range(sent):
        enforce.session.close()
        answer(enforce, "/validate", review(BROKEN))
    enforce.post("/validate", data=b"{")
    text = enforce.get("/metrics").text
    assert metric_total(text, "karta_admission_requests_total", **labels) == before + sent
    assert metric_total(text, "karta_admission_violations_total", rule="replicas-within-bounds", namespace="ml") >= sent
    assert metric_total(text, "karta_admission_request_duration_seconds_count", path="/validate") >= sent
    assert metric_total(text, "karta_admission_bad_requests_total", code="400") == bad_before + 1
    assert metric_total(text, "karta_admission_definitions_loaded") == 3
