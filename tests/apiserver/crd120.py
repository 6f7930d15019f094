"""CRDs made loadable by kube-apiserver 1.20, the only real API server these tests can run.

KubeRay's CRDs are written for current Kubernetes. Every change made here is counted per file, and
tests/apiserver/test_crd120.py asserts the exact counts, so a KubeRay CRD update that needs more (or
other) changes fails loudly instead of loading a silently different schema. The one change:

- `x-kubernetes-validations` (CEL validation rules) are dropped: the field came in 1.23 (on by
  default from 1.25); 1.20 does not know it (kubectl's client-side validation refuses it, and the
  API server would drop it silently). Whatever those rules check is not checked by this server.

Anything else a schema node carries that 1.20's JSONSchemaProps does not know (a field newer than
1.20) stops the rewrite with its path, rather than being dropped by the server unnoticed.

(KubeRay's `default: ""` entries load as they are: the refusal of empty strings as "null" seen when
1.20 is built with Go >= 1.16 is a build artefact that scripts/build-kube-apiserver.sh removes.)
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# apiextensions.k8s.io/v1 JSONSchemaProps fields in Kubernetes 1.20 (the json tags of
# staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/types_jsonschema.go, v1.20.2).
SCHEMA_FIELDS_120 = frozenset({
    "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
    "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required",
    "items", "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties",
    "patternProperties", "dependencies", "additionalItems", "definitions", "externalDocs", "example",
    "nullable", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
    "x-kubernetes-map-type",
})  # fmt: skip
# CustomResourceDefinitionVersion and CustomResourceDefinitionSpec fields in 1.20 (types.go).
VERSION_FIELDS_120 = frozenset({
    "name", "served", "storage", "deprecated", "deprecationWarning", "schema", "subresources",
    "additionalPrinterColumns",
})  # fmt: skip
SPEC_FIELDS_120 = frozenset({"group", "names", "scope", "versions", "conversion", "preserveUnknownFields"})
CEL = "x-kubernetes-validations"

# The counters, by name: what test_crd120.py asserts per file.
CEL_RULES = "cel_rules_dropped"
FALSE_ADDITIONAL = "additional_properties_false_dropped"


class Unsupported(ValueError):
    """The CRD uses something kube-apiserver 1.20 does not have, beyond the counted rewrites."""


@dataclass
class Rewritten:
    """The rewritten CRDs of one file and what was changed to get them."""

    source: str
    documents: list[dict[str, Any]]
    changes: Counter[str] = field(default_factory=Counter)


def _schema(node: Any, path: str, changes: Counter[str]) -> None:
    """Rewrite one schema node in place (and everything under it)."""
    if isinstance(node, bool):  # additionalProperties: true
        return
    if not isinstance(node, dict):
        raise Unsupported(f"{path}: a schema must be an object, found {type(node).__name__}")
    unknown = sorted(set(node) - SCHEMA_FIELDS_120 - {CEL})
    if unknown:
        raise Unsupported(f"{path}: {', '.join(unknown)} not known to Kubernetes 1.20")
    rules = node.pop(CEL, None)
    if rules is not None:
        changes[CEL_RULES] += len(rules)
    for name in ("properties", "patternProperties", "definitions"):
        for key, child in (node.get(name) or {}).items():
            _schema(child, f"{path}.{name}.{key}", changes)
    for key, child in (node.get("dependencies") or {}).items():
        if isinstance(child, dict):
            _schema(child, f"{path}.dependencies.{key}", changes)
    for name in ("items", "additionalProperties", "additionalItems", "not"):
        child = node.get(name)
        if isinstance(child, list):
            for index, element in enumerate(child):
                _schema(element, f"{path}.{name}[{index}]", changes)
        elif child is not None:
            _schema(child, f"{path}.{name}", changes)
    for name in ("allOf", "anyOf", "oneOf"):
        for index, element in enumerate(node.get(name) or []):
            _schema(element, f"{path}.{name}[{index}]", changes)


def rewrite_crd(crd: Mapping[str, Any], changes: Counter[str]) -> dict[str, Any]:
    """One CustomResourceDefinition as 1.20 accepts it; changes are added to `changes`."""
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        raise Unsupported(f"not an apiextensions.k8s.io/v1 CustomResourceDefinition: {crd.get('kind')}")
    out = copy.deepcopy(dict(crd))
    name = out["metadata"]["name"]
    spec = out["spec"]
    unknown = sorted(set(spec) - SPEC_FIELDS_120)
    if unknown:
        raise Unsupported(f"{name}: spec.{', spec.'.join(unknown)} not known to Kubernetes 1.20")
    for version in spec["versions"]:
        unknown = sorted(set(version) - VERSION_FIELDS_120)
        if unknown:
            raise Unsupported(f"{name} {version['name']}: {', '.join(unknown)} not known to Kubernetes 1.20")
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema is not None:
            _schema(schema, f"{name} {version['name']} openAPIV3Schema", changes)
    out.pop("status", None)
    return out


def load_file(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [d for d in yaml.load_all(handle, Loader=Loader) if d]


def rewrite_file(path: Path) -> Rewritten:
    """Every CRD of a YAML file, rewritten, with the counted changes."""
    result = Rewritten(path.name, [])
    for document in load_file(path):
        result.documents.append(rewrite_crd(document, result.changes))
    return result


def rewrite_files(paths: Iterable[Path]) -> list[Rewritten]:
    return [rewrite_file(p) for p in sorted(paths)]


# --- the Karta CRD, made from the project's own JSON Schema of a Karta object ---

KARTA_SCHEMA = Path(__file__).resolve().parents[2] / "webhook" / "schemas" / "karta.schema.json"


def _structural(node: Any, defs: Mapping[str, Any], path: str, changes: Counter[str], depth: int = 0) -> Any:
    """A JSON Schema (2020-12, the subset karta.schema.json uses) as a structural CRD schema."""
    if depth > 50:
        raise Unsupported(f"{path}: $ref recursion; a CRD schema cannot express it")
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = node["$ref"]
        prefix = "#/$defs/"
        if not target.startswith(prefix) or target[len(prefix) :] not in defs or len(node) != 1:
            raise Unsupported(f"{path}: $ref {target!r} cannot be inlined")
        changes["refs_inlined"] += 1
        return _structural(defs[target[len(prefix) :]], defs, path, changes, depth + 1)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$schema", "$comment", "$defs"):
            continue
        if key == "additionalProperties" and value is False:
            # Structural schemas cannot forbid unknown fields; the API server prunes them instead.
            changes[FALSE_ADDITIONAL] += 1
            continue
        if key not in SCHEMA_FIELDS_120:
            raise Unsupported(f"{path}: {key} has no CRD equivalent")
        if key == "properties":
            out[key] = {k: _structural(v, defs, f"{path}.{k}", changes, depth) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs, f"{path}.{key}", changes, depth)
        else:
            out[key] = value
    return out


def karta_crd(schema_path: Path = KARTA_SCHEMA) -> tuple[dict[str, Any], Counter[str]]:
    """A `kartas.run.ai` CRD (cluster-scoped, run.ai/v1alpha1, identity as Karta's own CRD: see
    reference/karta.md §1.1) whose spec schema is karta.schema.json's, and the changes made."""
    changes: Counter[str] = Counter()
    schema = json.loads(schema_path.read_text())
    spec_schema = _structural(schema["properties"]["spec"], schema["$defs"], "spec", changes)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "kartas.run.ai"},
        "spec": {
            "group": "run.ai",
            "names": {"plural": "kartas", "singular": "karta", "kind": "Karta", "listKind": "KartaList",
                      "shortNames": ["krt"]},
            "scope": "Cluster",
            "versions": [{
                "name": "v1alpha1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                }},
            }],
        },
    }  # fmt: skip
    return crd, changes
