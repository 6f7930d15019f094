"""Karta definitions from the cluster: run.ai/v1alpha1 Karta objects (cluster-scoped) over the
definitions of the configured directories and the built-in ones.

A valid Karta replaces the definition for its root kind; an invalid one is refused (log line and
metric) and the last good version of that Karta keeps serving; deleting it falls back to the next
source. Two Kartas for one root kind: the oldest (creationTimestamp, then name) wins, with a warning.
The DefinitionStore's set is replaced whole, so requests in flight finish with the set they started
with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook.evaluation import DefinitionStore
from webhook.karta.model import GVK, KartaDefinition
from webhook.karta.parse import DefinitionError, parse_definition
from webhook.karta.registry import DefinitionSet
from webhook.observability import logs, metrics

from .client import api_error, discover, list_all
from .reflector import Reflector, WatchSettings

log = logs.get("cluster.kartas")

KARTA_KIND = GVK("run.ai", "v1alpha1", "Karta")

DefinitionsListener = Callable[[DefinitionSet], None]


@dataclass(frozen=True)
class _Accepted:
    definition: KartaDefinition
    created: str  # creationTimestamp (RFC 3339, UTC): compares as text
    name: str
    obj: Mapping[str, Any]  # the Karta object as read, published for the server's workers


class ClusterDefinitions:
    """The Karta objects seen in the cluster, each parsed once per resourceVersion, composed over a base."""

    def __init__(self, base: Iterable[KartaDefinition]) -> None:
        self._base = {d.root_kind: d for d in base}
        self._accepted: dict[str, _Accepted] = {}
        # name -> (resourceVersion, result, the object parsed)
        self._parsed: dict[str, tuple[str, KartaDefinition | None, Mapping[str, Any]]] = {}
        self._warned_conflicts: set[tuple[str, ...]] = set()
        self.refused: dict[str, str] = {}  # name -> why, for the versions currently in the cluster

    def replace(self, objects: Iterable[Mapping[str, Any]]) -> None:
        present = set()
        for obj in objects:
            name = self._name(obj)
            if name:
                present.add(name)
                self.upsert(obj)
        for name in [n for n in self._accepted if n not in present]:
            self.remove(name)
        for name in [n for n in self._parsed if n not in present]:
            del self._parsed[name]
            self.refused.pop(name, None)

    def upsert(self, obj: Mapping[str, Any]) -> None:
        name = self._name(obj)
        if not name:
            return
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            self.remove(name)
            return
        version = str(meta.get("resourceVersion") or "")
        cached = self._parsed.get(name)
        if cached is not None and cached[0] == version:
            definition, obj = cached[1], cached[2]
        else:
            definition = self._parse(name, obj)
            self._parsed[name] = (version, definition, obj)
        if definition is not None:
            self._accepted[name] = _Accepted(definition, str(meta.get("creationTimestamp") or "~"), name, obj)
            self.refused.pop(name, None)
        # else: refused; the last good version of this Karta, if any, stays accepted.

    def remove(self, name: str) -> None:
        self._accepted.pop(name, None)
        self._parsed.pop(name, None)
        self.refused.pop(name, None)

    def effective(self) -> dict[GVK, KartaDefinition]:
        """One definition per root kind: cluster over base; among Kartas of one kind the oldest."""
        result = dict(self._base)
        result.update({kind: accepted.definition for kind, accepted in self._chosen().items()})
        return result

    def effective_objects(self) -> list[Mapping[str, Any]]:
        """The Karta objects in force (one per root kind), as read from the cluster."""
        return [accepted.obj for _, accepted in sorted(self._chosen().items())]

    def _chosen(self) -> dict[GVK, _Accepted]:
        by_kind: dict[GVK, list[_Accepted]] = {}
        for accepted in self._accepted.values():
            by_kind.setdefault(accepted.definition.root_kind, []).append(accepted)
        result: dict[GVK, _Accepted] = {}
        for kind, candidates in by_kind.items():
            candidates.sort(key=lambda a: (a.created, a.name))
            result[kind] = candidates[0]
            if len(candidates) > 1:
                names = tuple(a.name for a in candidates)
                if names not in self._warned_conflicts:
                    self._warned_conflicts.add(names)
                    logs.event(
                        log, logging.WARNING,
                        f"{len(names)} Karta objects define root kind {kind}: using {names[0]!r} (oldest), "
                        f"ignoring {', '.join(repr(n) for n in names[1:])}",
                        kind=str(kind), used=names[0], ignored=list(names[1:]),
                    )  # fmt: skip
        return result

    @staticmethod
    def _name(obj: Mapping[str, Any]) -> str:
        return str((obj.get("metadata") or {}).get("name") or "")

    def _parse(self, name: str, obj: Mapping[str, Any]) -> KartaDefinition | None:
        source = f"cluster:{name}"
        try:
            return parse_definition(obj, source)
        except DefinitionError as exc:
            self.refused[name] = "; ".join(exc.problems)
            metrics.DEFINITION_LOAD_ERRORS.labels(source).inc()
            keeping = self._accepted.get(name)
            logs.event(
                log, logging.WARNING,
                f"Karta {name!r} refused; "
                + ("its last good version keeps serving" if keeping else "the other sources keep serving"),
                karta=name, resource_version=(obj.get("metadata") or {}).get("resourceVersion"),
                problems=exc.problems,
            )  # fmt: skip
            return None


class KartaWatch:
    """Watches Karta objects and replaces the store's definitions when the effective set changes."""

    def __init__(
        self, store: DefinitionStore, api_client: k8s.ApiClient, settings: WatchSettings | None = None
    ) -> None:
        self.store = store
        self.definitions = ClusterDefinitions(c.definition for c in store.current)
        self._current = {c.definition.root_kind: c.definition for c in store.current}
        self._listeners: list[DefinitionsListener] = []
        self._lock = threading.Lock()
        self.reflector = Reflector(api_client, KARTA_KIND, self, settings)

    def add_listener(self, listener: DefinitionsListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self.reflector.start()

    def stop(self) -> None:
        self.reflector.stop()

    def readiness(self) -> tuple[bool, str]:
        return self.reflector.status()

    # --- WatchConsumer ---

    def replace(self, items: Iterator[dict[str, Any]]) -> None:
        objects = list(items)  # few, and a list that fails half-way must change nothing
        with self._lock:
            self.definitions.replace(objects)
            self._recompute()

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if event_type == "DELETED":
                self.definitions.remove(ClusterDefinitions._name(obj))
            else:
                self.definitions.upsert(obj)
            self._recompute()

    def _recompute(self) -> None:
        effective = self.definitions.effective()
        if effective.keys() == self._current.keys() and all(effective[k] is self._current[k] for k in effective):
            return
        changed = sorted(
            str(k) for k in effective.keys() | self._current.keys() if effective.get(k) is not self._current.get(k)
        )
        new_set = DefinitionSet(effective.values())
        self.store.replace(new_set)
        self._current = effective
        metrics.DEFINITIONS_LOADED.set(len(new_set))
        logs.event(
            log, logging.INFO, "Karta definitions changed",
            kinds=changed, sources={str(k): d.source for k, d in sorted(effective.items())},
        )  # fmt: skip
        for listener in self._listeners:
            try:
                listener(new_set)
            except Exception:
                log.exception("a definitions listener failed")


def cluster_definition_set(
    api_client: k8s.ApiClient, base: DefinitionSet, timeout: tuple[float, float] = (10, 60)
) -> tuple[DefinitionSet, list[str]]:
    """One read of the cluster's Karta objects composed over `base` (for the audit), and notes for
    the user: refused Kartas, or why the cluster's Kartas could not be read."""
    try:
        resource = discover(api_client, KARTA_KIND, timeout)
        if resource is None:
            return base, []
        items, _ = list_all(api_client, resource, timeout=timeout)
    except ApiException as exc:
        if exc.status == 404:
            return base, []
        return base, [f"cannot read Karta objects ({api_error(exc)}); using the built-in and configured definitions"]
    definitions = ClusterDefinitions(c.definition for c in base)
    definitions.replace(items)
    notes = [f"Karta {name!r} refused: {why}" for name, why in sorted(definitions.refused.items())]
    effective = definitions.effective()
    if all((c := base.for_kind(k)) is not None and c.definition is d for k, d in effective.items()):
        return base, notes
    return DefinitionSet(effective.values()), notes
