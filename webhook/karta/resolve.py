"""Resolve a workload object through its Karta definition into components and instances.

Reproduces Karta's extraction semantics (reference/karta.md §2.2): every output of a path counts;
paths of a multi-instance component are zipped with the instance ids by position and a count
mismatch is an error; scale lists are padded to the longest of the three; null and numbers convert as
Go's JSON decoding would. On top of Karta, each value keeps where in the object it came from, so that
a rule can point at `spec.workerGroupSpecs[1].replicas`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.karta import jqengine
from webhook.karta.jqengine import ConversionError, PathBatch, PathOutcome
from webhook.karta.model import GVK, Component, KartaDefinition

PathParts = tuple[str | int, ...]
_INT32_MAX = 2**31 - 1

# Scale, PodView, Instance and the resolved component and workload are built for every review, and a
# frozen dataclass takes three times as long to build: they are plain slotted dataclasses that nothing
# assigns to after resolution builds them.


@dataclass(slots=True)
class Scale:
    replicas: int | None
    min_replicas: int | None
    max_replicas: int | None

    @property
    def effective_min(self) -> int:
        """Karta's gang contribution: minReplicas when positive, else replicas when positive, else 0."""
        if self.min_replicas is not None and self.min_replicas > 0:
            return self.min_replicas
        if self.replicas is not None and self.replicas > 0:
            return self.replicas
        return 0


@dataclass(slots=True)
class PodView:
    """The pod definition of one instance: spec and metadata, and where the spec sits in the object."""

    spec: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    spec_location: PathParts | None


@dataclass(slots=True)
class Instance:
    component: str
    id: str  # "" for a component without instanceIdPath
    index: int
    location: PathParts | None  # the instance's own place in the object, e.g. spec.workerGroupSpecs[1]
    id_location: PathParts | None  # where the id came from, e.g. spec.workerGroupSpecs[1].groupName
    scale: Scale | None
    scale_locations: Mapping[str, PathParts]  # "replicas"/"minReplicas"/"maxReplicas" -> field location
    pods_per_replica: int | None
    pod: PodView | None
    # The instance runs no pods whatever its scale says (policy hint suspendedPath; Ray: suspend: true).
    suspended: bool = False

    @property
    def label(self) -> str:
        """How messages name the instance: `worker group "small-group"`, or the component alone."""
        return f'{self.component} group "{self.id}"' if self.id else self.component

    def field_location(self, scale_field: str) -> PathParts | None:
        """Where a scale value came from, or failing that the instance itself."""
        return self.scale_locations.get(scale_field, self.location)


@dataclass(slots=True)
class ResolvedComponent:
    component: Component
    instances: tuple[Instance, ...]
    errors: tuple[str, ...] = ()
    duplicate_ids: tuple[str, ...] = ()

    def by_id(self) -> dict[str, Instance]:
        """Instances keyed by id; duplicates collapse, the last one wins (Karta stores them in a map)."""
        return {i.id: i for i in self.instances}


@dataclass(slots=True)
class ResolvedWorkload:
    definition: KartaDefinition
    obj: Mapping[str, Any]
    components: Mapping[str, ResolvedComponent]
    autoscaling: bool
    errors: tuple[str, ...] = field(default=())
    # Every instance of every component, in component order: several rules walk them all.
    _instances: tuple[Instance, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._instances = tuple(i for rc in self.components.values() for i in rc.instances)

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") or {}
        return str(meta.get("name") or meta.get("generateName") or "")

    @property
    def namespace(self) -> str:
        return str((self.obj.get("metadata") or {}).get("namespace") or "")

    def all_errors(self) -> list[str]:
        out = list(self.errors)
        for rc in self.components.values():
            out.extend(f"component '{rc.component.name}': {e}" for e in rc.errors)
        return out

    def instances(self) -> tuple[Instance, ...]:
        return self._instances

    def subtree_scale(self, component_name: str, instance_id: str | None = None) -> int:
        """Karta's CalculateSubtreeScale: the gang size (minMember) of a component's subtree."""
        definition = self.definition
        if not definition.has_scale_definition:
            return self._leaf_count(component_name)
        own = 0
        resolved = self.components.get(component_name)
        if resolved is not None and resolved.component.scale is not None:
            instances = resolved.by_id()
            chosen = (
                [instances[instance_id]]
                if instance_id is not None and instance_id in instances
                else (list(instances.values()) if instance_id is None else [])
            )
            own = sum(i.scale.effective_min for i in chosen if i.scale is not None)
        children = definition.children_of(component_name)
        if not children:
            return own
        kids = sum(self.subtree_scale(child.name) for child in children)
        if kids == 0:
            return own
        if own == 0:
            return kids
        return own * kids

    def _leaf_count(self, component_name: str) -> int:
        component = self.definition.component(component_name)
        count = 0
        if component.has_pod_definition:
            resolved = self.components.get(component_name)
            count += len(resolved.by_id()) if component.instance_id_path and resolved else 1
        for child in self.definition.children_of(component_name):
            count += self._leaf_count(child.name)
        return count


@dataclass(frozen=True)
class _Slot:
    """Where a component's path sits in the batch."""

    component: str
    role: str
    index: int


class WorkloadResolver:
    """All workload-side paths of one definition, compiled once, evaluated in one pass per object."""

    def __init__(self, definition: KartaDefinition) -> None:
        self.definition = definition
        expressions: list[str] = []
        self._slots: dict[tuple[str, str], int] = {}

        def add(component: str, role: str, expression: str | None) -> None:
            if expression:
                self._slots[(component, role)] = len(expressions)
                expressions.append(expression)

        for c in definition.components:
            add(c.name, "id", c.instance_id_path)
            if c.spec is not None:
                add(c.name, "template", c.spec.pod_template_spec_path)
                add(c.name, "podSpec", c.spec.pod_spec_path)
                add(c.name, "metadata", c.spec.metadata_path)
                for fragment, path in c.spec.fragments.items():
                    add(c.name, f"fragment:{fragment}", path)
            if c.scale is not None:
                for scale_field, path in c.scale.paths().items():
                    add(c.name, scale_field, path)
            add(c.name, "podsPerReplica", definition.hints.for_component(c.name).pods_per_replica_path)
            add(c.name, "suspended", definition.hints.for_component(c.name).suspended_path)
        add("", "autoscaling", definition.hints.autoscaling_path)
        self._batch = PathBatch(expressions)
        # A component without paths (no ids, pod spec, scale or hints: a RayService's RayCluster) resolves
        # the same for every object: resolved once here and shared, as nothing assigns to resolutions.
        with_paths = {component for component, _ in self._slots}
        self._fixed = {
            c.name: _resolve_component(c, lambda component, role: None, {})
            for c in definition.components
            if c.name not in with_paths
        }

    def resolve(self, obj: Mapping[str, Any]) -> ResolvedWorkload:
        errors: list[str] = []
        kind = GVK.of(obj)
        if kind != self.definition.root_kind:
            errors.append(f"object kind {kind} does not match the definition's root kind {self.definition.root_kind}")
        outcomes = self._batch.run(obj)

        def outcome(component: str, role: str) -> PathOutcome | None:
            index = self._slots.get((component, role))
            return outcomes[index] if index is not None else None

        fixed = self._fixed
        components = {
            c.name: fixed.get(c.name) or _resolve_component(c, outcome, obj) for c in self.definition.components
        }
        autoscaling = False
        auto = outcome("", "autoscaling")
        if auto is not None:
            if auto.error:
                errors.append(f"policy hint autoscalingPath: {auto.error}")
            else:
                autoscaling = bool(auto.values) and auto.values[0] not in (None, False)
        return ResolvedWorkload(self.definition, obj, components, autoscaling, tuple(errors))


def _resolve_component(c: Component, outcome: Any, obj: Mapping[str, Any]) -> ResolvedComponent:
    errors: list[str] = []
    ids: list[str]
    id_locations: Sequence[PathParts | None]
    multi = bool(c.instance_id_path)
    if multi:
        id_outcome: PathOutcome = outcome(c.name, "id")
        if id_outcome.error:
            return ResolvedComponent(c, (), (f"instanceIdPath: {id_outcome.error}",))
        try:
            ids = [jqengine.to_string(v) for v in id_outcome.values]
        except ConversionError as exc:
            return ResolvedComponent(c, (), (f"instanceIdPath: {exc}",))
        if any(i == "" for i in ids):
            return ResolvedComponent(c, (), ("instance id path contained empty string values",))
        id_locations = id_outcome.locations or [None] * len(ids)
    else:
        ids = [""]
        id_locations = [None]
    count = len(ids)

    def aligned(role: str, label: str) -> tuple[list[Any], list[PathParts | None]] | None:
        result: PathOutcome | None = outcome(c.name, role)
        if result is None:
            return None
        if result.error:
            errors.append(f"{label}: {result.error}")
            return None
        if len(result.values) != count:
            errors.append(f"{label}: instance ids count ({count}) does not match results count ({len(result.values)})")
            return None
        locations: list[PathParts | None] = list(result.locations) if result.locations else [None] * count
        return list(result.values), locations

    pods = _pod_views(c, count, aligned)
    scales, scale_locations = _scales(c, count, outcome, errors)
    pods_per_replica: list[int | None] = [None] * count
    ppr = aligned("podsPerReplica", "policy hint podsPerReplicaPath")
    if ppr is not None:
        try:
            pods_per_replica = [jqengine.to_int32(v) for v in ppr[0]]
        except ConversionError as exc:
            errors.append(f"policy hint podsPerReplicaPath: {exc}")
    suspended: list[bool] = [False] * count
    flags = aligned("suspended", "policy hint suspendedPath")
    if flags is not None:
        suspended = [v is True for v in flags[0]]

    instances = []
    holders = _Holders(obj)
    for index, instance_id in enumerate(ids):
        pod = pods[index]
        location = _instance_location(id_locations[index], pod.spec_location if pod else None, multi)
        found = _field_locations(
            holders.at(location), location, scales[index], scale_locations[index], pods_per_replica[index]
        )
        instances.append(
            Instance(
                component=c.name,
                id=instance_id,
                index=index,
                location=location,
                id_location=id_locations[index],
                scale=scales[index],
                scale_locations=found,
                pods_per_replica=pods_per_replica[index],
                pod=pod,
                suspended=suspended[index],
            )
        )
    seen: set[str] = set()
    duplicates = []
    for instance_id in ids:
        if instance_id in seen and instance_id not in duplicates:
            duplicates.append(instance_id)
        seen.add(instance_id)
    return ResolvedComponent(c, tuple(instances), tuple(errors), tuple(duplicates))


def _pod_views(c: Component, count: int, aligned: Any) -> list[PodView | None]:
    views: list[PodView | None] = [None] * count
    if c.spec is None:
        return views
    if c.spec.pod_template_spec_path:
        got = aligned("template", "podTemplateSpecPath")
        if got is not None:
            for i, (template, location) in enumerate(zip(*got, strict=True)):
                if isinstance(template, dict):
                    spec = template.get("spec")
                    views[i] = PodView(
                        spec=spec if isinstance(spec, dict) else None,
                        metadata=template.get("metadata") if isinstance(template.get("metadata"), dict) else None,
                        spec_location=(*location, "spec") if location is not None else None,
                    )
        return views
    if c.spec.pod_spec_path:
        got = aligned("podSpec", "podSpecPath")
        metadata = aligned("metadata", "metadataPath") if c.spec.metadata_path else None
        if got is not None:
            for i, (pod_spec, location) in enumerate(zip(*got, strict=True)):
                meta = metadata[0][i] if metadata is not None else None
                views[i] = PodView(
                    spec=pod_spec if isinstance(pod_spec, dict) else None,
                    metadata=meta if isinstance(meta, dict) else None,
                    spec_location=location,
                )
        return views
    # Fragmented definitions: assemble what the fragments give into a pod-spec-shaped view.
    fragments: dict[str, list[Any]] = {}
    for fragment in c.spec.fragments:
        got = aligned(f"fragment:{fragment}", f"fragmentedPodSpecDefinition.{fragment}")
        if got is not None:
            fragments[fragment] = got[0]
    for i in range(count):
        values = {name: outputs[i] for name, outputs in fragments.items()}
        spec, metadata = _assemble_fragments(values)
        views[i] = PodView(spec=spec or None, metadata=metadata or None, spec_location=None)
    return views


# Fragment -> the pod spec field it gives directly.
_SPEC_FRAGMENTS = {"schedulerNamePath": "schedulerName", "priorityClassNamePath": "priorityClassName"}
_AFFINITY_FRAGMENTS = {"nodeAffinityPath": "nodeAffinity", "podAffinityPath": "podAffinity"}
_METADATA_FRAGMENTS = {"labelsPath": "labels", "annotationsPath": "annotations"}


def _assemble_fragments(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pod spec and metadata from one instance's fragment values (fragment name -> value)."""
    spec: dict[str, Any] = {}
    if "containersPath" in values:
        spec["containers"] = values["containersPath"]
    elif "containerPath" in values:
        spec["containers"] = [values["containerPath"]]
    elif "resourcesPath" in values:
        spec["containers"] = [{"name": "", "resources": values["resourcesPath"]}]
    spec.update({field: values[name] for name, field in _SPEC_FRAGMENTS.items() if name in values})
    affinity = {field: values[name] for name, field in _AFFINITY_FRAGMENTS.items() if name in values}
    if affinity:
        spec["affinity"] = affinity
    metadata = {field: values[name] for name, field in _METADATA_FRAGMENTS.items() if name in values}
    return spec, metadata


def _scales(
    c: Component, count: int, outcome: Any, errors: list[str]
) -> tuple[list[Scale | None], list[dict[str, PathParts]]]:
    scales: list[Scale | None] = [None] * count
    locations: list[dict[str, PathParts]] = [{} for _ in range(count)]
    if c.scale is None or not c.scale.paths():
        return scales, locations
    lists: dict[str, list[int | None]] = {}
    failed = False
    for scale_field in c.scale.paths():
        result: PathOutcome = outcome(c.name, scale_field)
        if result.error:
            errors.append(f"{scale_field}Path: {result.error}")
            failed = True
            continue
        try:
            lists[scale_field] = [jqengine.to_int32(v) for v in result.values]
        except ConversionError as exc:
            errors.append(f"{scale_field}Path: {exc}")
            failed = True
            continue
        if result.locations is not None:
            for i, location in enumerate(result.locations[:count]):
                locations[i][scale_field] = location
    if failed:
        return scales, locations
    longest = max(len(v) for v in lists.values())
    if longest != count:
        errors.append(f"scaleDefinition: instance ids count ({count}) does not match results count ({longest})")
        return [None] * count, [{} for _ in range(count)]

    def at(name: str, i: int) -> int | None:
        values = lists.get(name, [])
        return values[i] if i < len(values) else None

    for i in range(count):
        scales[i] = Scale(at("replicas", i), at("minReplicas", i), at("maxReplicas", i))
    return scales, locations


def _field_locations(
    holder: Any,
    location: PathParts | None,
    scale: Scale | None,
    known: dict[str, PathParts],
    pods_per_replica: int | None = None,
) -> dict[str, PathParts]:
    """Where each scale value sits in the object (holder: what sits at the instance's location).

    A computed value (from a path with arithmetic or defaults) has no location of its own; when the
    instance holds a field named like the scale role with exactly that value, or that value in
    replicas of `pods_per_replica` pods (capped at int32 like the sums of the definitions), that field
    is where it came from. Otherwise rules point at the instance.
    """
    if scale is None or location is None or not isinstance(holder, dict):
        return known
    found = known
    for name, value in (("replicas", scale.replicas), ("minReplicas", scale.min_replicas),
                        ("maxReplicas", scale.max_replicas)):  # fmt: skip
        if value is None or name in known:
            continue
        raw = holder.get(name)
        if type(raw) is not int:  # JSON numbers only: not bool, not float
            continue
        if raw == value or (
            pods_per_replica is not None and pods_per_replica > 1 and min(raw * pods_per_replica, _INT32_MAX) == value
        ):
            if found is known:
                found = dict(known)
            found[name] = (*location, name)
    return found


class _Holders:
    """What sits at each instance's location; instances share their parent list, walked once."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self._obj = obj
        self._parents: dict[PathParts, Any] = {}

    def at(self, location: PathParts | None) -> Any:
        if not location:
            return None
        parent_path = location[:-1]
        parent = self._parents.get(parent_path, _UNSET)
        if parent is _UNSET:
            parent = self._parents[parent_path] = _walk(self._obj, parent_path)
        return _step(parent, location[-1])


_UNSET = object()


def _step(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
        return node[part]
    return None


def _walk(node: Any, path: PathParts) -> Any:
    for part in path:
        node = _step(node, part)
    return node


def _instance_location(id_location: PathParts | None, spec_location: PathParts | None, multi: bool) -> PathParts | None:
    """The instance's place: the common parent of its id field and its pod template."""
    if not multi:
        return None
    if id_location is not None and spec_location is not None:
        # Usually the id is a field of the element the template is in: the prefix is the id's parent.
        parent = id_location[:-1]
        if spec_location[: len(parent)] == parent and spec_location[len(parent) : len(id_location)] != id_location[-1:]:
            return parent
        shared = 0
        for a, b in zip(id_location, spec_location, strict=False):
            if a != b:
                break
            shared += 1
        return id_location[:shared]
    if id_location is not None:
        return id_location[:-1]
    return None
