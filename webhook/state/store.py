"""The cluster state file: one SQLite database that the agent writes and the server's workers read.

One writer (the agent process, webhook.cluster.agent), any number of readers (gunicorn workers, each
thread with its own read-only connection). WAL mode lets readers read while the agent writes; every
change is one transaction, so a reader sees a whole list or none of it. Durability is not wanted (the
file lives in an emptyDir and is rebuilt from the API server at every start), so nothing is synced.

Tables:
- `objects`: the Kubernetes objects the workers need, trimmed (no status, no managedFields, no
  last-applied annotation): the owners of Ray pods, and the group objects of other managers.
- `meta`: `definitions` (the cluster's Karta objects in force, with a version that grows on every
  change) and `status` (the agent's readiness, details and heartbeat).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from webhook.karta.model import GVK

STATE_FILE = "cluster-state.sqlite"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    updated REAL NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_by_age ON objects (kind, updated);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def kind_key(kind: GVK) -> str:
    return f"{kind.group}/{kind.version}/{kind.kind}"


def trimmed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a worker reads of an object: everything but its status and bookkeeping."""
    body = {k: v for k, v in obj.items() if k != "status"}
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        meta = {k: v for k, v in meta.items() if k != "managedFields"}
        annotations = meta.get("annotations")
        if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
            meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        body["metadata"] = meta
    return body


@dataclass(frozen=True)
class StoredObject:
    uid: str
    resource_version: str
    body: dict[str, Any]


@dataclass(frozen=True)
class AgentStatus:
    """What the agent says of itself; workers answer /readyz and choose gang keys from it."""

    ready: bool
    reason: str
    details: tuple[str, ...] = ()
    # The configured scheduler's group object kind ("group/version/Kind"), whether the cluster serves
    # it (None: not known yet), and whether its objects have been listed once.
    group_kind: str | None = None
    group_kind_served: bool | None = None
    group_objects_synced: bool = False
    # A group-object controller runs in this installation (the agent's, leader-elected).
    group_objects_managed: bool = False
    heartbeat: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> AgentStatus:
        data = orjson.loads(raw)
        data["details"] = tuple(data.get("details") or ())
        return cls(**data)


def _connect_for_writing(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.executescript(_SCHEMA)
    return connection


class StateWriter:
    """The agent's side. Thread-safe: every watch thread writes through one connection under a lock."""

    def __init__(self, directory: Path) -> None:
        """Opens the file in place: the workers keep their connections to it across agent restarts.

        What an earlier agent published stays until this one replaces it (each kind at its first list,
        the definitions after the first list of the Kartas), so workers keep serving meanwhile."""
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / STATE_FILE
        self._connection = _connect_for_writing(self.path)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def _transaction(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                for sql, parameters in statements:
                    cursor.execute(sql, parameters)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    @staticmethod
    def _row(kind: GVK, obj: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        meta = obj.get("metadata") or {}
        return (
            "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                kind_key(kind),
                str(meta.get("namespace") or ""),
                str(meta.get("name") or ""),
                str(meta.get("uid") or ""),
                str(meta.get("resourceVersion") or ""),
                time.time(),
                orjson.dumps(trimmed(obj)),
            ),
        )

    def replace_objects(self, kind: GVK, objects: Iterable[Mapping[str, Any]]) -> None:
        """Every object of a kind at once (a full list): the old ones go in the same transaction."""
        rows = [self._row(kind, obj) for obj in objects]
        self._transaction([("DELETE FROM objects WHERE kind = ?", (kind_key(kind),)), *rows])

    def put_object(self, kind: GVK, obj: Mapping[str, Any]) -> None:
        self._transaction([self._row(kind, obj)])

    def delete_object(self, kind: GVK, namespace: str, name: str, uid: str = "") -> None:
        """Remove an object; with uid, only if the stored one has it (a late delete of an older object)."""
        if uid:
            sql = "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ? AND uid IN (?, '')"
            self._transaction([(sql, (kind_key(kind), namespace, name, uid))])
        else:
            sql = "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?"
            self._transaction([(sql, (kind_key(kind), namespace, name))])

    def evict_oldest(self, kind: GVK, keep: int) -> int:
        """Keep the `keep` most recently updated objects of a kind; how many were dropped."""
        excess = self.count(kind) - keep
        if excess <= 0:
            return 0
        sql = "DELETE FROM objects WHERE rowid IN (SELECT rowid FROM objects WHERE kind = ? ORDER BY updated LIMIT ?)"
        self._transaction([(sql, (kind_key(kind), excess))])
        return excess

    def count(self, kind: GVK) -> int:
        with self._lock:
            (count,) = self._connection.execute(
                "SELECT COUNT(*) FROM objects WHERE kind = ?", (kind_key(kind),)
            ).fetchone()
        return int(count)

    def drop_kind(self, kind: GVK) -> None:
        self._transaction([("DELETE FROM objects WHERE kind = ?", (kind_key(kind),))])

    def keep_only_kinds(self, kinds: Iterable[GVK]) -> None:
        """Drop the objects of every other kind (an earlier agent watched kinds this one does not)."""
        keys = [kind_key(kind) for kind in kinds]
        marks = ", ".join("?" * len(keys))
        self._transaction([(f"DELETE FROM objects WHERE kind NOT IN ({marks})", tuple(keys))])  # noqa: S608

    def set_definitions(self, kartas: Iterable[Mapping[str, Any]]) -> int:
        """The cluster's Karta objects in force (one per root kind); the version workers compare.

        Unchanged content keeps its version; a new one is the clock in nanoseconds, so it differs from
        every version an earlier agent published into the same file."""
        listed = list(kartas)
        with self._lock:
            row = self._connection.execute("SELECT value FROM meta WHERE key = 'definitions'").fetchone()
        if row is not None:
            published = orjson.loads(row[0])
            if published["kartas"] == listed:
                return int(published["version"])
        version = time.time_ns()
        value = orjson.dumps({"version": version, "kartas": listed})
        self._transaction([
            ("INSERT OR REPLACE INTO meta VALUES ('definitions', ?)", (value,)),
            ("INSERT OR REPLACE INTO meta VALUES ('definitions_version', ?)", (str(version).encode(),)),
        ])  # fmt: skip
        return version

    def set_status(self, status: AgentStatus) -> None:
        self._transaction([("INSERT OR REPLACE INTO meta VALUES ('status', ?)", (status.encode(),))])


class StateReader:
    """A worker's side: read-only connections, one per thread (SQLite connections are not shared)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection | None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            if not self.path.exists():
                return None  # the agent has not written yet
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0)
            self._local.connection = connection
        return connection

    def _meta(self, key: str) -> bytes | None:
        connection = self._connection()
        if connection is None:
            return None
        row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def status(self) -> AgentStatus | None:
        raw = self._meta("status")
        return AgentStatus.decode(raw) if raw is not None else None

    def definitions_version(self) -> int:
        """Grows with every change of the cluster's definitions; 0 before the agent published any."""
        raw = self._meta("definitions_version")
        return int(raw) if raw is not None else 0

    def definitions(self) -> tuple[int, list[dict[str, Any]]]:
        """(version, the cluster's Karta objects in force); version 0 before the agent published any."""
        raw = self._meta("definitions")
        if raw is None:
            return 0, []
        data = orjson.loads(raw)
        return int(data["version"]), list(data["kartas"])

    def object(self, kind: GVK, namespace: str, name: str) -> StoredObject | None:
        connection = self._connection()
        if connection is None:
            return None
        row = connection.execute(
            "SELECT uid, resource_version, body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (kind_key(kind), namespace, name),
        ).fetchone()
        if row is None:
            return None
        return StoredObject(str(row[0]), str(row[1]), orjson.loads(row[2]))

    def count(self, kind: GVK) -> int:
        connection = self._connection()
        if connection is None:
            return 0
        (count,) = connection.execute("SELECT COUNT(*) FROM objects WHERE kind = ?", (kind_key(kind),)).fetchone()
        return int(count)
