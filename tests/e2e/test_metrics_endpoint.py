"""Issue 13: /metrics when the server starts as `make run` does, without PROMETHEUS_MULTIPROC_DIR.

Before (checked against the previous commit): HTTP 200 with 0 bytes. prometheus_client chose its
in-process mode when it was imported, before `serve` set the variable; /metrics then read the empty
sample directory.
"""

from __future__ import annotations

import glob
import tempfile
from pathlib import Path

import pytest

from tests.builders import service
from tests.e2e.server import metric_total, serving
from tests.reviews import review

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("metrics-endpoint")]


def test_metrics_are_summed_over_workers_without_a_configured_directory() -> None:
    body = review(service([{"replicas": 10, "maxReplicas": 5}]))
    pattern = str(Path(tempfile.gettempdir()) / "karta-admission-metrics-*")
    before = set(glob.glob(pattern))
    with serving({}, metrics_directory=False) as server:
        made = set(glob.glob(pattern)) - before
        assert len(made) == 1, made  # a sample directory of the server's own
        sent = 12
        for _ in range(sent):
            server.session.close()  # new connections, so both workers answer some
            assert server.post("/validate", body).json()["response"]["allowed"] is False
        reply = server.get("/metrics")
        assert reply.status_code == 200
        text = reply.text
        assert len(text) > 1000, f"{len(reply.content)} bytes"
        assert metric_total(text, "karta_admission_requests_total", path="/validate", verdict="denied") == sent
    # It goes when the server stops (removed by the master only, not by a worker that exits).
    assert not any(Path(directory).exists() for directory in made)
