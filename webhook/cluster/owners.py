"""A watch-backed cache of the objects that own Ray pods, for the gang of each pod at admission.

Every root kind whose definition has gang instructions and owns its pods directly is watched
(RayCluster with the built-in definitions; a RayService's pods belong to its RayCluster). Per object
only its uid, resourceVersion and its gang plan (`webhook.gang.plan_gang`, under the configured
scheduler) are kept, under an explicit bound. When the scheduler needs a group object, the group
objects of its kind are watched too, keeping only the names of those this product did not create.
Pod mutation then asks `gang(namespace, owner_ref)` without an API call: the answer comes from the
pod's own owner, checked by uid, so each RayCluster of a zero-downtime upgrade has its own gang and a
re-created cluster of the same name is not confused with the old one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from webhook.evaluation import DefinitionStore
from webhook.gang.plan import MANAGED_BY, MANAGED_BY_LABEL, GangPlan, Withheld, plan_gang, scheduler_of
from webhook.gang.settings import GangSettings
from webhook.gang.sizes import has_gang_instructions, owns_pods
from webhook.gang.state import ClusterGang, GangLookup, GroupObjectStatus
from webhook.karta.model import GVK, KartaDefinition
from webhook.karta.registry import DefinitionSet
from webhook.observability import logs, metrics

from .kube import Reflector, WatchSettings

log = logs.get("cluster.owners")

DEFAULT_MAX_ENTRIES = 10_000
# A pod whose owner was created a moment ago may be admitted before the watch delivered the owner:
# one request thread at a time waits this long for it (a bound, so that made-up owners cost little).
DEFAULT_MISS_WAIT_SECONDS = 0.25

EntryKey = tuple[GVK, str, str]  # (kind, namespace, name)


@dataclass(frozen=True, slots=True)
class _Entry:
    uid: str
    resource_version: str
    definition: KartaDefinition  # the definition the plan was computed with
    plan: GangPlan


def watched_kinds(definitions: DefinitionSet) -> dict[GVK, KartaDefinition]:
    """Root kinds whose objects own grouped pods: gang instructions, pod components directly under the root."""
    return {
        c.definition.root_kind: c.definition
        for c in definitions
        if has_gang_instructions(c.definition)
        and owns_pods(c.definition)
        and not (c.definition.root_kind.group == "" and c.definition.root_kind.kind == "Pod")
    }


class GroupObjectNames:
    """WatchConsumer over the scheduler's group objects: the names of those this product did not create.

    Only foreign objects matter at admission (ours is expected either way). Past `max_entries` the
    index gives up (every lookup says unknown, so no keys) rather than forget a foreign object.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._foreign: set[tuple[str, str]] = set()
        self._overflow = False
        self._lock = threading.Lock()

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    @staticmethod
    def is_ours(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return isinstance(labels, dict) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY

    def replace(self, items: Iterator[dict[str, Any]]) -> None:
        foreign = {self._key(o) for o in items if not self.is_ours(o)}
        with self._lock:
            self._foreign = foreign
            self._overflow = len(foreign) > self.max_entries
            if self._overflow:
                log.warning("more than %d group objects not created by karta-admission: no gang keys", self.max_entries)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        with self._lock:
            if event_type == "DELETED" or self.is_ours(obj):
                self._foreign.discard(key)
            else:
                self._foreign.add(key)
            self._overflow = len(self._foreign) > self.max_entries

    def foreign(self, namespace: str, name: str) -> bool | None:
        """True: a foreign object of that name; None: not known (index over its bound)."""
        with self._lock:
            if self._overflow:
                return None
            return (namespace, name) in self._foreign


class _KindConsumer:
    def __init__(self, cache: OwnerCache, kind: GVK) -> None:
        self.cache = cache
        self.kind = kind

    def replace(self, items: Iterator[dict[str, Any]]) -> None:
        self.cache._replace(self.kind, items)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        self.cache._apply(self.kind, event_type, obj)


class OwnerCache:
    """OwnerIndex (webhook.admission) over watched owner objects."""

    def __init__(
        self,
        store: DefinitionStore,
        api_client: k8s.ApiClient,
        gang: GangSettings,
        *,
        settings: WatchSettings | None = None,
        group_objects_managed: bool,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        miss_wait_seconds: float = DEFAULT_MISS_WAIT_SECONDS,
    ) -> None:
        """group_objects_managed: a GroupObjectController (webhook.cluster.podgroups) runs somewhere in
        this installation and creates the scheduler's group objects. Without one, keys that name a
        group object are withheld (they would leave pods Pending for a group that never appears)."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.store = store
        self.api_client = api_client
        self.settings = settings or WatchSettings()
        self.max_entries = max_entries
        self.group_objects_managed = group_objects_managed
        self.miss_wait_seconds = miss_wait_seconds
        self.gang_settings = gang
        self.scheduler = scheduler_of(gang)
        self._entries: OrderedDict[EntryKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._changed = threading.Condition(threading.Lock())
        self._generation = 0
        self._waiter = threading.Semaphore(1)
        self._reflectors: dict[GVK, Reflector] = {}
        self._definitions: dict[GVK, KartaDefinition] = {}
        self._control = threading.Lock()
        self._started = False
        self.group_objects = GroupObjectNames(max_entries * 5)
        self._group_reflector: Reflector | None = None
        self._served_reported: bool | None = None

    # --- lifecycle ---

    def start(self) -> None:
        with self._control:
            self._started = True
            self._sync_kinds(self.store.current)  # nothing to stop on a fresh start
            kind = self.scheduler.group_kind
            if kind is not None and self.group_objects_managed and self._group_reflector is None:
                self._group_reflector = Reflector(self.api_client, kind, self.group_objects, self.settings)
                self._group_reflector.start()

    def stop(self) -> None:
        with self._control:
            self._started = False
            reflectors = list(self._reflectors.values())
            self._reflectors.clear()
            if self._group_reflector is not None:
                reflectors.append(self._group_reflector)
                self._group_reflector = None
        for reflector in reflectors:
            reflector.stop()

    def readiness(self) -> tuple[bool, str]:
        with self._control:
            if not self._started:
                return False, "owner cache: not started"
            reflectors = list(self._reflectors.values())
            if self._group_reflector is not None:
                reflectors.append(self._group_reflector)
        for reflector in reflectors:
            ok, reason = reflector.status()
            if not ok:
                return False, f"owner cache: {reason}"
        return True, "owner cache synced"

    def detail(self) -> str | None:
        """For /readyz: the configured scheduler's group CRD is not served, so no gang keys are written."""
        reflector = self._group_reflector
        if reflector is None or reflector.served is not False:
            return None
        return (
            f"gang: the cluster does not serve {reflector.kind} (the {self.scheduler.name} scheduler's CRD is "
            "not installed); Ray pods get no gang keys and no schedulerName"
        )

    def group_object_status(self, namespace: str, name: str | None) -> GroupObjectStatus:
        """Whether the group object of that name can be relied on (see GroupObjectStatus)."""
        if name is None:
            return GroupObjectStatus.NOT_NEEDED
        reflector = self._group_reflector
        if not self.group_objects_managed or reflector is None:
            return GroupObjectStatus.UNMANAGED
        served = reflector.served
        if served is None or not reflector.synced:
            return GroupObjectStatus.UNKNOWN
        if served != self._served_reported:
            self._served_reported = served
            metrics.GANG_CRD_SERVED.labels(reflector.label).set(1 if served else 0)
        if not served:
            return GroupObjectStatus.CRD_MISSING
        foreign = self.group_objects.foreign(namespace, name)
        if foreign is None:
            return GroupObjectStatus.UNKNOWN
        return GroupObjectStatus.FOREIGN if foreign else GroupObjectStatus.EXPECTED

    def on_definitions(self, definitions: DefinitionSet) -> None:
        """KartaWatch listener: watch new kinds, drop old ones, recompute those whose definition changed."""
        with self._control:
            if not self._started:
                return
            unwatched = self._sync_kinds(definitions)
        for reflector in unwatched:
            reflector.stop()

    def _sync_kinds(self, definitions: DefinitionSet) -> list[Reflector]:
        """Start and re-list reflectors for the kinds now wanted; the ones no longer wanted, to stop."""
        wanted = watched_kinds(definitions)
        previous, self._definitions = self._definitions, wanted
        unwatched = []
        for kind in [k for k in self._reflectors if k not in wanted]:
            unwatched.append(self._reflectors.pop(kind))
            self._drop_kind(kind)
        for kind, definition in wanted.items():
            reflector = self._reflectors.get(kind)
            if reflector is None:
                reflector = Reflector(self.api_client, kind, _KindConsumer(self, kind), self.settings)
                self._reflectors[kind] = reflector
                reflector.start()
            elif previous.get(kind) is not definition:
                # Only the precomputed plans are kept, so new definitions need the objects again.
                reflector.request_relist("definitions")
        return unwatched

    # --- GangIndex (webhook.gang.state) ---

    def gang(self, namespace: str, owner: Mapping[str, Any]) -> GangLookup:
        kind = GVK.of(owner)
        key = (kind, namespace, str(owner.get("name") or ""))
        deadline = time.monotonic() + self.miss_wait_seconds
        waiting = False
        try:
            while True:
                with self._changed:
                    generation = self._generation
                entry, miss = self._entry(key, owner)
                remaining = deadline - time.monotonic()
                if miss not in ("absent", "uid") or remaining <= 0:
                    break
                # Wait for the watch to deliver the owner; one waiting thread at a time.
                if not waiting and not self._waiter.acquire(blocking=False):
                    break
                waiting = True
                with self._changed:
                    self._changed.wait_for(self._moved_on(generation), remaining)
        finally:
            if waiting:
                self._waiter.release()
        if miss is not None or entry is None:
            metrics.OWNER_CACHE_MISSES.labels(miss or "absent").inc()
            return GangLookup(None, miss)
        plan = entry.plan
        return GangLookup(ClusterGang(plan, self.group_object_status(namespace, plan.group_object_name)))

    def _entry(self, key: EntryKey, owner: Mapping[str, Any]) -> tuple[_Entry | None, str | None]:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None, "absent"
        uid = owner.get("uid")
        if uid and entry.uid != uid:
            return None, "uid"  # a re-created owner of the same name, not seen yet
        compiled = self.store.current.for_kind(key[0])
        if compiled is None or compiled.definition is not entry.definition:
            return None, "stale"  # definitions changed; the relist is under way
        return entry, None

    def _moved_on(self, generation: int) -> Callable[[], bool]:
        return lambda: self._generation != generation

    def _touched(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # --- keeping in step ---

    def _compute(self, kind: GVK, obj: Mapping[str, Any], previous: _Entry | None) -> _Entry | None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        version = str(meta.get("resourceVersion") or "")
        compiled = self.store.current.for_kind(kind)
        if compiled is None:
            return None
        if (
            previous is not None
            and previous.uid == uid
            and previous.resource_version == version
            and previous.definition is compiled.definition
        ):
            return previous  # same object, same definition: same infos
        try:
            plan = plan_gang(compiled.resolve(obj), self.gang_settings)
        except Exception as exc:  # an object the core cannot digest must not stop the watch
            log.exception("cannot compute the gang of %s %s/%s", kind, meta.get("namespace"), meta.get("name"))
            plan = GangPlan(self.scheduler, None, None, "", {}, None,
                            Withheld("internal-error", f"internal error: {type(exc).__name__}"))  # fmt: skip
        return _Entry(uid, version, compiled.definition, plan)

    @staticmethod
    def _key(kind: GVK, obj: Mapping[str, Any]) -> EntryKey:
        meta = obj.get("metadata") or {}
        return (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def _replace(self, kind: GVK, items: Iterator[dict[str, Any]]) -> None:
        """A full list: digest each object as it arrives (only entries are kept), then swap them in."""
        if kind not in self._definitions:
            return  # no longer watched; its reflector is stopping
        with self._lock:
            previous = {k: e for k, e in self._entries.items() if k[0] == kind}
        computed: dict[EntryKey, _Entry] = {}
        for obj in items:
            key = self._key(kind, obj)
            entry = self._compute(kind, obj, previous.get(key))
            if entry is not None:
                computed[key] = entry
        with self._lock:
            for key in previous:
                if key not in computed:
                    self._entries.pop(key, None)
            for key, entry in computed.items():
                self._put(key, entry)
            size = len(self._entries)
        metrics.OWNER_CACHE_ENTRIES.set(size)
        self._touched()

    def _apply(self, kind: GVK, event_type: str, obj: dict[str, Any]) -> None:
        if kind not in self._definitions:
            return
        key = self._key(kind, obj)
        if event_type == "DELETED":
            with self._lock:
                entry = self._entries.get(key)
                # A DELETED event for an older object of the same name must not drop its successor.
                uid = str((obj.get("metadata") or {}).get("uid") or "")
                if entry is not None and (not uid or entry.uid == uid):
                    del self._entries[key]
                size = len(self._entries)
        else:
            with self._lock:
                previous = self._entries.get(key)
            entry = self._compute(kind, obj, previous)
            with self._lock:
                if entry is None:
                    self._entries.pop(key, None)
                else:
                    self._put(key, entry)
                size = len(self._entries)
        metrics.OWNER_CACHE_ENTRIES.set(size)
        self._touched()

    def _put(self, key: EntryKey, entry: _Entry) -> None:
        """Insert as the most recent; past the bound, drop the least recently updated (lock held)."""
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            evicted, _ = self._entries.popitem(last=False)
            metrics.OWNER_CACHE_EVICTIONS.inc()
            logs.event(log, logging.DEBUG, "owner cache full: evicted", kind=str(evicted[0]),
                       namespace=evicted[1], name=evicted[2])  # fmt: skip

    def _drop_kind(self, kind: GVK) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == kind]:
                del self._entries[key]
            size = len(self._entries)
        metrics.OWNER_CACHE_ENTRIES.set(size)
