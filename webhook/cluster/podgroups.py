"""The group-object controller: one PodGroup per Ray cluster for the schedulers that need one.

For coscheduling, Volcano and KAI, a gang exists only once its group object does
(reference/gang-schedulers.md). This controller watches the objects that own Ray pods (RayClusters),
computes each one's group object with the same pure plan Pod admission uses
(`webhook.gang.plan_gang`), and creates or updates it:

- Ours only. Objects carry `app.kubernetes.io/managed-by: karta-admission`; an object of the wanted
  name without that label (KubeRay's batch scheduler made it, or a user) is never touched, only
  counted; Pod admission defers to it as well.
- Owned by the RayCluster (a controller ownerReference), so the garbage collector deletes it with
  the cluster; this controller never deletes anything.
- Updated when the cluster's spec changes the plan: the spec fields it set are listed in an
  annotation, so a field it stops setting is removed and any other field (defaults, status) is kept.
  Writes are a create or a replace carrying the resourceVersion read (a concurrent writer gets 409
  and the next round reads again). An object that keeps changing back is written with growing delays.
- Leader-elected: every replica watches, only the leader writes (`is_leader`, e.g. a
  LeaseElector's `is_leader`); a new leader goes over every cluster once, and everything is gone
  over again every `resync_seconds`.
- The scheduler's CRD not served: nothing is written, it is logged once (by the watch), counted in
  `karta_admission_gang_crd_served` and said in `detail()` (for /readyz); it is looked for again
  every `missing_retry_seconds` of the watch settings.

Admission makes no API call: the pods' keys come from the owner cache (webhook/cluster/owners.py),
which computes the same plan from its own watch.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook.evaluation import DefinitionStore, Mode
from webhook.gang.plan import MANAGED_BY, MANAGED_BY_LABEL, MANAGED_FIELDS_ANNOTATION, plan_gang, scheduler_of
from webhook.gang.settings import GangSettings
from webhook.karta.model import GVK, KartaDefinition
from webhook.karta.registry import DefinitionSet
from webhook.observability import logs, metrics

from .client import CONNECTION_ERRORS, api_error, connection_error
from .owners import watched_kinds
from .reflector import Reflector, WatchSettings

log = logs.get("cluster.podgroups")

ObjectKey = tuple[str, str]  # (namespace, name) of a group object
OwnerKey = tuple[GVK, str, str]  # (kind, namespace, name) of an owner
REQUEST_TIMEOUT = (5, 15)
# A write needed again this soon after the last one is delayed, doubling up to the cap.
REWRITE_WINDOW_SECONDS = 30.0
REWRITE_DELAY_MAX_SECONDS = 300.0
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class _Desired:
    owner: OwnerKey
    body: Mapping[str, Any]


def is_ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, dict) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def updated_object(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The current object with what the controller manages set as desired, everything else kept.

    Managed: our label and annotations, the controller ownerReference, and the spec fields named in
    the managed-fields annotation (those the desired object sets, and those it set before).
    """
    body = copy.deepcopy(dict(current))
    meta = body.setdefault("metadata", {})
    meta.pop("managedFields", None)
    wanted_meta = desired["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **wanted_meta["labels"]}
    before = str((meta.get("annotations") or {}).get(MANAGED_FIELDS_ANNOTATION) or "")
    meta["annotations"] = {**(meta.get("annotations") or {}), **wanted_meta["annotations"]}
    refs = [r for r in meta.get("ownerReferences") or () if isinstance(r, dict) and not r.get("controller")]
    meta["ownerReferences"] = [*refs, *wanted_meta["ownerReferences"]]
    spec = dict(body.get("spec") or {})
    for name in filter(None, before.split(",")):
        if name not in desired["spec"]:
            spec.pop(name, None)
    spec.update(copy.deepcopy(dict(desired["spec"])))
    body["spec"] = spec
    return body


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(dict(obj))
    (body.get("metadata") or {}).pop("managedFields", None)
    return body


class _OwnerConsumer:
    def __init__(self, controller: GroupObjectController, kind: GVK) -> None:
        self.controller = controller
        self.kind = kind

    def replace(self, items: Iterator[dict[str, Any]]) -> None:
        self.controller._owners_listed(self.kind, items)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        self.controller._owner_event(self.kind, event_type, obj)


class _ObjectConsumer:
    def __init__(self, controller: GroupObjectController) -> None:
        self.controller = controller

    def replace(self, items: Iterator[dict[str, Any]]) -> None:
        self.controller._objects_listed(items)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        self.controller._object_event(event_type, obj)


class GroupObjectController:
    """Keeps one group object per Ray cluster for the configured scheduler (see the module docstring).

    Lifecycle: start() starts the watches and the worker thread and returns at once; stop() ends them.
    readiness() says whether the watches have listed once; detail() says when the scheduler's CRD is
    not served. Pass `on_definitions` to KartaWatch.add_listener, and `wake` to a LeaseElector's
    callbacks so a new leader starts at once.
    """

    def __init__(
        self,
        store: DefinitionStore,
        gang: GangSettings,
        mode: Mode,
        api_client: k8s.ApiClient,
        *,
        settings: WatchSettings | None = None,
        is_leader: Callable[[], bool] | None = None,
        resync_seconds: float = 600.0,
        poll_seconds: float = 1.0,
        namespace_filter: Callable[[str], bool] | None = None,
    ) -> None:
        """namespace_filter: whether Pod mutation reaches a namespace's pods (the webhook's
        namespaceSelector: excluded namespaces and those labelled mode=off get no keys, so they
        should get no group objects either); default: every namespace."""
        self.store = store
        self.gang = gang
        self.mode = mode
        self.api_client = api_client
        self.settings = settings or WatchSettings()
        self.scheduler = scheduler_of(gang)
        self.is_leader = is_leader or (lambda: True)
        self.namespace_filter = namespace_filter or (lambda namespace: True)
        self.resync_seconds = resync_seconds
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._control = threading.Lock()  # starting and stopping watches
        self._wakeup = threading.Condition(self._lock)
        self._desired: dict[ObjectKey, _Desired] = {}
        self._by_owner: dict[OwnerKey, ObjectKey] = {}
        self._current: dict[ObjectKey, dict[str, Any]] = {}
        self._due: dict[ObjectKey, float] = {}
        self._rewrites: dict[ObjectKey, tuple[float, int]] = {}  # last write, rewrites in a row
        self._deferred_logged: set[ObjectKey] = set()
        self._definitions: dict[GVK, KartaDefinition] = {}
        self._owner_reflectors: dict[GVK, Reflector] = {}
        self._object_reflector: Reflector | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started = False
        self._leading = False
        self.rounds = 0  # turns of the worker loop (tests wait on it to see that nothing happened)

    # --- lifecycle ---

    @property
    def needed(self) -> bool:
        """Whether the configured scheduler needs group objects at all (and mutation is not off)."""
        return self.scheduler.needs_group_object and self.mode is not Mode.OFF

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        if not self.needed:
            logs.event(log, logging.INFO, f"no group objects: gang scheduler {self.scheduler.name}, "
                       f"mode {self.mode}")  # fmt: skip
            return
        assert self.scheduler.group_kind is not None
        self._object_reflector = Reflector(self.api_client, self.scheduler.group_kind, _ObjectConsumer(self),
                                           self.settings)  # fmt: skip
        self._object_reflector.start()
        self._sync_kinds(self.store.current)
        self._thread = threading.Thread(target=self._run, name="karta-admission-podgroups", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.wake()
        reflectors = [*self._owner_reflectors.values()]
        if self._object_reflector is not None:
            reflectors.append(self._object_reflector)
        for reflector in reflectors:
            reflector.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look at leadership and the queue now (a LeaseElector callback)."""
        with self._wakeup:
            self._wakeup.notify_all()

    def readiness(self) -> tuple[bool, str]:
        if not self._started:
            return False, "group objects: not started"
        if not self.needed:
            return True, f"group objects: none needed for {self.scheduler.name} (mode {self.mode})"
        for reflector in [*self._owner_reflectors.values(), self._object_reflector]:
            if reflector is None:
                continue
            ok, reason = reflector.status()
            if not ok:
                return False, f"group objects: {reason}"
        return True, "group objects synced"

    def detail(self) -> str | None:
        reflector = self._object_reflector
        if reflector is None or reflector.served is not False:
            return None
        return (
            f"gang: the cluster does not serve {reflector.kind} (the {self.scheduler.name} scheduler's CRD is not "
            "installed); no group objects are created"
        )

    def on_definitions(self, definitions: DefinitionSet) -> None:
        """KartaWatch listener: watch the owner kinds the new definitions name, relist changed ones."""
        if self._started and self.needed and not self._stopping.is_set():
            self._sync_kinds(definitions)

    def _sync_kinds(self, definitions: DefinitionSet) -> None:
        wanted = watched_kinds(definitions)
        with self._control:
            # Copy on write: other threads read the reflectors without the lock.
            reflectors = dict(self._owner_reflectors)
            previous, self._definitions = self._definitions, wanted
            gone = [k for k in reflectors if k not in wanted]
            stopping = [reflectors.pop(k) for k in gone]
            with self._lock:
                for owner in [o for o in self._by_owner if o[0] in gone]:
                    self._forget_owner(owner)
            for kind in wanted:
                reflector = reflectors.get(kind)
                if reflector is None:
                    reflector = Reflector(self.api_client, kind, _OwnerConsumer(self, kind), self.settings)
                    reflectors[kind] = reflector
                    reflector.start()
                elif previous.get(kind) is not wanted[kind]:
                    reflector.request_relist("definitions")
            self._owner_reflectors = reflectors
        for reflector in stopping:
            reflector.stop()

    # --- what is wanted (from the owners' watch) ---

    def _desired_for(self, kind: GVK, obj: Mapping[str, Any]) -> tuple[ObjectKey, _Desired] | None:
        meta = obj.get("metadata") or {}
        compiled = self.store.current.for_kind(kind)
        if compiled is None or not meta.get("uid") or not self.namespace_filter(str(meta.get("namespace") or "")):
            return None
        try:
            plan = plan_gang(compiled.resolve(obj), self.gang)
        except Exception:  # an object the core cannot digest must not stop the watch
            log.exception("cannot plan the gang of %s %s/%s", kind, meta.get("namespace"), meta.get("name"))
            return None
        body = plan.group_object
        if body is None:
            return None
        key = (str(body["metadata"]["namespace"]), str(body["metadata"]["name"]))
        owner = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        return key, _Desired(owner, body)

    def _set_owner(self, owner: OwnerKey, wanted: tuple[ObjectKey, _Desired] | None) -> None:
        """Record what one owner wants (lock held); queue the object when that changed."""
        previous = self._by_owner.get(owner)
        if wanted is None:
            if previous is not None:
                self._forget_owner(owner)
            return
        key, desired = wanted
        if previous is not None and previous != key:
            self._forget_owner(owner)
        before = self._desired.get(key)
        self._desired[key] = desired
        self._by_owner[owner] = key
        if before is None or before.body != desired.body:
            self._due.setdefault(key, 0.0)

    def _forget_owner(self, owner: OwnerKey) -> None:
        key = self._by_owner.pop(owner, None)
        if key is not None and key in self._desired and self._desired[key].owner == owner:
            del self._desired[key]

    def _owners_listed(self, kind: GVK, items: Iterator[dict[str, Any]]) -> None:
        wanted = {}
        for obj in items:
            meta = obj.get("metadata") or {}
            owner = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            wanted[owner] = self._desired_for(kind, obj)
        with self._wakeup:
            for owner in [o for o in self._by_owner if o[0] == kind and o not in wanted]:
                self._forget_owner(owner)
            for owner, desired in wanted.items():
                self._set_owner(owner, desired)
            metrics.GROUP_OBJECTS_MANAGED.set(len(self._desired))
            self._wakeup.notify_all()

    def _owner_event(self, kind: GVK, event_type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        owner = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        wanted = None if event_type == "DELETED" else self._desired_for(kind, obj)
        with self._wakeup:
            self._set_owner(owner, wanted)
            metrics.GROUP_OBJECTS_MANAGED.set(len(self._desired))
            self._wakeup.notify_all()

    # --- what is there (from the group objects' watch) ---

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> ObjectKey:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    @staticmethod
    def _kept(obj: dict[str, Any]) -> dict[str, Any]:
        """Ours whole (it is written back), others only as far as telling they are not ours."""
        if is_ours(obj):
            return _comparable(obj)
        return {"metadata": {"name": (obj.get("metadata") or {}).get("name"), "labels": {}}}

    def _objects_listed(self, items: Iterator[dict[str, Any]]) -> None:
        current = {self._key(o): self._kept(o) for o in items}
        reflector = self._object_reflector
        if reflector is not None:
            metrics.GANG_CRD_SERVED.labels(reflector.label).set(1 if reflector.served else 0)
        with self._wakeup:
            self._current = current
            for key in self._desired:
                self._due.setdefault(key, 0.0)
            self._wakeup.notify_all()

    def _object_event(self, event_type: str, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        with self._wakeup:
            if event_type == "DELETED":
                self._current.pop(key, None)
            else:
                self._current[key] = self._kept(obj)
            if key in self._desired:
                self._due.setdefault(key, 0.0)
                self._wakeup.notify_all()

    # --- the worker ---

    def _ready_to_write(self) -> bool:
        reflectors = [*self._owner_reflectors.values(), self._object_reflector]
        return all(r is not None and r.synced for r in reflectors) and bool(
            self._object_reflector and self._object_reflector.served
        )

    def _run(self) -> None:
        next_resync = time.monotonic() + self.resync_seconds
        while not self._stopping.is_set():
            self.rounds += 1
            leading = self._safe_is_leader()
            now = time.monotonic()
            with self._wakeup:
                if leading and not self._leading:
                    logs.event(log, logging.INFO, "leading: going over every group object")
                    for key in self._desired:
                        self._due.setdefault(key, 0.0)
                self._leading = leading
                if now >= next_resync:
                    next_resync = now + self.resync_seconds
                    for key in self._desired:
                        self._due.setdefault(key, 0.0)
                due = [k for k, at in self._due.items() if at <= now] if leading and self._ready_to_write() else []
                for key in due:
                    del self._due[key]
                if not due:
                    upcoming = [at - now for at in self._due.values() if at > now]
                    self._wakeup.wait(min([self.poll_seconds, *upcoming]))
                    continue
            for key in due:
                if self._stopping.is_set() or not self._safe_is_leader():
                    with self._wakeup:
                        self._due.setdefault(key, 0.0)
                    continue
                self._reconcile(key)

    def _safe_is_leader(self) -> bool:
        try:
            return bool(self.is_leader())
        except Exception:
            log.exception("is_leader failed")
            return False

    def _later(self, key: ObjectKey, delay: float) -> None:
        with self._wakeup:
            at = time.monotonic() + delay
            self._due[key] = min(self._due.get(key, at), at)

    def _reconcile(self, key: ObjectKey) -> None:
        with self._lock:
            desired = self._desired.get(key)
            current = copy.deepcopy(self._current.get(key))
        if desired is None:
            return  # nobody wants it any more; the garbage collector deletes it with its owner
        if current is not None and not is_ours(current):
            metrics.GROUP_OBJECTS_DEFERRED.inc()
            if key not in self._deferred_logged:
                self._deferred_logged.add(key)
                logs.event(log, logging.INFO, "a group object of that name exists and is not ours; leaving it alone",
                           namespace=key[0], name=key[1], kind=str(self.scheduler.group_kind))  # fmt: skip
            return
        self._deferred_logged.discard(key)
        if current is None:
            self._write(key, "create", dict(desired.body))
            return
        body = updated_object(current, desired.body)
        if body == _comparable(current):
            self._rewrites.pop(key, None)
            return
        last, count = self._rewrites.get(key, (0.0, 0))
        now = time.monotonic()
        if now - last < REWRITE_WINDOW_SECONDS and count > 0:
            delay = min(2.0**count, REWRITE_DELAY_MAX_SECONDS)
            if now - last < delay:
                self._later(key, delay - (now - last))
                return
        self._rewrites[key] = (now, count + 1 if now - last < REWRITE_WINDOW_SECONDS else 1)
        self._write(key, "update", body)

    def _write(self, key: ObjectKey, action: str, body: dict[str, Any]) -> None:
        reflector = self._object_reflector
        resource = reflector.resource if reflector is not None else None
        if resource is None:
            self._later(key, RETRY_SECONDS)
            return
        api = k8s.CustomObjectsApi(self.api_client)
        namespace, name = key
        try:
            if action == "create":
                written = api.create_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural, body,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
            else:
                written = api.replace_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural, name, body,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        except ApiException as exc:
            if exc.status in (404, 409):
                # Someone else wrote or deleted it since our watch saw it: the watch brings the news.
                metrics.GROUP_OBJECT_WRITES.labels(action, "conflict").inc()
                self._later(key, RETRY_SECONDS)
                return
            metrics.GROUP_OBJECT_WRITES.labels(action, "error").inc()
            logs.event(log, logging.WARNING, f"cannot {action} group object {namespace}/{name}: {api_error(exc)}",
                       namespace=namespace, name=name)  # fmt: skip
            self._later(key, RETRY_SECONDS * 5)
            return
        except CONNECTION_ERRORS as exc:
            metrics.GROUP_OBJECT_WRITES.labels(action, "error").inc()
            logs.event(log, logging.WARNING, f"cannot reach the API server: {connection_error(exc)}")
            self._later(key, RETRY_SECONDS * 5)
            return
        metrics.GROUP_OBJECT_WRITES.labels(action, "ok").inc()
        logs.event(log, logging.INFO, f"group object {action}d", namespace=namespace, name=name,
                   min_member=body.get("spec", {}).get("minMember"))  # fmt: skip
        if isinstance(written, dict):
            with self._lock:
                self._current[key] = self._kept(written)

    # --- for tests and status pages ---

    def wanted(self) -> dict[ObjectKey, Mapping[str, Any]]:
        """The group objects wanted now, by (namespace, name)."""
        with self._lock:
            return {k: d.body for k, d in self._desired.items()}
