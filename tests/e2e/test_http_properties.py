"""Property test over HTTP: generated reviews, valid, broken and corrupted, always get a well-formed answer."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.server import RunningServer, serving
from tests.strategies import corrupted_reviews, reviews

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("http_properties")]
PATHS = st.sampled_from(["/validate", "/validate/audit", "/validate/enforce", "/mutate"])
HTTP = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serving({"gang": {"scheduler": "yunikorn"}}) as running:
        yield running


def assert_answer(reply: requests.Response, body: Any) -> None:
    """200 with an AdmissionReview for a well-formed review, 400 with an error otherwise, never 5xx."""
    assert reply.status_code in {200, 400}, (reply.status_code, reply.text[:500])
    document = reply.json()
    if reply.status_code == 400:
        assert isinstance(document["error"], str) and document["error"]
        return
    response = document["response"]
    assert response["uid"] == body["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["code"] >= 400
    warnings = response.get("warnings", [])
    assert all(len(w) <= 256 for w in warnings) and sum(map(len, warnings)) <= 4096
    if "patch" in response:
        assert isinstance(json.loads(base64.b64decode(response["patch"])), list)


@HTTP
@given(body=reviews(), path=PATHS)
def test_generated_reviews(server: RunningServer, body: dict[str, Any], path: str) -> None:
    reply = server.post(path, body)
    assert reply.status_code == 200, reply.text[:500]
    assert_answer(reply, body)


@HTTP
@given(body=corrupted_reviews(), path=PATHS)
def test_corrupted_reviews(server: RunningServer, body: Any, path: str) -> None:
    assert_answer(server.post(path, data=json.dumps(body).encode()), body)
