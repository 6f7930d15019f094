"""Leader election on a coordination.k8s.io/v1 Lease, so that of several replicas one does a job.

The same protocol as client-go's: a candidate takes the lease when it is free or when its holder
has not renewed it for leaseDurationSeconds as observed on the candidate's own clock (no clock
comparison between machines); the holder renews every retry period and steps down when it could
not renew within the renew deadline, which is shorter than the lease duration, so two leaders never
overlap. Writes carry the resourceVersion read, so a concurrent writer gets 409 and loses. On stop
the leader releases the lease so another replica takes over at once. The kubernetes client's own
leaderelection package cannot be stopped and uses the global client, hence this small loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook.observability import logs, metrics

from .client import CONNECTION_ERRORS, api_error, connection_error

log = logs.get("cluster.leader")

LEASE_GROUP, LEASE_VERSION, LEASE_PLURAL = "coordination.k8s.io", "v1", "leases"
REQUEST_TIMEOUT = (5, 10)


@dataclass(frozen=True)
class LeaseTimings:
    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")


def _micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        timings: LeaseTimings | None = None,
    ) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._stopping = threading.Event()
        self._leading = threading.Event()
        self._thread: threading.Thread | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"karta-admission-lease-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        timings = self.timings
        while not self._stopping.is_set():
            if not self._leading.is_set():
                if self._try_acquire_or_renew():
                    self._set_leading(True)
                else:
                    self._stopping.wait(timings.retry_period_seconds)
                continue
            deadline = time.monotonic() + timings.renew_deadline_seconds
            renewed = False
            while not self._stopping.is_set() and time.monotonic() < deadline:
                if self._try_acquire_or_renew():
                    renewed = True
                    break
                self._stopping.wait(timings.retry_period_seconds)
            if self._stopping.is_set():
                break
            if renewed:
                self._stopping.wait(timings.retry_period_seconds)
            else:
                logs.event(log, logging.WARNING, "could not renew the lease in time; stepping down",
                           lease=self.name, identity=self.identity)  # fmt: skip
                self._set_leading(False)
        if self._leading.is_set():
            self._set_leading(False)
            self._release()

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self._leading.set()
            metrics.LEADER.set(1)
            logs.event(log, logging.INFO, "acquired the lease", lease=f"{self.namespace}/{self.name}",
                       identity=self.identity)  # fmt: skip
            callback = self._on_started
        else:
            self._leading.clear()
            metrics.LEADER.set(0)
            logs.event(log, logging.INFO, "no longer the leader", lease=f"{self.namespace}/{self.name}",
                       identity=self.identity)  # fmt: skip
            callback = self._on_stopped
        try:
            callback()
        except Exception:
            log.exception("leader election callback failed")

    # Typed access to the Lease (the generic client returns `object`).
    def _get(self) -> dict[str, Any]:
        lease = self.api.get_namespaced_custom_object(
            LEASE_GROUP,
            LEASE_VERSION,
            self.namespace,
            LEASE_PLURAL,
            self.name,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return cast(dict[str, Any], lease)

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        lease = self.api.create_namespaced_custom_object(
            LEASE_GROUP, LEASE_VERSION, self.namespace, LEASE_PLURAL, body, _request_timeout=REQUEST_TIMEOUT
        )
        return cast(dict[str, Any], lease)

    def _replace(self, body: dict[str, Any]) -> dict[str, Any]:
        lease = self.api.replace_namespaced_custom_object(
            LEASE_GROUP,
            LEASE_VERSION,
            self.namespace,
            LEASE_PLURAL,
            self.name,
            body,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return cast(dict[str, Any], lease)

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            (lease.get("metadata") or {}).get("resourceVersion"),
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()

    def _try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        duration = self.timings.lease_duration_seconds
        try:
            try:
                lease = self._get()
            except ApiException as exc:
                if exc.status != 404:
                    raise
                body = {
                    "apiVersion": f"{LEASE_GROUP}/{LEASE_VERSION}",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {
                        "holderIdentity": self.identity, "leaseDurationSeconds": duration,
                        "acquireTime": _micro_time(now), "renewTime": _micro_time(now), "leaseTransitions": 0,
                    },
                }  # fmt: skip
                try:
                    created = self._create(body)
                except ApiException as create_exc:
                    if create_exc.status == 409:
                        return False  # another candidate created it first
                    raise
                self._observe(created)
                return True
            self._observe(lease)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            held_for = int(spec.get("leaseDurationSeconds") or duration)
            if holder and holder != self.identity and time.monotonic() - self._observed_at < held_for:
                return False
            ours = holder == self.identity
            body = {
                "apiVersion": f"{LEASE_GROUP}/{LEASE_VERSION}",
                "kind": "Lease",
                "metadata": {
                    "name": self.name, "namespace": self.namespace,
                    "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion"),
                },
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": (spec.get("acquireTime") if ours else None) or _micro_time(now),
                    "renewTime": _micro_time(now),
                    "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
                },
            }  # fmt: skip
            try:
                updated = self._replace(body)
            except ApiException as exc:
                if exc.status == 409:
                    return False  # someone else wrote it since we read it
                raise
            self._observe(updated)
            return True
        except ApiException as exc:
            logs.event(log, logging.WARNING, f"lease {self.namespace}/{self.name}: {api_error(exc)}")
            return False
        except CONNECTION_ERRORS as exc:
            logs.event(
                log,
                logging.WARNING,
                f"lease {self.namespace}/{self.name}: cannot reach the API server: {connection_error(exc)}",
            )
            return False

    def _release(self) -> None:
        """Hand the lease back so that another candidate takes it without waiting for it to expire."""
        try:
            lease = self._get()
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time(datetime.now(UTC)))
            lease["spec"] = spec
            self._replace(lease)
        except (ApiException, *CONNECTION_ERRORS) as exc:
            logs.event(log, logging.WARNING, f"could not release lease {self.namespace}/{self.name}: {exc}")
