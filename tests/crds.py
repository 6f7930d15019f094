"""Objects checked against a CRD's own openAPIV3Schema (the schedulers' CRDs in tests/data/corpus/schedulers).

jsonschema checks types, enums, minimums, patterns and required fields. What it does not do the way
the API server does (reference/tooling.md §4): unknown fields pass (the API server would prune them
silently, so `unknown_fields` looks for them), `nullable` is ignored (so a null fails, which is
stricter), and `x-kubernetes-int-or-string` is ignored where the schema has no anyOf. metadata is only
`type: object` in a CRD; `metadata_problems` checks what the API server checks of ObjectMeta here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.corpus import SCHEDULER_CRDS
from webhook.kube import names

CRD_FILES = {
    "scheduling.x-k8s.io": "scheduling.x-k8s.io_podgroups.yaml",
    "scheduling.volcano.sh": "scheduling.volcano.sh_podgroups.yaml",
    "scheduling.run.ai": "scheduling.run.ai_podgroups.yaml",
}


@cache
def crd(group: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((Path(SCHEDULER_CRDS) / CRD_FILES[group]).read_text())
    return document


def schema_of(api_version: str, kind: str) -> dict[str, Any]:
    group, _, version = api_version.rpartition("/")
    document = crd(group)
    assert document["spec"]["names"]["kind"] == kind
    (served,) = [v for v in document["spec"]["versions"] if v["name"] == version and v["served"]]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def schema_errors(obj: Mapping[str, Any]) -> list[str]:
    schema = schema_of(str(obj["apiVersion"]), str(obj["kind"]))
    validator = jsonschema.Draft4Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def unknown_fields(obj: Any, schema: Mapping[str, Any], path: str = "") -> Iterator[str]:
    """Fields the schema does not declare: the API server would drop them without a word."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(obj, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if properties is not None and key in properties:
                yield from unknown_fields(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from unknown_fields(value, extra, f"{path}.{key}")
            elif properties is not None or extra is False:
                yield f"{path}.{key}"
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            yield from unknown_fields(item, schema["items"], f"{path}[{index}]")


def metadata_problems(obj: Mapping[str, Any]) -> list[str]:
    meta = obj["metadata"]
    problems = []
    if not names.is_dns1123_subdomain(meta.get("name", "")):
        problems.append(f"name {meta.get('name')!r} is not a DNS subdomain")
    if not names.is_dns1123_label(meta.get("namespace", "")):
        problems.append(f"namespace {meta.get('namespace')!r} is not a DNS label")
    for key, value in (meta.get("labels") or {}).items():
        problems += [f"label {key}: {p}" for p in names.label_key_problems(key) + names.label_value_problems(value)]
    for key in meta.get("annotations") or {}:
        problems += [f"annotation {key}: {p}" for p in names.label_key_problems(key)]
    controllers = 0
    for ref in meta.get("ownerReferences") or ():
        for field in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(field):
                problems.append(f"ownerReference without {field}")
        controllers += bool(ref.get("controller"))
    if controllers > 1:
        problems.append("more than one controller ownerReference")
    return problems


def all_problems(obj: Mapping[str, Any]) -> list[str]:
    schema = schema_of(str(obj["apiVersion"]), str(obj["kind"]))
    return [*schema_errors(obj), *(f"unknown field {f}" for f in unknown_fields(obj, schema)), *metadata_problems(obj)]
