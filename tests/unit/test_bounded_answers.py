"""Issue 13: no single review may grow the answer, the log line or the metrics without bound.

The hostile inputs are generated here, small enough to run in a second or two, large enough that the
previous code answered with megabytes (checked against the previous commit: each test here failed).
"""

from __future__ import annotations

import io
import logging
import random
import string
from typing import Any

import orjson
import pytest

from tests.builders import TOLERATE, client, container, service
from tests.reviews import review
from webhook.observability import logs, metrics

# A few hundred groups of GPU containers with fractional, unequal, misplaced GPUs: thousands of causes.
GROUPS, CONTAINERS = 200, 10


def many_violations() -> dict[str, Any]:
    gpu = {"limits": {"nvidia.com/gpu": "0.5"}, "requests": {"nvidia.com/gpu": "0.25"}}
    containers = [container(f"c{i}", **gpu) for i in range(CONTAINERS)]
    groups = [{"groupName": f"g{i}", "template": {"spec": {"containers": containers, **TOLERATE}}}
              for i in range(GROUPS)]  # fmt: skip
    return service(groups)


def test_a_denial_with_thousands_of_causes_stays_small() -> None:
    body = orjson.dumps(review(many_violations()))
    answer = client().post("/validate", data=body, content_type="application/json")
    assert answer.status_code == 200
    text = answer.get_data()
    status = orjson.loads(text)["response"]["status"]
    # Before: one cause per violation (7,800 here) and all of them in the message too: 4.4 MB.
    assert len(text) < 64 * 1024, f"{len(text)} bytes for a {len(body)}-byte review"
    from webhook.admission.answers import MAX_CAUSES, MESSAGE_MAX

    causes = status["details"]["causes"]
    assert len(causes) == MAX_CAUSES + 1
    left_out = causes[-1]
    assert left_out["reason"] == "FieldValueTooMany"
    total = int(left_out["message"].split()[0]) + MAX_CAUSES
    assert total > 5000  # the count of what was left out is exact
    assert len(status["message"]) <= MESSAGE_MAX
    listed = status["message"].count("[gpu-")
    assert status["message"].endswith(f", and {total - listed} more]")


def test_a_hostile_value_is_clipped_in_the_answer() -> None:
    hostile = "1" * 60_000
    c = container(limits={"nvidia.com/gpu": hostile}, requests={"nvidia.com/gpu": hostile})
    answer = client().post("/validate", data=orjson.dumps(review(service([{"template": {"spec": {
        "containers": [c], **TOLERATE}}}]))), content_type="application/json")  # fmt: skip
    text = answer.get_data()
    assert orjson.loads(text)["response"]["allowed"] is False
    assert len(text) < 16 * 1024


def test_the_log_line_of_a_review_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logs.get()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        obj = many_violations()
        obj["metadata"]["name"] = "n" * 100_000
        body = review(obj)
        client().post("/validate", data=orjson.dumps(body), content_type="application/json")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    (line,) = [entry for entry in stream.getvalue().splitlines() if '"review denied"' in entry]
    # Before: 7,800 violations and the 100,000-character name in one line (about 1 MB).
    assert len(line) < 8 * 1024
    entry = orjson.loads(line)
    assert entry["violations_total"] > 5000
    assert len(entry["violations"]) == 20


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "-./") for _ in range(size))


def series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_metric_labels_come_from_closed_sets() -> None:
    """5,000 random reviews took /metrics from 3 KB to 690 KB before; now the series are bounded.

    About 130 of these reviews are denials in distinct random namespaces: more than the 100 a process
    labels by name."""
    rng = random.Random(13)
    app = client()
    before = metrics.render()[0].decode()
    for index in range(400):
        violating = service([{"replicas": 10, "maxReplicas": 5}])
        obj = violating if index % 3 else {"apiVersion": "x/v1", "kind": random_text(rng, 30), "metadata": {}}
        operation = "CREATE" if index % 2 else random_text(rng, 8)
        body = review(obj, namespace=random_text(rng, 12).lower().strip("-./"), operation=operation)
        body["request"]["kind"]["kind"] = obj["kind"] if index % 2 else random_text(rng, 5000)
        app.post(rng.choice(["/validate", "/validate/audit", "/mutate"]), data=orjson.dumps(body),
                 content_type="application/json")  # fmt: skip
    text = metrics.render()[0].decode()
    requests = series(text, "karta_admission_requests_total")
    kinds = {line.split('kind="')[1].split('"')[0] for line in requests}
    operations = {line.split('operation="')[1].split('"')[0] for line in requests}
    assert kinds <= {"RayService", "RayCluster", "RayJob", "Pod", "other"}
    assert operations <= {"CREATE", "UPDATE", "DELETE", "CONNECT", "other"}
    violations = series(text, "karta_admission_violations_total")
    namespaces = {line.split('namespace="')[1].split('"')[0] for line in violations}
    assert len(namespaces) <= metrics.MAX_NAMESPACES + 1 and "other" in namespaces
    assert max(len(line) for line in text.splitlines()) < 400
    growth = len(text) - len(before)
    assert growth < 40 * 1024, f"/metrics grew by {growth} bytes"


def test_namespaces_are_bounded() -> None:
    label = metrics.BoundedLabel(3, metrics._NAMESPACE)  # before: no such bound
    assert [label(n) for n in ["a", "b", "c", "d", "a", "Not_Valid", "x" * 64]] == [
        "a", "b", "c", "other", "a", "other", "other"
    ]  # fmt: skip
