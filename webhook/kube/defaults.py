"""CRD schema defaulting, done offline the way kube-apiserver does it to a custom resource before admission.

The API server first drops nulls its schema does not allow (unless a default replaces them), then fills
in defaults top-down: a missing property with a default gets a copy of it, and defaults inside that copy,
inside every array item and inside every map value apply too. Only `properties`, `items`,
`additionalProperties`, `default`, `nullable`, `x-kubernetes-preserve-unknown-fields` and
`x-kubernetes-embedded-resource` matter for that, so schemas are cut down to the branches that hold one
of them (`prune_schema`). The packaged data file holds KubeRay's CRDs cut down this way; regenerate it
with `scripts/gen_crd_defaults.py`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Final

CRD_API_VERSION: Final = "apiextensions.k8s.io/v1"
PRESERVE_UNKNOWN_FIELDS: Final = "x-kubernetes-preserve-unknown-fields"
EMBEDDED_RESOURCE: Final = "x-kubernetes-embedded-resource"
PACKAGED_DATA: Final = "crd_defaults.json"
# The API server sets these aside before pruning and defaulting and puts them back after (ObjectMeta
# has its own coercion), at the resource root and in embedded resources: they are left as they are.
_RESOURCE_FIELDS: Final = ("apiVersion", "kind", "metadata")
_FLAGS: Final = ("nullable", PRESERVE_UNKNOWN_FIELDS, EMBEDDED_RESOURCE)

# group/version -> kind -> pruned schema
Schemas = dict[str, dict[str, dict[str, Any]]]


class CRDSchemaError(ValueError):
    """A CustomResourceDefinition whose versions or schemas cannot be read."""


def prune_schema(schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """The part of a structural schema that null pruning and defaulting read; None if nothing in it does."""
    pruned: dict[str, Any] = {}
    preserves_unknown = schema.get(PRESERVE_UNKNOWN_FIELDS) is True
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        kept: dict[str, Any] = {}
        for name, sub in properties.items():
            sub_pruned = prune_schema(sub) if isinstance(sub, Mapping) else None
            if sub_pruned is not None:
                kept[name] = sub_pruned
            elif preserves_unknown:
                # Where unknown fields are kept, a known field still loses its null: it must stay known.
                kept[name] = {}
        if kept:
            pruned["properties"] = kept
    for key in ("items", "additionalProperties"):
        sub = schema.get(key)
        sub_pruned = prune_schema(sub) if isinstance(sub, Mapping) else None
        if sub_pruned is not None:
            pruned[key] = sub_pruned
    # A null default is no default (the API server's Default.Object == nil).
    if schema.get("default") is not None:
        pruned["default"] = schema["default"]
    for flag in _FLAGS:
        if schema.get(flag) is True:
            pruned[flag] = True
    return pruned or None


def _field(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise CRDSchemaError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def defaulting_schemas(crds: Iterable[Mapping[str, Any]]) -> Schemas:
    """Pruned schemas of every served version, by "group/version" and kind; documents that are not CRDs are skipped."""
    schemas: Schemas = {}
    for crd in crds:
        if not isinstance(crd, Mapping) or crd.get("kind") != "CustomResourceDefinition":
            continue
        name = str((crd.get("metadata") or {}).get("name", "?"))
        if crd.get("apiVersion") != CRD_API_VERSION:
            raise CRDSchemaError(
                f"CRD {name}: apiVersion {crd.get('apiVersion')!r} is not supported, only {CRD_API_VERSION}"
            )
        spec = _field(crd, "spec", Mapping, name)
        group = _field(spec, "group", str, f"{name}.spec")
        kind = _field(_field(spec, "names", Mapping, f"{name}.spec"), "kind", str, f"{name}.spec.names")
        for index, version in enumerate(_field(spec, "versions", list, f"{name}.spec")):
            where = f"{name}.spec.versions[{index}]"
            if not isinstance(version, Mapping):
                raise CRDSchemaError(f"{where}: expected a mapping")
            if version.get("served") is not True:
                continue
            version_name = _field(version, "name", str, where)
            schema = _field(_field(version, "schema", Mapping, where), "openAPIV3Schema", Mapping, f"{where}.schema")
            schemas.setdefault(f"{group}/{version_name}", {})[kind] = prune_schema(schema) or {}
    return schemas


class _Node:
    """A pruned schema node, compiled for the walk."""

    __slots__ = ("default", "defaulted", "has_default", "items", "nullable", "properties", "unknown")

    properties: dict[str, _Node | None]  # None: left as it is
    unknown: _Node | None  # for keys not in properties; None where unknown fields are preserved
    items: _Node
    defaulted: tuple[tuple[str, _Node], ...]  # the properties that have a default
    nullable: bool
    has_default: bool
    default: Any


# Known but without anything to default or keep null below: only nulls are dropped there.
_PLAIN = _Node()
_PLAIN.properties, _PLAIN.unknown, _PLAIN.items, _PLAIN.defaulted = {}, _PLAIN, _PLAIN, ()
_PLAIN.nullable, _PLAIN.has_default, _PLAIN.default = False, False, None


def _compile(schema: Mapping[str, Any], resource_root: bool = False) -> _Node:
    if not schema and not resource_root:
        return _PLAIN
    node = _Node()
    properties: dict[str, _Node | None] = {
        name: _compile(sub) for name, sub in (schema.get("properties") or {}).items()
    }
    if resource_root or schema.get(EMBEDDED_RESOURCE) is True:
        properties.update(dict.fromkeys(_RESOURCE_FIELDS))
    node.properties = properties
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        node.unknown = _compile(additional)
    else:
        node.unknown = None if schema.get(PRESERVE_UNKNOWN_FIELDS) is True else _PLAIN
    items = schema.get("items")
    node.items = _compile(items) if isinstance(items, Mapping) else _PLAIN
    node.defaulted = tuple(
        (name, sub) for name, sub in sorted(properties.items()) if sub is not None and sub.has_default
    )
    node.nullable = schema.get("nullable") is True
    node.default = schema.get("default")
    node.has_default = node.default is not None
    return node


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _copy_without_nulls(value: Any) -> Any:
    """The walk through a _PLAIN region: map values that are null go; array items cannot go."""
    if isinstance(value, dict):
        return {key: _copy_without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_copy_without_nulls(item) for item in value]
    return value


def _walk(value: Any, node: _Node | None) -> Any:
    """A defaulted copy of value (a copy of the default, defaulted in turn, stands in where one applies)."""
    if node is _PLAIN:
        return _copy_without_nulls(value)
    if node is None:
        return _copy(value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        properties, unknown = node.properties, node.unknown
        for key, item in value.items():
            sub = properties.get(key, unknown)
            if item is not None:
                out[key] = _walk(item, sub)
            elif sub is None or sub.nullable:
                out[key] = None
            elif sub.has_default:
                out[key] = _walk(sub.default, sub)
            # else: a null the schema does not allow and no default replaces is dropped
        for key, sub in node.defaulted:
            if key not in out:
                out[key] = _walk(sub.default, sub)
        return out
    if isinstance(value, list):
        items = node.items
        replace_nulls = items.has_default and not items.nullable
        return [
            _walk(item, items) if item is not None else (_walk(items.default, items) if replace_nulls else None)
            for item in value
        ]
    # A scalar, also where the schema wants an object or array: validation, not defaulting, rejects it.
    return value


class CRDDefaults:
    """Structural-schema defaults of custom resources, by apiVersion and kind."""

    def __init__(self, schemas: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """schemas: "group/version" -> kind -> schema, pruned (`defaulting_schemas`) or whole."""
        self._roots = {
            (api_version, kind): _compile(schema, resource_root=True)
            for api_version, kinds in schemas.items()
            for kind, schema in kinds.items()
        }

    @classmethod
    def from_crds(cls, crd_objects: Iterable[Mapping[str, Any]]) -> CRDDefaults:
        """Defaults of the served versions of the given CRDs (other documents are skipped)."""
        return cls(defaulting_schemas(crd_objects))

    @staticmethod
    def packaged() -> CRDDefaults:
        """KubeRay's CRDs (RayCluster, RayJob, RayService), from the data file shipped in this package."""
        return _packaged()

    def knows(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self._roots

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A defaulted deep copy of obj (JSON-like values); a plain deep copy if its kind is not known."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        root = self._roots.get((api_version, kind)) if isinstance(api_version, str) and isinstance(kind, str) else None
        source = obj if isinstance(obj, dict) else dict(obj)
        defaulted: dict[str, Any] = _walk(source, root) if root is not None else _copy(source)
        return defaulted


@functools.cache
def _packaged() -> CRDDefaults:
    text = resources.files("webhook.kube").joinpath("data", PACKAGED_DATA).read_text(encoding="utf-8")
    return CRDDefaults(json.loads(text))
