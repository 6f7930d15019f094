"""Prometheus metrics, correct across gunicorn worker processes.

With PROMETHEUS_MULTIPROC_DIR set (serve sets it before the workers start), every worker writes its
samples to files there and /metrics sums them; without it (tests, single process) the default
registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "karta_admission_requests_total",
    "Admission reviews answered, by path, kind, operation, verdict and mode.",
    ["path", "kind", "operation", "verdict", "mode"],
)
LATENCY = Histogram(
    "karta_admission_request_duration_seconds",
    "Time to answer an admission review, from body read to response built.",
    ["path"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
VIOLATIONS = Counter(
    "karta_admission_violations_total",
    "Policy violations found at admission, by rule, namespace, severity and mode.",
    ["rule", "namespace", "severity", "mode"],
)
BAD_REQUESTS = Counter(
    "karta_admission_bad_requests_total",
    "Requests refused before admission: malformed (400) or too large (413).",
    ["path", "code"],
)
INTERNAL_ERRORS = Counter(
    "karta_admission_internal_errors_total",
    "Reviews the server failed on internally, answered per the failure policy.",
    ["path"],
)
GANG_SIZE_UNKNOWN = Counter(
    "karta_admission_gang_size_unknown_total",
    "Grouped pods whose gang size was not known at admission (owner not in the cache yet).",
)
DEFINITION_LOAD_ERRORS = Counter(
    "karta_admission_definition_load_errors_total",
    "Karta definitions refused at load, by source (file or cluster).",
    ["source"],
)
DEFINITIONS_LOADED = Gauge(
    "karta_admission_definitions_loaded",
    "Karta definitions in force (one per root kind).",
    multiprocess_mode="max",
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn child_exit hook: drop the live-gauge files of a dead worker."""
    if os.environ.get(MULTIPROC_ENV):
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
