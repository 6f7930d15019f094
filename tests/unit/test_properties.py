"""Property tests of the admission core: any review gets a well-formed answer, never an exception."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reviews import review
from tests.strategies import corrupted_reviews, pods, ray_objects, reviews
from webhook.admission import Admission, ReviewError, parse_review
from webhook.config import parse_config
from webhook.evaluation import Mode
from webhook.karta.registry import DefinitionSet

ADMISSION = Admission.for_config(parse_config({}, "test"), DefinitionSet.builtin())
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_well_formed(answer: dict[str, Any], uid: str) -> None:
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == uid
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["code"] >= 400 and response["status"]["message"]
    for warning in response.get("warnings", []):
        assert isinstance(warning, str) and len(warning) <= 256
    assert sum(len(w) for w in response.get("warnings", [])) <= 4096
    for key, value in response.get("auditAnnotations", {}).items():
        assert "/" not in key and len(key) <= 63 and isinstance(value, str)
    if "patch" in response:
        assert response["allowed"] is True and response["patchType"] == "JSONPatch"
        json.loads(base64.b64decode(response["patch"]))
    json.dumps(answer)  # serialisable


@FAST
@given(reviews(), st.sampled_from(list(Mode)))
def test_validation_answers_every_review(body: dict[str, Any], mode: Mode) -> None:
    parsed = parse_review(body)
    assert_well_formed(ADMISSION.validate(parsed, mode).response, body["request"]["uid"])


@FAST
@given(pods(), st.sampled_from(["coscheduling", "volcano", "kueue", "kai", "yunikorn"]))
def test_mutation_patches_apply_and_are_idempotent(pod: dict[str, Any], scheduler: str) -> None:
    admission = Admission.for_config(parse_config({"gang": {"scheduler": scheduler}}, "t"), DefinitionSet.builtin())
    body = review(pod)
    answer = admission.mutate(parse_review(body)).response
    assert_well_formed(answer, body["request"]["uid"])
    if "patch" in answer["response"]:
        patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["response"]["patch"])))
        # Nothing the pod had was changed or removed, except this product's own annotations.
        for section in ("labels", "annotations"):
            for key, value in (pod["metadata"].get(section) or {}).items():
                if not key.startswith("karta-admission.io/"):
                    assert patched["metadata"][section][key] == value
        again = admission.mutate(parse_review(review(patched))).response["response"]
        assert "patch" not in again


@FAST
@given(corrupted_reviews())
def test_corrupted_reviews_are_refused_or_answered(body: Any) -> None:
    try:
        parsed = parse_review(body)
    except ReviewError:
        return
    assert_well_formed(ADMISSION.validate(parsed).response, parsed.uid)
    assert_well_formed(ADMISSION.mutate(parsed).response, parsed.uid)


@FAST
@given(ray_objects())
def test_verdicts_are_deterministic(obj: dict[str, Any]) -> None:
    first = ADMISSION.evaluator.verdict(obj)
    second = ADMISSION.evaluator.verdict(obj)
    assert first == second
