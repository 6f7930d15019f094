"""The CRD rewrite for kube-apiserver 1.20 changes exactly what it says, and no more (no server needed).

A KubeRay (or scheduler) CRD update changes these counts: check that the rewrite is still only the
change in crd120's docstring, then update the numbers. A CRD that uses a field 1.20 does not know
makes rewrite_file raise with the field's path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import crd120
from .cluster import KUBERAY_CRDS, SCHEDULER_CRDS

# Measured on the CRDs in tests/data/corpus (see its SOURCE.md for the KubeRay version).
EXPECTED = {
    "ray.io_rayclusters.yaml": {crd120.CEL_RULES: 3},
    "ray.io_rayjobs.yaml": {crd120.CEL_RULES: 9},
    "ray.io_rayservices.yaml": {crd120.CEL_RULES: 5},
    # The schedulers' PodGroup CRDs load unchanged.
    "scheduling.run.ai_podgroups.yaml": {},
    "scheduling.volcano.sh_podgroups.yaml": {},
    "scheduling.x-k8s.io_podgroups.yaml": {},
}


@pytest.fixture(scope="module")
def rewritten() -> dict[str, crd120.Rewritten]:
    paths = [*KUBERAY_CRDS.glob("*.yaml"), *SCHEDULER_CRDS.glob("*.yaml")]
    return {r.source: r for r in crd120.rewrite_files(paths)}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_changes_per_file_are_exactly_the_expected_ones(rewritten: dict[str, crd120.Rewritten]) -> None:
    assert {name: dict(r.changes) for name, r in rewritten.items()} == EXPECTED


def test_everything_else_is_unchanged(rewritten: dict[str, crd120.Rewritten]) -> None:
    """The original without its CEL rules is the rewritten CRD, key for key."""
    for name, result in rewritten.items():
        path = (KUBERAY_CRDS if name.startswith("ray.io") else SCHEDULER_CRDS) / name
        original = [d for d in yaml.load_all(path.read_text(), Loader=crd120.Loader) if d]
        removed = 0
        for document in original:
            for node in _walk(document):
                removed += len(node.pop(crd120.CEL, []))
        assert original == result.documents, name
        assert removed == result.changes[crd120.CEL_RULES], name


def test_a_field_newer_than_1_20_stops_the_rewrite() -> None:
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-future": True}}}}}]},
    }  # fmt: skip
    with pytest.raises(
        crd120.Unsupported, match=r"things.example.com v1 openAPIV3Schema.properties.spec: x-kubernetes-future"
    ):
        crd120.rewrite_crd(crd, Counter())
    crd["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.x"}]
    with pytest.raises(crd120.Unsupported, match=r"selectableFields not known to Kubernetes 1\.20"):
        crd120.rewrite_crd(crd, Counter())


def test_a_property_named_like_a_keyword_is_a_property() -> None:
    """`properties.x-kubernetes-validations` is a field of that name, not a list of CEL rules."""
    field = {"type": "string"}
    schema = {"type": "object", "properties": {crd120.CEL: field}, crd120.CEL: [{"rule": "true"}]}
    changes: Counter[str] = Counter()
    crd120._schema(schema, "x", changes)
    assert schema == {"type": "object", "properties": {crd120.CEL: field}}
    assert changes == {crd120.CEL_RULES: 1}


def test_the_karta_crd_is_the_project_schema_made_structural(tmp_path: Path) -> None:
    crd, changes = crd120.karta_crd()
    assert crd["metadata"]["name"] == "kartas.run.ai"
    assert crd["spec"]["scope"] == "Cluster"
    # Every $ref inlined and every `additionalProperties: false` dropped (CRDs prune instead);
    # nothing else changed.
    assert set(changes) == {"refs_inlined", crd120.FALSE_ADDITIONAL}
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    keys = {k for node in _walk(spec) for k in node}
    assert not keys & {"$ref", "$defs", "$schema", "$comment"}
    assert spec["required"] == ["structureDefinition"]
    path = tmp_path / "recursive.json"
    path.write_text('{"properties": {"spec": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/a"}}}')
    with pytest.raises(crd120.Unsupported, match=r"cannot be inlined|recursion"):
        crd120.karta_crd(path)
