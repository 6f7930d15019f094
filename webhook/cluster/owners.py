"""The agent's mirror of the objects that own Ray pods, published for Pod admission in the workers.

Every root kind whose definition has gang instructions and owns its pods directly is watched
(RayCluster with the built-in definitions; a RayService's pods belong to its RayCluster), and its
objects are written, trimmed, to the state file (webhook.state.store) under an explicit bound. When
the scheduler needs a group object, the group objects of its kind are watched too, and only those
this product did not create are published (admission defers to them). The workers plan each pod's
gang from the published owner (webhook.state.published), checked by uid, so each RayCluster of a
zero-downtime upgrade has its own gang and a re-created cluster of the same name is not confused
with the old one; no API call is made per pod.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes import client as k8s

from webhook.gang.plan import MANAGED_BY, MANAGED_BY_LABEL, scheduler_of
from webhook.gang.settings import GangSettings
from webhook.gang.sizes import has_gang_instructions, owns_pods
from webhook.karta.model import GVK, KartaDefinition
from webhook.karta.registry import DefinitionSet
from webhook.observability import logs, metrics
from webhook.state.store import StateWriter, kind_key

from .reflector import Reflector, WatchSettings

log = logs.get("cluster.owners")

DEFAULT_MAX_ENTRIES = 10_000
# Past this many foreign group objects the workers are told the group objects are not known (so
# no keys that name one) rather than have one forgotten.
FOREIGN_GROUP_OBJECTS_MAX = 5 * DEFAULT_MAX_ENTRIES


def watched_kinds(definitions: DefinitionSet) -> dict[GVK, KartaDefinition]:
    """Root kinds whose objects own grouped pods: gang instructions, pod components directly under the root."""
    return {
        c.definition.root_kind: c.definition
        for c in definitions
        if has_gang_instructions(c.definition)
        and owns_pods(c.definition)
        and not (c.definition.root_kind.group == "" and c.definition.root_kind.kind == "Pod")
    }


def is_ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, dict) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or "")


class _OwnerConsumer:
    """WatchConsumer for one owner kind: every object published, the oldest dropped past the bound."""

    def __init__(self, mirror: OwnerMirror, kind: GVK) -> None:
        self.mirror = mirror
        self.kind = kind

    def replace(self, items: Iterator[dict[str, Any]]) -> None:
        self.mirror.writer.replace_objects(self.kind, items)
        self.mirror._bounded(self.kind)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            namespace, name, uid = _identity(obj)
            # A DELETED event for an older object of the same name must not drop its successor.
            self.mirror.writer.delete_object(self.kind, namespace, name, uid)
        else:
            self.mirror.writer.put_object(self.kind, obj)
            self.mirror._bounded(self.kind)


class _GroupObjectConsumer:
    """WatchConsumer for the scheduler's group objects: only those this product did not create."""

    def __init__(self, mirror: OwnerMirror, kind: GVK) -> None:
        self.mirror = mirror
        self.kind = kind
        self.foreign = 0

    def replace(self, items: Iterator[dict[str, Any]]) -> None:
        foreign = [{"metadata": o.get("metadata") or {}} for o in items if not is_ours(o)]
        self.mirror.writer.replace_objects(self.kind, foreign)
        self.foreign = len(foreign)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        namespace, name, _ = _identity(obj)
        if event_type == "DELETED" or is_ours(obj):
            self.mirror.writer.delete_object(self.kind, namespace, name)
        else:
            self.mirror.writer.put_object(self.kind, {"metadata": obj.get("metadata") or {}})
            self.foreign += 1  # an upper bound between lists; the next list recounts

    @property
    def overflow(self) -> bool:
        return self.foreign > FOREIGN_GROUP_OBJECTS_MAX


class OwnerMirror:
    """Watches the owners of grouped pods (and the scheduler's group objects) into the state file."""

    def __init__(
        self,
        writer: StateWriter,
        api_client: k8s.ApiClient,
        gang: GangSettings,
        *,
        settings: WatchSettings | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.writer = writer
        self.api_client = api_client
        self.settings = settings or WatchSettings()
        self.max_entries = max_entries
        self.scheduler = scheduler_of(gang)
        self._reflectors: dict[GVK, Reflector] = {}
        self._control = threading.Lock()
        self._started = False
        self._group_consumer: _GroupObjectConsumer | None = None
        self._group_reflector: Reflector | None = None
        self._served_reported: bool | None = None

    # --- lifecycle ---

    def start(self, definitions: DefinitionSet) -> None:
        with self._control:
            self._started = True
            kind = self.scheduler.group_kind
            # What an earlier agent published of kinds no longer watched goes; the rest is relisted.
            self.writer.keep_only_kinds([*watched_kinds(definitions), *([kind] if kind is not None else [])])
            self._sync_kinds(definitions)  # nothing to stop on a fresh start
            if kind is not None and self._group_reflector is None:
                self._group_consumer = _GroupObjectConsumer(self, kind)
                self._group_reflector = Reflector(self.api_client, kind, self._group_consumer, self.settings)
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
                return False, "owners: not started"
            reflectors = list(self._reflectors.values())
            if self._group_reflector is not None:
                reflectors.append(self._group_reflector)
        for reflector in reflectors:
            ok, reason = reflector.status()
            if not ok:
                return False, f"owners: {reason}"
        return True, "owners synced"

    def on_definitions(self, definitions: DefinitionSet) -> None:
        """KartaWatch listener: watch new kinds, drop old ones (workers plan with their own definitions)."""
        with self._control:
            if not self._started:
                return
            unwatched = self._sync_kinds(definitions)
        for reflector in unwatched:
            reflector.stop()

    def _sync_kinds(self, definitions: DefinitionSet) -> list[Reflector]:
        """Start reflectors for the kinds now wanted; the ones no longer wanted, to stop (lock held)."""
        wanted = watched_kinds(definitions)
        unwatched = []
        for kind in [k for k in self._reflectors if k not in wanted]:
            unwatched.append(self._reflectors.pop(kind))
            self.writer.drop_kind(kind)
        for kind in wanted:
            if kind not in self._reflectors:
                reflector = Reflector(self.api_client, kind, _OwnerConsumer(self, kind), self.settings)
                self._reflectors[kind] = reflector
                reflector.start()
        return unwatched

    def _bounded(self, kind: GVK) -> None:
        evicted = self.writer.evict_oldest(kind, self.max_entries)
        if evicted:
            metrics.OWNER_CACHE_EVICTIONS.inc(evicted)
            logs.event(log, logging.DEBUG, "owners over their bound: the least recently updated dropped",
                       kind=str(kind), evicted=evicted)  # fmt: skip

    def published(self) -> int:
        """How many owner objects the state file holds."""
        with self._control:
            kinds = list(self._reflectors)
        return sum(self.writer.count(kind) for kind in kinds)

    # --- what the workers are told about the group objects (webhook.state.store.AgentStatus) ---

    def group_kind(self) -> str | None:
        kind = self.scheduler.group_kind
        return kind_key(kind) if kind is not None else None

    def group_kind_served(self) -> bool | None:
        reflector = self._group_reflector
        served = reflector.served if reflector is not None else None
        if reflector is not None and served is not None and served != self._served_reported:
            self._served_reported = served
            metrics.GANG_CRD_SERVED.labels(reflector.label).set(1 if served else 0)
        return served

    def group_objects_synced(self) -> bool:
        reflector, consumer = self._group_reflector, self._group_consumer
        if reflector is None or consumer is None or not reflector.synced:
            return False
        # Too many to mirror: the workers write no keys that name a group object.
        return not consumer.overflow

    def detail(self) -> str | None:
        """For /readyz: the configured scheduler's group CRD is not served, so no gang keys are written."""
        reflector = self._group_reflector
        if reflector is None or reflector.served is not False:
            return None
        return (
            f"gang: the cluster does not serve {reflector.kind} (the {self.scheduler.name} scheduler's CRD is "
            "not installed); Ray pods get no gang keys and no schedulerName"
        )
