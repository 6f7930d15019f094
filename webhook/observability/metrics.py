"""Prometheus metrics, correct across gunicorn worker processes, with label values from closed sets.

prometheus_client chooses between in-process values and per-process sample files once, when it is
first imported, from PROMETHEUS_MULTIPROC_DIR. `serve` therefore prepares that directory before
anything imports this module (webhook.observability.multiprocess, called first thing by the CLI);
every worker then writes its samples there and /metrics sums them. Without it (tests, `check`,
`audit`) the default registry is used. render() follows the mode the client actually chose, never
the environment at the time of the request: a mismatch used to answer /metrics with 0 bytes.

Label values never come unchecked from a request: kinds, operations and paths are closed sets
(anything else is `other`), and namespaces are bounded (MAX_NAMESPACES per process, then `other`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Collection
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from webhook.observability.multiprocess import MULTIPROC_ENV

# The mode prometheus_client chose at its import, which every metric below lives in.
MULTIPROCESS = values.ValueClass is not values.MutexValue
if MULTIPROCESS and os.environ.get(MULTIPROC_ENV):
    # The client opens its sample files on import; an emptyDir mount holds no subdirectory yet.
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

OTHER = "other"
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
# Distinct namespaces one process labels by name; later ones count under `other`.
MAX_NAMESPACES = 100
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def closed(value: str, allowed: Collection[str]) -> str:
    """The value when it is one of the allowed ones, else `other`."""
    return value if value in allowed else OTHER


class BoundedLabel:
    """The first `limit` distinct valid values keep their own label value; the rest are `other`.

    Per process: each gunicorn worker labels the namespaces it saw first, so the series are bounded by
    workers x limit, whatever the requests carry.
    """

    def __init__(self, limit: int, valid: re.Pattern[str]) -> None:
        self.limit = limit
        self._valid = valid
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not self._valid.fullmatch(value):
            return OTHER
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


namespace_label = BoundedLabel(MAX_NAMESPACES, _NAMESPACE)

MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)
# Children by metric and label values, so that the hot path skips labels()' checks and lock. Bounded
# like the series themselves: every label value comes from a closed or bounded set (see above).
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: MetricT, *values: str) -> MetricT:
    """metric.labels(*values), remembered."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


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
GANG_PODS_WITHOUT_KEYS = Counter(
    "karta_admission_gang_pods_without_keys_total",
    "Grouped Ray pods admitted without their gang keys (or with some left out), by reason: crd-missing, "
    "foreign-group-object, pod-has-keys, other-scheduler, no-cluster, absent, uid, autoscaling, ... "
    "(docs/gang.md lists them).",
    ["reason"],
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
    if MULTIPROCESS:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn child_exit hook: drop the live-gauge files of a dead worker."""
    if MULTIPROCESS:
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# --- Cluster integration (webhook/cluster): watches, owner cache, periodic audit ---------------

CLUSTER_SYNCED = Gauge(
    "karta_admission_cluster_synced",
    "1 once the first list of a watched resource is done (a resource the cluster does not serve counts as synced).",
    ["resource"],
    multiprocess_mode="livemin",
)
CLUSTER_RELISTS = Counter(
    "karta_admission_cluster_relists_total",
    "Full lists of a watched resource after the first one, by resource and reason "
    "(gone: watch expired with 410, error: after a failed list or watch, definitions: the Karta "
    "definitions changed, requested, missing: retry of a resource the cluster did not serve).",
    ["resource", "reason"],
)
CLUSTER_WATCH_ERRORS = Counter(
    "karta_admission_cluster_watch_errors_total",
    "Failed list or watch requests and broken watch streams, by resource and reason.",
    ["resource", "reason"],
)
OWNER_CACHE_ENTRIES = Gauge(
    "karta_admission_owner_cache_entries",
    "Owner objects (e.g. RayClusters) whose gang sizes are cached, per worker process.",
    multiprocess_mode="livemax",
)
OWNER_CACHE_EVICTIONS = Counter(
    "karta_admission_owner_cache_evictions_total",
    "Owner cache entries dropped because the cache reached its bound.",
)
OWNER_CACHE_MISSES = Counter(
    "karta_admission_owner_cache_misses_total",
    "Gang size lookups the owner cache could not answer, by reason (absent, uid, stale, unresolved, member).",
    ["reason"],
)
AUDIT_RUNS = Counter(
    "karta_admission_audit_runs_total",
    "Periodic audit runs, by outcome (ok, denied, error).",
    ["outcome"],
)
AUDIT_OBJECTS = Gauge(
    "karta_admission_audit_objects",
    "Objects of the last periodic audit run, by result (denied, warned, allowed, skipped).",
    ["result"],
    multiprocess_mode="livemax",
)
WEBHOOKS_ARMED = Counter(
    "karta_admission_webhooks_armed_total",
    "Times the agent set the enforce webhooks from Ignore to Fail (at install, and after each helm upgrade).",
)
LEADER = Gauge(
    "karta_admission_leader",
    "1 while this agent holds the Lease: it runs the group-object controller and the periodic audit.",
    multiprocess_mode="livemax",
)


# --- Gang group objects (webhook/cluster/podgroups.py) ------------------------------------------

GANG_CRD_SERVED = Gauge(
    "karta_admission_gang_crd_served",
    "1 when the configured gang scheduler's group object CRD is served, 0 when it is not (no gang keys "
    "are written then), by resource.",
    ["resource"],
    multiprocess_mode="livemin",
)
GROUP_OBJECT_WRITES = Counter(
    "karta_admission_group_object_writes_total",
    "Group objects (PodGroups) the controller wrote, by action (create, update) and result (ok, conflict, error).",
    ["action", "result"],
)
GROUP_OBJECTS_DEFERRED = Counter(
    "karta_admission_group_objects_deferred_total",
    "Times the controller left a group object alone because another owner created it (foreign).",
)
GROUP_OBJECTS_MANAGED = Gauge(
    "karta_admission_group_objects_managed",
    "Group objects the controller wants (one per Ray cluster), in the controller's process.",
    multiprocess_mode="livemax",
)
