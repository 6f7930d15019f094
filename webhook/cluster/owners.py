"""A watch-backed cache of the objects that own Ray pods, for gang sizes at Pod admission.

Every root kind with a definition that has pod groups is watched (RayCluster, RayService, RayJob
with the built-in ones). Per object only its uid, resourceVersion and precomputed group infos
(`webhook.gang.group_infos`) are kept, under an explicit bound. Pod mutation then asks
`group_info(namespace, owner_ref, component, instance)` without an API call: the answer comes from
the pod's own owner, checked by uid, so each RayCluster of a zero-downtime upgrade has its own size
and a re-created cluster of the same name is not confused with the old one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from webhook.evaluation import DefinitionStore
from webhook.gang import GroupInfo, group_infos
from webhook.karta.model import GVK, KartaDefinition
from webhook.karta.registry import DefinitionSet
from webhook.observability import logs, metrics

from .kube import Reflector, WatchSettings

log = logs.get("cluster.owners")

DEFAULT_MAX_ENTRIES = 10_000

GroupKey = tuple[str, str | None]  # (component, instance id)
EntryKey = tuple[GVK, str, str]  # (kind, namespace, name)


@dataclass(frozen=True, slots=True)
class _Entry:
    uid: str
    resource_version: str
    definition: KartaDefinition  # the definition the infos were computed with
    infos: Mapping[GroupKey, GroupInfo] | None  # None: the object could not be resolved


def watched_kinds(definitions: DefinitionSet) -> dict[GVK, KartaDefinition]:
    """Root kinds that can own grouped pods: definitions with pod groups, Pods themselves excepted."""
    return {
        c.definition.root_kind: c.definition
        for c in definitions
        if c.definition.pod_groups and not (c.definition.root_kind.group == "" and c.definition.root_kind.kind == "Pod")
    }


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
        *,
        settings: WatchSettings | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.store = store
        self.api_client = api_client
        self.settings = settings or WatchSettings()
        self.max_entries = max_entries
        self._entries: OrderedDict[EntryKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._reflectors: dict[GVK, Reflector] = {}
        self._definitions: dict[GVK, KartaDefinition] = {}
        self._control = threading.Lock()
        self._started = False

    # --- lifecycle ---

    def start(self) -> None:
        with self._control:
            self._started = True
            self._sync_kinds(self.store.current)  # nothing to stop on a fresh start

    def stop(self) -> None:
        with self._control:
            self._started = False
            reflectors = list(self._reflectors.values())
            self._reflectors.clear()
        for reflector in reflectors:
            reflector.stop()

    def readiness(self) -> tuple[bool, str]:
        with self._control:
            if not self._started:
                return False, "owner cache: not started"
            reflectors = list(self._reflectors.values())
        for reflector in reflectors:
            ok, reason = reflector.status()
            if not ok:
                return False, f"owner cache: {reason}"
        return True, "owner cache synced"

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
                # Only the precomputed infos are kept, so new definitions need the objects again.
                reflector.request_relist("definitions")
        return unwatched

    # --- OwnerIndex ---

    def group_info(
        self, namespace: str, owner: Mapping[str, Any], component: str, instance: str | None
    ) -> GroupInfo | None:
        kind = GVK.of(owner)
        with self._lock:
            entry = self._entries.get((kind, namespace, str(owner.get("name") or "")))
        if entry is None:
            return self._miss("absent")
        uid = owner.get("uid")
        if uid and entry.uid != uid:
            return self._miss("uid")  # a re-created owner of the same name, not seen yet
        compiled = self.store.current.for_kind(kind)
        if compiled is None or compiled.definition is not entry.definition:
            return self._miss("stale")  # definitions changed; the relist is under way
        if entry.infos is None:
            return self._miss("unresolved")
        info = entry.infos.get((component, instance))
        if info is None:
            return self._miss("member")
        return info

    @staticmethod
    def _miss(reason: str) -> GroupInfo | None:
        metrics.OWNER_CACHE_MISSES.labels(reason).inc()
        return None

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
        infos: dict[GroupKey, GroupInfo] | None
        try:
            workload = compiled.resolve(obj)
            infos = None if workload.all_errors() else group_infos(workload)
        except Exception:  # an object the core cannot digest must not stop the watch
            log.exception("cannot compute the gang sizes of %s %s/%s", kind, meta.get("namespace"), meta.get("name"))
            infos = None
        return _Entry(uid, version, compiled.definition, infos)

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
