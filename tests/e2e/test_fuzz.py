"""Fuzzing the HTTP endpoints: generated, corrupted and byte-mangled reviews; no 5xx, no hang.

`make fuzz` runs 100,000 inputs (FUZZ_EXAMPLES=100000); CI runs a few hundred.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.server import RunningServer, serving
from tests.strategies import corrupted_reviews, reviews

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fuzz")]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
PATHS = st.sampled_from(["/validate", "/validate/audit", "/mutate"])


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid review's bytes with a few bytes flipped, cut or inserted."""
    data = bytearray(json.dumps(draw(reviews())).encode())
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serving({}) as running:
        yield running


def well_formed(reply: requests.Response) -> None:
    assert reply.status_code in {200, 400}, (reply.status_code, reply.text[:300])
    document: Any = reply.json()
    assert ("response" in document) if reply.status_code == 200 else ("error" in document)


@FUZZ
@given(data=mangled() | corrupted_reviews().map(lambda b: json.dumps(b).encode()), path=PATHS)
def test_fuzz_http_endpoints(server: RunningServer, data: bytes, path: str) -> None:
    well_formed(server.post(path, data=data, timeout=10))


def test_server_still_healthy_after_fuzzing(server: RunningServer) -> None:
    """Runs after the fuzz test in this module (same server): alive, healthy, no unhandled error."""
    assert server.get("/healthz").status_code == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.log()
