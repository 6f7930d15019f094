"""The bench's reading of the server's own time per review from its /metrics."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from bench import run

METRICS = """# HELP karta_admission_request_duration_seconds Time to answer an admission review
# TYPE karta_admission_request_duration_seconds histogram
karta_admission_request_duration_seconds_bucket{le="0.0005",path="/validate"} 10.0
karta_admission_request_duration_seconds_sum{path="/validate"} 0.0125
karta_admission_request_duration_seconds_count{path="/validate"} 50.0
karta_admission_request_duration_seconds_sum{path="/validate/audit"} 9.0
karta_admission_request_duration_seconds_count{path="/validate/audit"} 3.0
karta_admission_request_duration_seconds_sum{path="/mutate"} 0.002
karta_admission_request_duration_seconds_count{path="/mutate"} 40.0
"""


class _Answer:
    text = METRICS


def test_review_seconds_reads_the_path_s_own_sum_and_count(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def get(url: str, **_: Any) -> _Answer:
        asked.append(url)
        return _Answer()

    monkeypatch.setattr(requests, "get", get)
    assert run.review_seconds("https://127.0.0.1:8443/validate") == (0.0125, 50.0)
    assert run.review_seconds("https://127.0.0.1:8443/mutate") == (0.002, 40.0)
    assert asked == ["https://127.0.0.1:8443/metrics"] * 2


def test_timed_server_run_notes_the_mean_time_per_review_during_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([(1.0, 100.0), (1.3, 1100.0)])
    monkeypatch.setattr(run, "review_seconds", lambda url: next(readings))
    measurement = run.Measurement("wrk", 1000.0, 1.0, 2.0, 3.0, 0)
    seen: list[float] = []
    assert run.timed_server_run("https://x/validate", lambda: measurement, seen) is measurement
    assert seen == [pytest.approx(300.0)]  # 0.3 s over 1,000 reviews
