"""A Kubernetes API emulator for the cluster-edge tests, spoken to over HTTP by the real client.

kmock's KubernetesEmulator keeps objects in memory and serves list, watch, get, create, patch and
delete. This subclass adds what the code under test relies on in a real API server:
uid, resourceVersion and creationTimestamp on every object, replace (PUT) and patches with
resourceVersion preconditions (409 on conflict), paginated lists (limit/continue) with label
selectors, and watches that resume from a resourceVersion (410 Gone once that history is compacted).
Tests steer it: expire or drop the open watches, hold new watches, make the next requests fail.

The emulator runs its asyncio loop in a thread; EmulatedCluster gives tests a synchronous handle.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import enums, rendering
from kubernetes import client as k8s
from prometheus_client import REGISTRY

from tests.reviews import ray_pod
from webhook.cluster.client import Resource
from webhook.cluster.reflector import WatchSettings
from webhook.karta.model import GVK

# Test-side control messages put on a resource's event bus.
EXPIRE = "expire"  # end open watch streams cleanly, as a server-side watch timeout does
DROP = "drop"  # cut open watch connections without a word


@dataclass(frozen=True)
class Kind(Resource):
    """A resource the emulator serves: what discovery says about it, and kmock's handle on it."""

    @property
    def ref(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)


RAYCLUSTERS = Kind("ray.io", "v1", "rayclusters", "RayCluster", True)
RAYSERVICES = Kind("ray.io", "v1", "rayservices", "RayService", True)
RAYJOBS = Kind("ray.io", "v1", "rayjobs", "RayJob", True)
KARTAS = Kind("run.ai", "v1alpha1", "kartas", "Karta", False)
POLICYREPORTS = Kind("wgpolicyk8s.io", "v1alpha2", "policyreports", "PolicyReport", True)
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease", True)
RAY = (RAYCLUSTERS, RAYSERVICES, RAYJOBS)
# The gang schedulers' group objects (tests/data/corpus/schedulers).
COSCHEDULING_PODGROUPS = Kind("scheduling.x-k8s.io", "v1alpha1", "podgroups", "PodGroup", True)
VOLCANO_PODGROUPS = Kind("scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup", True)
KAI_PODGROUPS = Kind("scheduling.run.ai", "v2alpha2", "podgroups", "PodGroup", True)
PODGROUPS = (COSCHEDULING_PODGROUPS, VOLCANO_PODGROUPS, KAI_PODGROUPS)
ALL = (*RAY, KARTAS, POLICYREPORTS, LEASES, *PODGROUPS)


def _status(code: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details={})


def _labels_match(obj: dict[str, Any], selector: str | None) -> bool:
    """Equality-based label selectors (k=v, k!=v, k), comma-separated: what the client sends here."""
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for raw_term in selector.split(","):
        term = raw_term.strip()
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    _version: int = attrs.field(default=0, init=False)
    _clock: datetime.datetime = attrs.field(
        factory=lambda: datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC), init=False
    )
    # Per resource: every event as (resourceVersion, event); watches resume from it.
    _history: dict[Any, list[tuple[int, dict[str, Any]]]] = attrs.field(factory=lambda: defaultdict(list), init=False)
    _compacted: int = attrs.field(default=0, init=False)
    _gates: dict[Any, asyncio.Event] = attrs.field(factory=dict, init=False)
    _faults: list[tuple[Callable[[rendering.Request], bool], kmock.KubernetesError]] = attrs.field(
        factory=list, init=False
    )

    # --- bookkeeping ---

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _now(self) -> str:
        # One second per write: creation order shows in creationTimestamp, as on a real server.
        self._clock += datetime.timedelta(seconds=1)
        return self._clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    async def _publish(self, resource: Any, event: dict[str, Any]) -> None:
        version = int(event["object"]["metadata"]["resourceVersion"])
        self._history[resource].append((version, event))
        await self._buses[resource].put(event)

    def _stored(self, request: rendering.Request) -> kmock.Object | None:
        key: Any = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        stored: kmock.Object = self._objects[key]
        return stored

    @staticmethod
    def _precondition(stored: kmock.Object, body: Any) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        current = stored.raw["metadata"]["resourceVersion"]
        if wanted and str(wanted) != str(current):
            raise _status(409, "Conflict", f"the object has been modified (resourceVersion {wanted} != {current})")

    # --- request handling ---

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        for index, (matches, error) in enumerate(self._faults):
            if matches(request):
                del self._faults[index]
                raise error
        if request.resource is None:
            return await super()._handle(request)
        action, method = request.action, request.method
        if method == enums.method.PUT and request.name:
            return await self._replace(request)
        if action == enums.action.UPDATE and request.name and isinstance(request.data, dict):
            return await self._patch(request)
        if action == enums.action.CREATE and isinstance(request.data, dict):
            async with self._lock:
                meta = request.data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.pop("resourceVersion", None)
                meta["uid"] = str(uuid.uuid4())
                meta["resourceVersion"] = self._next_version()
                meta["creationTimestamp"] = self._now()
                meta.setdefault("generation", 1)
                if request.namespace:
                    meta["namespace"] = request.namespace
        if action == enums.action.DELETE and request.name:
            async with self._lock:
                stored = self._stored(request)
                if stored is not None:
                    # The DELETED event carries a new resourceVersion, as on a real server.
                    stored.patch({"metadata": {"resourceVersion": self._next_version()}})
        response = await super()._handle(request)
        if action == enums.action.CREATE and response.status == 200 and not response.prepared:
            response.set_status(201)  # what a real server answers to a create
        return response

    async def _replace(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            stored = self._stored(request)
            if stored is None:
                raise kmock.KubernetesObjectNotFoundError()
            self._precondition(stored, request.data)
            body = dict(request.data)
            old_meta = stored.raw["metadata"]
            meta = dict(body.get("metadata") or {})
            for key in ("uid", "creationTimestamp", "namespace", "name"):
                if key in old_meta:
                    meta[key] = old_meta[key]
            meta["resourceVersion"] = self._next_version()
            body["metadata"] = meta
            stored.history.append(body)
            await self._publish(request.resource, {"type": "MODIFIED", "object": stored.raw})
            return aiohttp.web.json_response(stored.raw)

    async def _patch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            stored = self._stored(request)
            if stored is None:
                raise kmock.KubernetesObjectNotFoundError()
            self._precondition(stored, request.data)
            patch = dict(request.data)
            meta = dict(patch.get("metadata") or {})
            for key in ("uid", "creationTimestamp", "namespace", "name"):
                meta.pop(key, None)
            meta["resourceVersion"] = self._next_version()
            patch["metadata"] = meta
            stored.patch(patch)
            await self._publish(request.resource, {"type": "MODIFIED", "object": stored.raw})
            return aiohttp.web.json_response(stored.raw)

    def _live(self, request: rendering.Request) -> list[dict[str, Any]]:
        items = []
        for (resource, namespace, _), obj in self._objects.items():
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if _labels_match(obj.raw, request.params.get("labelSelector")):
                items.append(obj.raw)
        return sorted(items, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._live(request)
            version = str(self._version)
        start = 0
        token = request.params.get("continue")
        if token:
            state = json.loads(base64.b64decode(token))
            start, version = state["start"], state["rv"]
        limit = int(request.params.get("limit") or 0)
        page = items[start : start + limit] if limit else items[start:]
        meta: dict[str, Any] = {"resourceVersion": version}
        if limit and start + limit < len(items):
            state = {"start": start + limit, "rv": version}
            meta["continue"] = base64.b64encode(json.dumps(state).encode()).decode()
        resource = request.resource
        assert resource is not None
        kind_name = getattr(self._resources.get(resource), "kind", None) or "Object"
        return {
            "apiVersion": f"{resource.group}/{resource.version}" if resource.group else resource.version,
            "kind": f"{kind_name}List",
            "metadata": meta,
            "items": page,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now
        resource = request.resource
        assert resource is not None
        gate = self._gates.get(resource)
        if gate is not None:
            await gate.wait()
        bus = self._buses[resource]
        since = request.params.get("resourceVersion") or ""
        async with self._lock:
            marker = await bus.mark()  # subscribe before the snapshot: nothing falls in between
            if since.isdigit() and int(since) > 0:
                if int(since) < self._compacted:
                    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410}
                    gone["reason"] = "Expired"
                    gone["message"] = f"too old resource version: {since} ({self._compacted})"
                    replay = [{"type": "ERROR", "object": gone}]
                else:
                    replay = [e for v, e in self._history[resource] if v > int(since) and self._wanted(request, e)]
            else:
                replay = [{"type": "ADDED", "object": o} for o in self._live(request)]
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            async for item in bus.stream(since=marker):
                await queue.put(item)

        pumping = asyncio.create_task(pump())
        try:
            for event in replay:
                yield event
                if event["type"] == "ERROR":
                    return
            raw = request._raw_request
            while True:
                try:
                    item: Any = await asyncio.wait_for(queue.get(), 0.2)  # a queue get is safe to time out
                except TimeoutError:
                    if raw is None or raw.transport is None or raw.transport.is_closing():
                        return  # the client went away
                    continue
                if item == EXPIRE:
                    return
                if item == DROP:
                    if raw is not None and raw.transport is not None:
                        raw.transport.abort()
                    return
                if isinstance(item, dict) and self._wanted(request, item):
                    yield item
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
            await bus.unmark(marker)

    @staticmethod
    def _wanted(request: rendering.Request, event: dict[str, Any]) -> bool:
        meta = event["object"].get("metadata") or {}
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        return _labels_match(event["object"], request.params.get("labelSelector"))

    # --- steering (called in the loop) ---

    async def control(self, resource: Any, message: str) -> None:
        await self._buses[resource].put(message)

    def compact(self) -> None:
        """Forget the history so far: a watch resuming from an older resourceVersion gets 410 Gone."""
        self._compacted = self._version
        for events in self._history.values():
            events.clear()

    def hold_watches(self, resource: Any) -> None:
        self._gates[resource] = asyncio.Event()

    def release_watches(self, resource: Any) -> None:
        gate = self._gates.pop(resource, None)
        if gate is not None:
            gate.set()

    def fail(self, matches: Callable[[rendering.Request], bool], error: kmock.KubernetesError, times: int) -> None:
        self._faults.extend([(matches, error)] * times)


class EmulatedCluster:
    """The emulator on a local port, its loop in a thread; synchronous helpers for the tests."""

    def __init__(self, kinds: Iterable[Kind] = ALL) -> None:
        self.kinds = {(k.api_version, k.kind): k for k in kinds}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="emulator", daemon=True)
        self._clients: list[k8s.ApiClient] = []
        self.emulator: ClusterEmulator
        self._server: kmock.Server
        self.url = ""

    def __enter__(self) -> EmulatedCluster:
        self._thread.start()

        async def start() -> None:
            self.emulator = ClusterEmulator()
            for kind in self.kinds.values():
                self._declare(kind)
            await self.emulator.__aenter__()
            self._server = kmock.Server(self.emulator)
            await self._server.__aenter__()

        self.run(start())
        self.url = f"http://{self._server.host}:{self._server.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self._clients:
            client.close()  # type: ignore[no-untyped-call]

        async def stop() -> None:
            for kind in list(self.kinds.values()):
                await self.emulator.control(kind.ref, EXPIRE)
            await self._server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)

        self.run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def call(self, function: Callable[[], Any]) -> Any:
        async def wrapped() -> Any:
            return function()

        return self.run(wrapped())

    def _declare(self, kind: Kind) -> None:
        self.emulator.resources[kind.ref] = kmock.ResourceInfo(
            kind=kind.kind,
            singular=kind.kind.lower(),
            namespaced=kind.namespaced,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )

    def install(self, kind: Kind) -> None:
        """Install a CRD later on (declared as served from now on)."""
        self.kinds[(kind.api_version, kind.kind)] = kind
        self.call(lambda: self._declare(kind))

    # --- clients ---

    def client(self) -> k8s.ApiClient:
        configuration = k8s.Configuration(host=self.url)
        client = k8s.ApiClient(configuration)
        self._clients.append(client)
        return client

    def kubeconfig(self, directory: Path, *, extra_contexts: dict[str, str] | None = None) -> Path:
        """A kubeconfig file whose current context points at the emulator."""
        servers = {"emulator": self.url, **(extra_contexts or {})}
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": n, "cluster": {"server": s}} for n, s in servers.items()],
            "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": n, "context": {"cluster": n, "user": "tester"}} for n in servers],
            "current-context": "emulator",
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(document))
        return path

    # --- objects, through the API as a user would write them ---

    def _kind_of(self, obj: dict[str, Any]) -> Kind:
        return self.kinds[(obj["apiVersion"], obj["kind"])]

    def _api(self) -> k8s.CustomObjectsApi:
        if not hasattr(self, "_objects_api"):
            self._objects_api = k8s.CustomObjectsApi(self.client())
        return self._objects_api

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = self._kind_of(obj)
        if kind.namespaced:
            namespace = obj.setdefault("metadata", {}).setdefault("namespace", "default")
            created = self._api().create_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, obj)
        else:
            created = self._api().create_cluster_custom_object(kind.group, kind.version, kind.plural, obj)
        assert isinstance(created, dict)
        return created

    def patch(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        kind, meta = self._kind_of(obj), obj["metadata"]
        if kind.namespaced:
            result = self._api().patch_namespaced_custom_object(
                kind.group, kind.version, meta["namespace"], kind.plural, meta["name"], patch
            )
        else:
            result = self._api().patch_cluster_custom_object(kind.group, kind.version, kind.plural, meta["name"], patch)
        assert isinstance(result, dict)
        return result

    def delete(self, obj: dict[str, Any]) -> None:
        kind, meta = self._kind_of(obj), obj["metadata"]
        if kind.namespaced:
            self._api().delete_namespaced_custom_object(
                kind.group, kind.version, meta["namespace"], kind.plural, meta["name"]
            )
        else:
            self._api().delete_cluster_custom_object(kind.group, kind.version, kind.plural, meta["name"])

    def objects(self, kind: Kind) -> list[dict[str, Any]]:
        """What is stored now (read in the loop, not through the API)."""

        def read() -> list[dict[str, Any]]:
            return [
                dict(obj.raw)
                for (resource, _, _), obj in self.emulator.objects.items()
                if resource == kind.ref and not obj.deleted
            ]

        result: list[dict[str, Any]] = self.call(read)
        return result

    def requests(self, action: str | None, kind: Kind, method: str | None = None) -> int:
        """Requests that reached a resource, by Kubernetes action (list, watch, fetch, create, update,
        delete; None for replace, which kmock leaves unnamed) and optionally HTTP method."""
        wanted = enums.action(action.upper()) if action else None
        wanted_method = enums.method(method.upper()) if method else None

        def count() -> int:
            return sum(
                1
                for r in self.emulator
                if r.resource == kind.ref
                and r.action == wanted
                and (wanted_method is None or r.method == wanted_method)
            )

        result: int = self.call(count)
        return result

    def total_requests(self) -> int:
        """Every request that reached the emulator so far, whatever it was for."""
        result: int = self.call(lambda: sum(1 for _ in self.emulator))
        return result

    # --- steering ---

    def expire_watches(self, kind: Kind) -> None:
        self.run(self.emulator.control(kind.ref, EXPIRE))

    def drop_watches(self, kind: Kind) -> None:
        self.run(self.emulator.control(kind.ref, DROP))

    def compact(self) -> None:
        self.call(self.emulator.compact)

    def hold_watches(self, kind: Kind) -> None:
        self.call(lambda: self.emulator.hold_watches(kind.ref))

    def release_watches(self, kind: Kind) -> None:
        self.call(lambda: self.emulator.release_watches(kind.ref))

    def clear_faults(self) -> None:
        self.call(self.emulator._faults.clear)

    def fail_next(
        self, action: str | None, kind: Kind, code: int = 500, times: int = 1, method: str | None = None
    ) -> None:
        """The next `times` requests of this action (None: replace) on this resource get an error status."""
        wanted = enums.action(action.upper()) if action else None
        wanted_method = enums.method(method.upper()) if method else None

        def matches(request: rendering.Request) -> bool:
            return (
                request.action == wanted
                and request.resource == kind.ref
                and (wanted_method is None or request.method == wanted_method)
            )

        error = _status(code, "InternalError" if code >= 500 else "Failure", f"injected {code}")
        self.call(lambda: self.emulator.fail(matches, error, times))

    def watchers(self, kind: Kind) -> int:
        """Open watch streams on a resource (consumers of its event bus)."""
        result: int = self.call(lambda: self.emulator._buses[kind.ref].consumer_count)
        return result


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, message: str = "") -> Any:
    """Poll a condition (no fixed sleeps in tests); its truthy value, or AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}")
        time.sleep(0.01)


# --- builders ---------------------------------------------------------------------------------

FAST = WatchSettings(
    page_size=500,
    missing_retry_seconds=0.2,
    backoff_initial_seconds=0.05,
    backoff_max_seconds=0.2,
    connect_timeout_seconds=2,
    read_timeout_seconds=10,
)
RAYCLUSTER_KIND = GVK("ray.io", "v1", "RayCluster")


def metric(name: str, **labels: str) -> float:
    """A sample of the default registry (0 when never set), for before/after comparisons."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def builtin_karta(file: str = "raycluster.yaml") -> dict[str, Any]:
    text = resources.files("webhook").joinpath("definitions", file).read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def raycluster_karta(name: str, *, head_pods: int = 1) -> dict[str, Any]:
    """The built-in RayCluster definition as a cluster Karta; head_pods changes the gang size it gives."""
    karta = builtin_karta()
    karta["metadata"] = {**karta["metadata"], "name": name}
    head = next(c for c in karta["spec"]["structureDefinition"]["childComponents"] if c["name"] == "head")
    head["scaleDefinition"]["replicasPath"] = str(head_pods)
    return karta


def worker_group(name: str, replicas: int, *, min_replicas: int = 0, max_replicas: int = 10) -> dict[str, Any]:
    return {
        "groupName": name,
        "replicas": replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "numOfHosts": 1,
        "rayStartParams": {},
        "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.52.0"}]}},
    }


def raycluster(
    name: str, *groups: dict[str, Any], namespace: str = "default", owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A RayCluster as the API server stores it (CRD defaults filled in); owner: its controller object."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": metadata,
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.52.0"}]}},
            },
            "workerGroupSpecs": list(groups),
        },
    }


def pod_of(cluster: dict[str, Any], node_type: str = "worker", group: str = "small-group") -> dict[str, Any]:
    """A Ray pod of a stored RayCluster, owned by it (uid included), as KubeRay creates it."""
    meta = cluster["metadata"]
    pod = ray_pod(node_type, group, meta["name"], namespace=meta["namespace"])
    pod["metadata"]["ownerReferences"][0]["uid"] = meta["uid"]
    return pod
