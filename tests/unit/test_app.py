"""The Flask edge in-process: failure posture, body limits, readiness. (Over real TLS: tests/e2e.)"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from tests.builders import client, service
from tests.reviews import ray_pod, review
from webhook.admission import Admission, Review
from webhook.config import parse_config
from webhook.evaluation import Mode
from webhook.karta.registry import DefinitionSet
from webhook.server.app import MAX_BODY_BYTES, ServerState, create_app


class Exploding(Admission):
    def validate(self, review: Review, mode: Mode | None = None) -> Any:
        raise RuntimeError("boom")

    def mutate(self, review: Review) -> Any:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("config", "path", "allowed"),
    [
        ({}, "/validate", False),  # enforce + failurePolicy Fail: fail closed
        ({"failurePolicy": "Ignore"}, "/validate", True),
        ({"mode": "audit"}, "/validate", True),
        ({"mode": "audit"}, "/validate/enforce", False),
        ({}, "/validate/audit", True),
        ({}, "/mutate", True),  # mutation always fails open
    ],
)
def test_internal_errors_follow_the_failure_posture(
    config: dict[str, Any], path: str, allowed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    body = review(service([{}]), uid="uid-7")
    answer = client(config, Exploding).post(path, data=orjson.dumps(body), content_type="application/json")
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["uid"] == "uid-7" and response["allowed"] is allowed
    if not allowed:
        assert response["status"]["code"] == 500 and "internal error (RuntimeError)" in response["status"]["message"]


def test_oversized_body_is_413() -> None:
    answer = client().post("/validate", data=b"x" * (MAX_BODY_BYTES + 1), content_type="application/json")
    assert answer.status_code == 413
    assert "larger than" in answer.get_json()["error"]


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"apiVersion": "v1", "kind": "Pod"}', b"\xff\xfe", b"[" * 100000])
def test_malformed_bodies_are_400(body: bytes) -> None:
    answer = client().post("/validate", data=body, content_type="application/json")
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith("not an AdmissionReview")


def test_readiness_reports_the_first_failing_check() -> None:
    checks = [lambda: (True, "definitions loaded"), lambda: (False, "waiting for the first list of rayclusters")]
    answer = client(readiness=checks).get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json() == {"status": "not ready", "reason": "waiting for the first list of rayclusters"}
    assert client().get("/readyz").status_code == 200
    assert client().get("/healthz").get_json() == {"status": "ok"}


def test_readiness_details_do_not_make_the_server_unready() -> None:
    """E.g. the gang scheduler's CRD is not installed: the webhook serves, /readyz says why no keys."""
    config = parse_config({}, "t")
    missing = "gang: the cluster does not serve scheduling.x-k8s.io/v1alpha1 PodGroup"
    admission = Admission.for_config(config, DefinitionSet.builtin())
    state = ServerState(config, admission, [lambda: (True, "ok")], [lambda: [], lambda: [missing]])
    answer = create_app(state).test_client().get("/readyz")
    assert answer.status_code == 200
    assert answer.get_json() == {
        "status": "ready", "reason": "ready",
        "details": ["gang: the cluster does not serve scheduling.x-k8s.io/v1alpha1 PodGroup"],
    }  # fmt: skip


def test_pods_without_gang_keys_are_counted_by_reason() -> None:
    before = REGISTRY.get_sample_value("karta_admission_gang_pods_without_keys_total", {"reason": "no-cluster"}) or 0
    answer = client().post("/mutate", data=orjson.dumps(review(ray_pod())), content_type="application/json")
    assert answer.get_json()["response"]["allowed"] is True
    after = REGISTRY.get_sample_value("karta_admission_gang_pods_without_keys_total", {"reason": "no-cluster"})
    assert after == before + 1


def test_wrong_method_and_unknown_path() -> None:
    assert client().get("/validate").status_code == 405
    assert client().post("/nope").status_code == 404
