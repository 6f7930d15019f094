"""What a server worker reads of the cluster: the state the agent published (webhook.state.store).

Workers make no API call and run no watch. They read, per request and without waiting on the
network: the cluster's Karta definitions (reloaded when the agent publishes a new version), the
owner of a pod being created (its gang planned here, with this worker's definitions and settings,
and remembered per object version), whether the scheduler's group object can be relied on, and the
agent's readiness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from webhook.evaluation import DefinitionStore
from webhook.gang.plan import GangPlan, Withheld, plan_gang, scheduler_of
from webhook.gang.settings import GangSettings
from webhook.gang.state import ClusterGang, GangLookup, GroupObjectStatus
from webhook.karta.model import GVK, KartaDefinition
from webhook.karta.parse import DefinitionError, parse_definition
from webhook.karta.registry import DefinitionSet
from webhook.state.store import AgentStatus, StateReader

log = logging.getLogger("karta_admission.state")

# How often a worker looks whether the agent published new definitions or a new status.
CHECK_INTERVAL_SECONDS = 0.2
# A pod whose owner was created a moment ago may be admitted before the agent published the owner:
# one request thread at a time waits this long for it (a bound, so that made-up owners cost little).
DEFAULT_MISS_WAIT_SECONDS = 0.25
MISS_POLL_SECONDS = 0.01
PLANS_REMEMBERED = 2048
# An agent that has not written its status for this long is said to be silent in /readyz details.
HEARTBEAT_STALE_SECONDS = 60.0

PlanKey = tuple[GVK, str, str, str, str, int]  # kind, namespace, name, uid, resourceVersion, id(definition)


class PublishedDefinitions:
    """The definitions a worker decides with: its base set, with the cluster's Kartas over it."""

    def __init__(self, reader: StateReader, store: DefinitionStore, base: DefinitionSet) -> None:
        self.reader = reader
        self.store = store
        self.base = base
        self.version = 0
        self._checked = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Take the agent's newest definitions if there are any; cheap when nothing changed."""
        now = time.monotonic()
        if now - self._checked < CHECK_INTERVAL_SECONDS:
            return
        self._checked = now
        if self.reader.definitions_version() == self.version:
            return
        with self._lock:  # one thread reloads; the others keep the set they have
            version, kartas = self.reader.definitions()
            if version == self.version:
                return
            cluster: list[KartaDefinition] = []
            for karta in kartas:
                name = str((karta.get("metadata") or {}).get("name") or "")
                try:
                    cluster.append(parse_definition(karta, f"cluster:{name}"))
                except DefinitionError as exc:  # the agent accepted it: a version skew at most
                    log.warning("Karta %r published by the agent is refused here: %s", name, exc)
            self.store.replace(DefinitionSet([*(c.definition for c in self.base), *cluster]))
            self.version = version


class PublishedReadiness:
    """A worker's readiness and details from the agent's status.

    Not ready until the agent's first sync (definitions and owners listed). Once ready, a worker stays
    ready while a restarted agent lists again (what was published keeps serving): taking every replica
    out of the Service at once would refuse every Ray object under failurePolicy Fail.
    """

    def __init__(self, reader: StateReader) -> None:
        self.reader = reader
        self._was_ready = False

    def readiness(self) -> tuple[bool, str]:
        status = self.reader.status()
        if status is None:
            return self._was_ready, "cluster agent: not started yet"
        if status.ready:
            self._was_ready = True
        return status.ready or self._was_ready, f"cluster agent: {status.reason}"

    def details(self) -> list[str]:
        """Conditions that do not make the server unready, e.g. the gang scheduler's CRD not installed."""
        status = self.reader.status()
        if status is None:
            return ["cluster agent: no state published"] if self._was_ready else []
        found = list(status.details)
        if not status.ready and self._was_ready:
            found.append(f"cluster agent: listing again ({status.reason}); serving with what it published")
        silent = time.time() - status.heartbeat
        if silent > HEARTBEAT_STALE_SECONDS:
            found.append(f"cluster agent: silent for {silent:.0f} s; serving with the state it last published")
        return found


class PublishedGangs:
    """GangIndex (webhook.gang.state) over the owners the agent published."""

    def __init__(
        self,
        reader: StateReader,
        store: DefinitionStore,
        gang: GangSettings,
        *,
        miss_wait_seconds: float = DEFAULT_MISS_WAIT_SECONDS,
        on_miss: Any = None,
    ) -> None:
        self.reader = reader
        self.store = store
        self.gang_settings = gang
        self.scheduler = scheduler_of(gang)
        self.miss_wait_seconds = miss_wait_seconds
        self.on_miss = on_miss or (lambda reason: None)
        self._plans: OrderedDict[PlanKey, GangPlan] = OrderedDict()
        self._lock = threading.Lock()
        self._waiter = threading.Semaphore(1)

    def gang(self, namespace: str, owner: Mapping[str, Any]) -> GangLookup:
        kind = GVK.of(owner)
        name = str(owner.get("name") or "")
        deadline = time.monotonic() + self.miss_wait_seconds
        waiting = False
        try:
            while True:
                stored, miss = self._owner(kind, namespace, name, owner)
                if miss not in ("absent", "uid") or time.monotonic() >= deadline:
                    break
                # Wait for the agent to publish the owner; one waiting thread at a time.
                if not waiting and not self._waiter.acquire(blocking=False):
                    break
                waiting = True
                time.sleep(MISS_POLL_SECONDS)
        finally:
            if waiting:
                self._waiter.release()
        if miss is not None or stored is None:
            self.on_miss(miss or "absent")
            return GangLookup(None, miss)
        plan = self._plan(kind, stored)
        if plan is None:
            self.on_miss("stale")
            return GangLookup(None, "stale")
        return GangLookup(ClusterGang(plan, self.group_object_status(namespace, plan.group_object_name)))

    def _owner(self, kind: GVK, namespace: str, name: str, owner: Mapping[str, Any]) -> tuple[Any, str | None]:
        stored = self.reader.object(kind, namespace, name)
        if stored is None:
            return None, "absent"
        uid = owner.get("uid")
        if uid and stored.uid and stored.uid != uid:
            return None, "uid"  # a re-created owner of the same name, not published yet
        return stored, None

    def _plan(self, kind: GVK, stored: Any) -> GangPlan | None:
        compiled = self.store.current.for_kind(kind)
        if compiled is None:
            return None  # the kind lost its definition since the agent published the object
        meta = stored.body.get("metadata") or {}
        key: PlanKey = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""), stored.uid,
                        stored.resource_version, id(compiled.definition))  # fmt: skip
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        try:
            plan = plan_gang(compiled.resolve(stored.body), self.gang_settings)
        except Exception as exc:  # an object the core cannot digest gets no keys, and no traceback per pod
            log.exception("cannot compute the gang of %s %s/%s", kind, key[1], key[2])
            plan = GangPlan(self.scheduler, None, None, "", {}, None,
                            Withheld("internal-error", f"internal error: {type(exc).__name__}"))  # fmt: skip
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > PLANS_REMEMBERED:
                self._plans.popitem(last=False)
        return plan

    def group_object_status(self, namespace: str, name: str | None) -> GroupObjectStatus:
        """Whether the group object of that name can be relied on (see GroupObjectStatus)."""
        if name is None:
            return GroupObjectStatus.NOT_NEEDED
        status: AgentStatus | None = self.reader.status()
        if status is None or not status.group_objects_managed or status.group_kind is None:
            return GroupObjectStatus.UNMANAGED
        if status.group_kind_served is None or not status.group_objects_synced:
            return GroupObjectStatus.UNKNOWN
        if not status.group_kind_served:
            return GroupObjectStatus.CRD_MISSING
        group, version, kind = status.group_kind.split("/", 2)
        # The agent publishes only the group objects it did not create.
        foreign = self.reader.object(GVK(group, version, kind), namespace, name) is not None
        return GroupObjectStatus.FOREIGN if foreign else GroupObjectStatus.EXPECTED
