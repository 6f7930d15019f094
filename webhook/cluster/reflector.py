"""A list-then-watch loop (Reflector) that keeps a consumer in step with one resource.

The kubernetes client's own informer keeps whole objects and expects typed lists; the consumers here
keep only what they need, so the loop hands them raw dicts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from webhook.karta.model import GVK
from webhook.observability import logs, metrics

from .client import (
    CONNECTION_ERRORS,
    STREAM_ERRORS,
    Resource,
    api_error,
    connection_error,
    discover,
    iter_pages,
    resource_label,
)

log = logs.get("cluster")


def _items(first: list[dict[str, Any]], rest: Iterator[tuple[list[dict[str, Any]], str]]) -> Iterator[dict[str, Any]]:
    yield from first
    try:
        for page, _ in rest:
            yield from page
    except ApiException as exc:
        if exc.status == 410:  # the continue token expired: list again from the start
            raise _Restart("expired") from exc
        raise


class WatchConsumer(Protocol):
    """What a Reflector keeps in step: a full state after each list, then one event at a time.

    replace() gets the list as it arrives, page by page, so that a consumer keeping only a digest of
    each object never holds the whole list; an error while iterating means the list failed and the
    consumer should keep its previous state.
    """

    def replace(self, items: Iterator[dict[str, Any]]) -> None: ...

    def apply(self, event_type: str, obj: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class WatchSettings:
    page_size: int = 500
    # Server-side watch timeout; the watch is then renewed from the last resourceVersion (no relist).
    watch_timeout_seconds: int = 300
    # How often to look again for a resource the cluster does not serve (CRD not installed).
    missing_retry_seconds: float = 300.0
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0


class _Restart(Exception):
    """Leave the watch and list again, for the given reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Reflector:
    """List a resource (paginated), hand the state to a consumer, then watch from the list's
    resourceVersion. 410 Gone relists at once; failed requests and broken streams back off and relist;
    a resource the cluster does not serve counts as synced and empty and is looked for again rarely."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        kind: GVK,
        consumer: WatchConsumer,
        settings: WatchSettings | None = None,
    ) -> None:
        self.api_client = api_client
        self.kind = kind
        self.consumer = consumer
        self.settings = settings or WatchSettings()
        self.label = resource_label(kind)
        self._resource: Resource | None = None
        self._served: bool | None = None  # None until the first discovery
        self._missing_logged = False
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._relist_reason: str | None = None
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._last_error = ""
        self._delay = self.settings.backoff_initial_seconds

    # --- control ---

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"karta-admission-watch-{self.label}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    def request_relist(self, reason: str = "requested") -> None:
        """List again soon (e.g. the definitions that interpret the objects changed)."""
        with self._lock:
            self._relist_reason = reason
        self._wake.set()
        self._interrupt()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def served(self) -> bool | None:
        """Whether the API server serves the resource (its CRD is installed); None before the first list."""
        return self._served

    @property
    def resource(self) -> Resource | None:
        """The served resource as discovered (its plural), for writes alongside the watch."""
        return self._resource

    def status(self) -> tuple[bool, str]:
        if self._synced.is_set():
            return True, f"{self.label} synced"
        detail = f"; last error: {self._last_error}" if self._last_error else ""
        return False, f"{self.label}: waiting for the first list{detail}"

    # --- the loop ---

    def _interrupt(self) -> None:
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(AttributeError, ValueError, RuntimeError, OSError):
                response.shutdown()  # unblocks the read in the watch thread

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _backoff(self) -> None:
        delay = self._delay * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not security)
        self._delay = min(self._delay * 2, self.settings.backoff_max_seconds)
        self._sleep(delay)

    def _take_relist_reason(self) -> str | None:
        with self._lock:
            reason, self._relist_reason = self._relist_reason, None
        return reason

    def _error(self, reason: str, message: str, level: int = logging.WARNING) -> None:
        self._last_error = message
        metrics.CLUSTER_WATCH_ERRORS.labels(self.label, reason).inc()
        logs.event(log, level, f"{self.label}: {message}", resource=self.label, reason=reason)

    def _run(self) -> None:
        reason = "initial"
        while not self._stopping.is_set():
            self._take_relist_reason()
            try:
                version = self._list(reason)
                if version is None:
                    self._sleep(self.settings.missing_retry_seconds)
                    reason = self._take_relist_reason() or "missing"
                    continue
                self._watch(version)
                reason = self._take_relist_reason() or "requested"
            except _Restart as restart:
                reason = restart.reason
            except ApiException as exc:
                self._error("list" if exc.status is None else f"status-{exc.status}", f"list failed: {api_error(exc)}")
                self._backoff()
                reason = "error"
            except CONNECTION_ERRORS as exc:
                if self._stopping.is_set():
                    break
                self._error("connection", f"cannot reach the API server: {connection_error(exc)}")
                self._backoff()
                reason = "error"
            except Exception as exc:  # a consumer bug must not end the watch for good
                self._error("internal", f"internal error: {type(exc).__name__}: {exc}", logging.ERROR)
                log.exception("%s: internal error in the watch loop", self.label)
                self._backoff()
                reason = "error"

    def _list(self, reason: str) -> str | None:
        """List and hand over the state; the list's resourceVersion, or None when not served."""
        if reason != "initial":
            metrics.CLUSTER_RELISTS.labels(self.label, reason).inc()
        timeout = (self.settings.connect_timeout_seconds, self.settings.read_timeout_seconds)
        if self._resource is None:
            self._resource = discover(self.api_client, self.kind, timeout)
        pages: Iterator[tuple[list[dict[str, Any]], str]] = iter(())
        first: list[dict[str, Any]] = []
        version = ""
        if self._resource is not None:
            pages = iter_pages(self.api_client, self._resource, page_size=self.settings.page_size, timeout=timeout)
            try:
                first, version = next(pages)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._resource = None  # the CRD went away between discovery and list
        self._served = self._resource is not None
        if self._resource is None:
            if not self._missing_logged:
                logs.event(
                    log, logging.WARNING,
                    f"{self.kind} is not served by the API server (CRD not installed?); looking again every "
                    f"{self.settings.missing_retry_seconds:g} s",
                    resource=self.label,
                )  # fmt: skip
                self._missing_logged = True
            self.consumer.replace(iter(()))
            self._mark_synced()
            return None
        if self._missing_logged:
            logs.event(log, logging.INFO, f"{self.kind} is now served as {self._resource}", resource=self.label)
            self._missing_logged = False
        self.consumer.replace(_items(first, pages))
        self._mark_synced()
        self._last_error = ""
        return version

    def _mark_synced(self) -> None:
        if not self._synced.is_set():
            self._synced.set()
            metrics.CLUSTER_SYNCED.labels(self.label).set(1)

    def _watch(self, version: str) -> None:
        """Watch until a relist is due (returns or raises _Restart); renew the watch when it times out."""
        assert self._resource is not None
        resource = self._resource
        api = k8s.CustomObjectsApi(self.api_client)
        while not self._stopping.is_set():
            if self._relist_reason is not None:
                return
            server_timeout = max(1, int(self.settings.watch_timeout_seconds * (0.5 + random.random() / 2)))  # noqa: S311
            started = time.monotonic()
            response = self._open_watch(api, resource, version, server_timeout)
            if response is None:
                return
            with self._lock:
                self._response = response
            try:
                if self._stopping.is_set() or self._relist_reason is not None:
                    return
                version, events = self._read_events(response, resource, version)
            except STREAM_ERRORS as exc:
                if self._stopping.is_set() or self._relist_reason is not None:
                    return
                self._error("connection", f"watch stream broke: {connection_error(exc)}")
                self._backoff()
                raise _Restart("error") from exc
            finally:
                with self._lock:
                    self._response = None
                try:
                    response.close()
                    response.release_conn()
                except (AttributeError, OSError):
                    pass
            if events or time.monotonic() - started > 1:
                self._delay = self.settings.backoff_initial_seconds
            else:
                self._backoff()  # a server that ends watches at once must not make us spin

    def _open_watch(self, api: Any, resource: Resource, version: str, server_timeout: int) -> Any:
        """The watch response, None when stopping; _Restart on 410 (relist at once) or errors (after a pause)."""
        try:
            return api.list_cluster_custom_object(
                resource.group, resource.version, resource.plural,
                watch=True, resource_version=version, allow_watch_bookmarks=True,
                timeout_seconds=server_timeout, _preload_content=False,
                _request_timeout=(self.settings.connect_timeout_seconds,
                                  server_timeout + self.settings.read_timeout_seconds),
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 410:
                raise _Restart("gone") from exc
            self._error(f"status-{exc.status}", f"watch failed: {api_error(exc)}")
            self._backoff()
            raise _Restart("error") from exc
        except CONNECTION_ERRORS as exc:
            if self._stopping.is_set():
                return None
            self._error("connection", f"watch failed: {connection_error(exc)}")
            self._backoff()
            raise _Restart("error") from exc

    def _read_events(self, response: Any, resource: Resource, version: str) -> tuple[str, int]:
        """Hand every event to the consumer; the last resourceVersion seen and how many events came."""
        events = 0
        for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
            if not line:
                continue
            event = json.loads(line)
            event_type = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            if event_type == "ERROR":
                code = obj.get("code")
                if code == 410:
                    raise _Restart("gone")
                self._error(f"status-{code}", f"watch ended with an error: {obj.get('message', '')}")
                self._backoff()
                raise _Restart("error")
            new_version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if event_type in ("ADDED", "MODIFIED", "DELETED"):
                obj.setdefault("apiVersion", resource.api_version)
                obj.setdefault("kind", resource.kind)
                self.consumer.apply(event_type, obj)
                events += 1
            version = new_version or version
        return version, events
