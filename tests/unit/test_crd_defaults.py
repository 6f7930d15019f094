"""CRD defaulting as kube-apiserver does it before admission (webhook/kube/defaults.py)."""

from __future__ import annotations

import copy
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.corpus import CORPUS, EXPECTED_RAY_OBJECTS, ROOT, ray_object_params
from tests.strategies import ANY_JSON
from webhook.kube.defaults import CRDDefaults, CRDSchemaError, prune_schema

INT32_MAX = 2**31 - 1
WORKER_DEFAULTS = {"minReplicas": 0, "maxReplicas": INT32_MAX, "replicas": 0, "numOfHosts": 1}
CLUSTER_PATH = {"RayCluster": (), "RayService": ("rayClusterConfig",), "RayJob": ("rayClusterSpec",)}
SHIPPED = ROOT / "webhook" / "kube" / "data" / "crd_defaults.json"
GENERATOR = ROOT / "scripts" / "gen_crd_defaults.py"

PACKAGED = CRDDefaults.packaged()


def corpus_crd_files() -> list[Path]:
    return sorted((CORPUS / "crd").glob("ray.io_*.yaml"))


@cache
def corpus_crds() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in corpus_crd_files():
        with path.open() as handle:
            documents.extend(yaml.load_all(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    return documents


def ray_object(kind: str, cluster: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body = cluster
    for key in reversed(CLUSTER_PATH[kind]):
        body = {key: body}
    return {"apiVersion": "ray.io/v1", "kind": kind, "metadata": {"name": "x"}, "spec": {**body, **spec}}


def cluster_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    for key in CLUSTER_PATH[obj["kind"]]:
        spec = spec[key]
    return spec  # type: ignore[no-any-return]


def pod_template(**container: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "ray", "image": "rayproject/ray", **container}]}}


def container_ids(value: Any) -> set[int]:
    """The ids of every dict and list inside value, for checking that two values share none."""
    ids: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            ids.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return ids


def shares_containers(a: Any, b: Any) -> bool:
    return bool(container_ids(a) & container_ids(b))


def widget_crd(schema: dict[str, Any], versions: tuple[tuple[str, bool], ...] = (("v1", True),)) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [
                {"name": name, "served": served, "storage": name == "v1", "schema": {"openAPIV3Schema": schema}}
                for name, served in versions
            ],
        },
    }


WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer", "default": 3},
                "maybe": {"type": "integer", "nullable": True, "default": 5},
                "note": {"type": "string", "nullable": True},
                "mode": {"type": "string"},
                "settings": {
                    "type": "object",
                    "default": {"level": "low"},
                    "properties": {"level": {"type": "string"}, "depth": {"type": "integer", "default": 2}},
                },
                "byName": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"weight": {"type": "integer", "default": 1}},
                    },
                },
                "flags": {"type": "object", "additionalProperties": {"type": "string", "default": "on"}},
                "slots": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"port": {"type": "integer", "default": 80}}},
                },
                "counts": {"type": "array", "items": {"type": "integer", "default": 7}},
                "labels": {"type": "array", "items": {"type": "string"}},
                "anything": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"known": {"type": "string"}, "withDefault": {"type": "string", "default": "d"}},
                },
                "inner": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {"type": "object", "properties": {"x": {"type": "integer", "default": 1}}},
                    },
                },
            },
        },
    },
}
WIDGETS = CRDDefaults.from_crds([widget_crd(WIDGET_SCHEMA)])


def widget(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def widget_spec(**spec: Any) -> dict[str, Any]:
    return WIDGETS.apply(widget(**spec))["spec"]  # type: ignore[no-any-return]


# --- KubeRay defaults, from the packaged data ------------------------------------------------------


def test_packaged_data_covers_every_served_kuberay_version() -> None:
    for version in ("ray.io/v1", "ray.io/v1alpha1"):
        for kind in ("RayCluster", "RayJob", "RayService"):
            assert PACKAGED.knows(version, kind)
    assert not PACKAGED.knows("ray.io/v2", "RayCluster")
    assert not PACKAGED.knows("ray.io/v1", "RayCronJob")
    assert not PACKAGED.knows("v1", "Pod")


@pytest.mark.parametrize("kind", sorted(CLUSTER_PATH))
def test_worker_group_defaults(kind: str) -> None:
    obj = ray_object(
        kind,
        {
            "headGroupSpec": {"template": pod_template()},
            "workerGroupSpecs": [
                {"groupName": "bare", "template": pod_template()},
                {
                    "groupName": "set",
                    "replicas": 2,
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "numOfHosts": 2,
                    "template": pod_template(),
                },
            ],
        },
    )
    bare, given_values = cluster_of(PACKAGED.apply(obj))["workerGroupSpecs"]
    assert {key: bare[key] for key in WORKER_DEFAULTS} == WORKER_DEFAULTS
    assert {key: given_values[key] for key in WORKER_DEFAULTS} == {
        "minReplicas": 1,
        "maxReplicas": 4,
        "replicas": 2,
        "numOfHosts": 2,
    }


def test_v1alpha1_worker_groups_are_defaulted_too() -> None:
    obj = {"apiVersion": "ray.io/v1alpha1", "kind": "RayCluster", "spec": {"workerGroupSpecs": [{"groupName": "w"}]}}
    (group,) = PACKAGED.apply(obj)["spec"]["workerGroupSpecs"]
    assert (group["minReplicas"], group["maxReplicas"]) == (0, INT32_MAX)


def test_rayservice_upgrade_options_default_only_where_the_parent_is_given() -> None:
    with_options = ray_object(
        "RayService",
        {},
        upgradeStrategy={
            "type": "NewClusterWithIncrementalUpgrade",
            "clusterUpgradeOptions": {"gatewayClassName": "g"},
        },
    )
    options = PACKAGED.apply(with_options)["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]
    assert options == {"gatewayClassName": "g", "maxSurgePercent": 100}
    explicit = ray_object("RayService", {}, upgradeStrategy={"clusterUpgradeOptions": {"maxSurgePercent": 20}})
    assert PACKAGED.apply(explicit)["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["maxSurgePercent"] == 20
    # No default for upgradeStrategy itself: nothing is invented above the given fields.
    without = ray_object("RayService", {}, upgradeStrategy={"type": "NewCluster"})
    assert PACKAGED.apply(without)["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert "upgradeStrategy" not in PACKAGED.apply(ray_object("RayService", {}))["spec"]


def test_pod_template_defaults_in_head_and_worker_templates() -> None:
    template = pod_template(
        ports=[{"containerPort": 6379}, {"containerPort": 53, "protocol": "UDP"}],
        env=[{"name": "A", "valueFrom": {"secretKeyRef": {"key": "k"}}}, {"name": "B", "value": "b"}],
        readinessProbe={"grpc": {"port": 9000}},
    )
    template["spec"]["initContainers"] = [{"name": "init", "ports": [{"containerPort": 1}]}]
    template["spec"]["volumes"] = [{"name": "cfg", "configMap": {"items": [{"key": "a", "path": "a"}]}}]
    obj = ray_object(
        "RayCluster",
        {"headGroupSpec": {"template": template}, "workerGroupSpecs": [{"groupName": "w", "template": template}]},
    )
    cluster = cluster_of(PACKAGED.apply(obj))
    for spec in (cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]):
        (container,) = spec["containers"]
        assert [p["protocol"] for p in container["ports"]] == ["TCP", "UDP"]
        assert container["env"] == [
            {"name": "A", "valueFrom": {"secretKeyRef": {"key": "k", "name": ""}}},
            {"name": "B", "value": "b"},
        ]
        assert container["readinessProbe"] == {"grpc": {"port": 9000, "service": ""}}
        assert spec["initContainers"][0]["ports"] == [{"containerPort": 1, "protocol": "TCP"}]
        assert spec["volumes"] == [{"name": "cfg", "configMap": {"items": [{"key": "a", "path": "a"}], "name": ""}}]
        # Absent optional structures stay absent.
        assert "livenessProbe" not in container
        assert "ephemeralContainers" not in spec


def test_nulls_in_kuberay_objects() -> None:
    obj = ray_object(
        "RayCluster",
        {
            "suspend": None,
            "workerGroupSpecs": [
                {
                    "groupName": "w",
                    "replicas": None,
                    "numOfHosts": None,
                    "rayStartParams": {"num-cpus": None, "num-gpus": "1"},
                }
            ],
        },
    )
    obj["metadata"] = {"name": "x", "labels": None}
    obj["status"] = {"lastUpdateTime": None, "state": None}
    defaulted = PACKAGED.apply(obj)
    (group,) = defaulted["spec"]["workerGroupSpecs"]
    # Not nullable, with a default: the default replaces the null.
    assert (group["replicas"], group["numOfHosts"]) == (0, 1)
    # Not nullable, no default: the null goes, in properties and in map values alike.
    assert "suspend" not in defaulted["spec"]
    assert group["rayStartParams"] == {"num-gpus": "1"}
    # Nullable: kept.
    assert defaulted["status"] == {"lastUpdateTime": None}
    # The object's metadata is not the schema's business.
    assert defaulted["metadata"] == {"name": "x", "labels": None}


def test_unknown_kinds_are_copied_unchanged() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": None},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1}]}]},
    }
    other_version = {"apiVersion": "ray.io/v9", "kind": "RayCluster", "spec": {"workerGroupSpecs": [{}]}}
    no_kind: dict[str, Any] = {"spec": {"a": None}}
    for obj in (pod, other_version, no_kind):
        out = PACKAGED.apply(obj)
        assert out == obj
        assert not shares_containers(out, obj)


def test_input_is_not_mutated_and_shares_nothing_with_the_output() -> None:
    obj = ray_object(
        "RayService",
        {
            "headGroupSpec": {"template": pod_template(ports=[{"containerPort": 1}])},
            "workerGroupSpecs": [{"groupName": "w", "replicas": None, "template": pod_template()}],
        },
        upgradeStrategy={"clusterUpgradeOptions": {}},
        serveConfigV2="applications: []",
    )
    before = copy.deepcopy(obj)
    out = PACKAGED.apply(obj)
    assert obj == before
    assert out != obj
    assert not shares_containers(out, obj)


def test_idempotent_on_a_kuberay_object() -> None:
    obj = ray_object(
        "RayJob", {"workerGroupSpecs": [{"groupName": "w", "maxReplicas": None}]}, entrypoint="python x.py"
    )
    once = PACKAGED.apply(obj)
    assert PACKAGED.apply(once) == once


def test_non_mapping_values_are_left_to_validation() -> None:
    obj = ray_object("RayCluster", {"workerGroupSpecs": "not a list", "headGroupSpec": ["not", "an", "object"]})
    assert cluster_of(PACKAGED.apply(obj)) == {
        "workerGroupSpecs": "not a list",
        "headGroupSpec": ["not", "an", "object"],
    }
    scalar_spec = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "spec": 5}
    assert PACKAGED.apply(scalar_spec) == scalar_spec


# --- the algorithm, on a schema that has every case -------------------------------------------------


def test_missing_property_gets_a_copy_of_its_default_then_defaults_inside_it() -> None:
    assert widget_spec()["settings"] == {"level": "low", "depth": 2}
    assert widget_spec(settings={})["settings"] == {"depth": 2}
    assert widget_spec(settings={"depth": 9})["settings"] == {"depth": 9}
    first, second = WIDGETS.apply(widget()), WIDGETS.apply(widget())
    first["spec"]["settings"]["level"] = "changed"
    assert second["spec"]["settings"]["level"] == "low"
    assert WIDGETS.apply(widget())["spec"]["settings"]["level"] == "low"


def test_nulls_are_pruned_or_defaulted_unless_nullable() -> None:
    spec = widget_spec(size=None, maybe=None, note=None, mode=None)
    assert spec["size"] == 3
    assert spec["maybe"] is None
    assert spec["note"] is None
    assert "mode" not in spec
    assert widget_spec()["maybe"] == 5
    assert "note" not in widget_spec()


def test_defaults_in_map_values_and_array_items() -> None:
    spec = widget_spec(
        byName={"a": {}, "b": {"weight": 4}, "c": None},
        flags={"x": None, "y": "off"},
        slots=[{}, {"port": 1}, None],
        counts=[None, 1],
        labels=["a", None],
    )
    assert spec["byName"] == {"a": {"weight": 1}, "b": {"weight": 4}}
    assert spec["flags"] == {"x": "on", "y": "off"}
    # Null items cannot be pruned: they take the items' default if there is one, else stay for validation.
    assert spec["slots"] == [{"port": 80}, {"port": 1}, None]
    assert spec["counts"] == [7, 1]
    assert spec["labels"] == ["a", None]


def test_preserved_unknown_fields_keep_their_nulls() -> None:
    spec = widget_spec(anything={"known": None, "other": None, "deep": {"z": None}})
    assert spec["anything"] == {"other": None, "deep": {"z": None}, "withDefault": "d"}


def test_embedded_resource_metadata_is_left_alone() -> None:
    spec = widget_spec(inner={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": None}, "spec": {}})
    assert spec["inner"] == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": None}, "spec": {"x": 1}}


def test_values_of_the_wrong_type_are_not_defaulted() -> None:
    spec = widget_spec(settings="text", slots="none", byName=[1, 2], counts={"a": 1})
    assert (spec["settings"], spec["slots"], spec["byName"], spec["counts"]) == ("text", "none", [1, 2], {"a": 1})


def test_prune_schema_keeps_only_what_defaulting_reads() -> None:
    pruned = prune_schema(WIDGET_SCHEMA)
    assert pruned is not None
    spec = pruned["properties"]["spec"]["properties"]
    assert set(pruned["properties"]) == {"spec"}
    assert "mode" not in spec
    assert "labels" not in spec
    assert spec["size"] == {"default": 3}
    assert spec["maybe"] == {"default": 5, "nullable": True}
    assert spec["note"] == {"nullable": True}
    assert spec["byName"] == {"additionalProperties": {"properties": {"weight": {"default": 1}}}}
    assert spec["counts"] == {"items": {"default": 7}}
    # Known fields of a region that keeps unknown ones stay listed, even without defaults.
    assert spec["anything"] == {
        "properties": {"known": {}, "withDefault": {"default": "d"}},
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert spec["inner"] == {
        "properties": {"spec": {"properties": {"x": {"default": 1}}}},
        "x-kubernetes-embedded-resource": True,
    }
    assert prune_schema({"type": "object", "properties": {"a": {"type": "string", "default": None}}}) is None


def test_from_crds_takes_served_versions_and_skips_other_documents() -> None:
    defaults = CRDDefaults.from_crds(
        [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            widget_crd(WIDGET_SCHEMA, versions=(("v1", True), ("v2", False))),
        ]
    )
    assert defaults.knows("example.com/v1", "Widget")
    assert not defaults.knows("example.com/v2", "Widget")
    plain = CRDDefaults.from_crds([widget_crd({"type": "object", "properties": {"spec": {"type": "object"}}})])
    assert plain.knows("example.com/v1", "Widget")
    assert plain.apply(widget(a=1))["spec"] == {"a": 1}
    assert plain.apply({**widget(), "spec": None}) == {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
    }


def test_whole_schemas_default_like_pruned_ones() -> None:
    whole = CRDDefaults({"example.com/v1": {"Widget": WIDGET_SCHEMA}})
    obj = widget(
        size=None,
        maybe=None,
        mode=None,
        byName={"a": {}, "c": None},
        flags={"x": None},
        slots=[{}, None],
        counts=[None],
        anything={"known": None, "other": None},
        inner={"metadata": {"labels": None}, "spec": {}},
    )
    assert whole.apply(obj) == WIDGETS.apply(obj)
    assert whole.apply(widget()) == WIDGETS.apply(widget())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(apiVersion="apiextensions.k8s.io/v1beta1"), "is not supported"),
        (lambda c: c["spec"].pop("group"), "spec.group: expected str"),
        (lambda c: c["spec"].update(versions={}), "spec.versions: expected list"),
        (lambda c: c["spec"]["versions"][0].pop("schema"), "versions[0].schema: expected Mapping"),
    ],
)
def test_malformed_crds_are_refused(mutate: Any, message: str) -> None:
    crd = widget_crd(WIDGET_SCHEMA)
    mutate(crd)
    with pytest.raises(CRDSchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CRDDefaults.from_crds([crd])


# --- the corpus --------------------------------------------------------------------------------------


def test_corpus_has_the_expected_ray_objects() -> None:
    assert len(ray_object_params()) == EXPECTED_RAY_OBJECTS


@pytest.mark.parametrize(("path", "raw"), ray_object_params())
def test_corpus_object_defaults_like_the_api_server(path: str, raw: dict[str, Any]) -> None:
    before = copy.deepcopy(raw)
    out = PACKAGED.apply(raw)
    assert raw == before
    assert PACKAGED.apply(out) == out
    spec = out["spec"]
    for key in CLUSTER_PATH[out["kind"]]:
        spec = spec.get(key) or {}
    for group in spec.get("workerGroupSpecs") or []:
        assert all(isinstance(group[key], int) for key in WORKER_DEFAULTS), group
    assert known_fields_only(out) == reference_defaulting(raw)


def test_shipped_data_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "crd_defaults.json"
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out), *map(str, corpus_crd_files())],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.read_bytes() == SHIPPED.read_bytes(), (
        "webhook/kube/data/crd_defaults.json is stale: run "
        "python scripts/gen_crd_defaults.py --out webhook/kube/data/crd_defaults.json "
        f"{CORPUS}/crd/ray.io_*.yaml"
    )


def test_generator_refuses_files_without_crds(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out), str(manifest)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "no served CRD versions" in result.stderr
    assert not out.exists()


# --- a second, independent statement of the API server's steps, on the whole CRD schemas --------------
# Set apiVersion/kind/metadata aside, drop unknown fields, drop nulls that are neither nullable nor
# defaulted, then default top-down; each step a separate pass over the unpruned schema.


def _drop_unknown(value: Any, schema: dict[str, Any] | None) -> None:
    if schema is None:
        return
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key in list(value):
            if key in properties:
                _drop_unknown(value[key], properties[key])
            elif isinstance(additional, dict):
                _drop_unknown(value[key], additional)
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                del value[key]
    elif isinstance(value, list):
        for item in value:
            _drop_unknown(item, schema.get("items"))


def _field_schema(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if schema is None:
        return None
    if key in schema.get("properties", {}):
        return schema["properties"][key]  # type: ignore[no-any-return]
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def _drop_disallowed_nulls(value: Any, schema: dict[str, Any] | None) -> None:
    if isinstance(value, dict):
        for key in list(value):
            sub = _field_schema(schema, key)
            if value[key] is None and sub is not None and not sub.get("nullable") and sub.get("default") is None:
                del value[key]
            else:
                _drop_disallowed_nulls(value[key], sub)
    elif isinstance(value, list):
        for item in value:
            _drop_disallowed_nulls(item, schema.get("items") if schema else None)


def _replaces(value: Any, schema: dict[str, Any] | None) -> bool:
    return value is None and schema is not None and not schema.get("nullable")


def _default(value: Any, schema: dict[str, Any] | None) -> None:
    if schema is None:
        return
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            if sub.get("default") is not None and (key not in value or _replaces(value[key], sub)):
                value[key] = copy.deepcopy(sub["default"])
        for key in value:
            sub = _field_schema(schema, key)
            if key not in properties and _replaces(value[key], sub):
                assert sub is not None
                value[key] = copy.deepcopy(sub.get("default"))
            _default(value[key], sub)
    elif isinstance(value, list):
        items = schema.get("items")
        for index in range(len(value)):
            if _replaces(value[index], items):
                assert items is not None
                value[index] = copy.deepcopy(items.get("default"))
            _default(value[index], items)


@cache
def _full_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"]): (
            version["schema"]["openAPIV3Schema"]
        )
        for crd in corpus_crds()
        for version in crd["spec"]["versions"]
        if version["served"]
    }


def reference_defaulting(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server keeps of obj, defaulted: unknown fields gone (apply() keeps those, so drop them here)."""
    schema = _full_schemas()[(obj["apiVersion"], obj["kind"])]
    out = copy.deepcopy(obj)
    aside: dict[str, Any] = {key: out.pop(key) for key in ("apiVersion", "kind", "metadata") if key in out}
    _drop_unknown(out, schema)
    _drop_disallowed_nulls(out, schema)
    out.update(aside)
    _default(out, schema)
    return out


def known_fields_only(obj: dict[str, Any]) -> dict[str, Any]:
    schema = _full_schemas()[(obj["apiVersion"], obj["kind"])]
    out = copy.deepcopy(obj)
    aside: dict[str, Any] = {key: out.pop(key) for key in ("apiVersion", "kind", "metadata") if key in out}
    _drop_unknown(out, schema)
    return {**out, **aside}


# --- generated objects ------------------------------------------------------------------------------

COUNTS = st.integers(0, 8) | st.just(INT32_MAX)
ABSENT = object()


@st.composite
def _objects(
    draw: st.DrawFn, /, required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]
) -> dict[str, Any]:
    """A mapping with the required fields, and each optional one absent, null or drawn."""
    out = {key: draw(strategy) for key, strategy in required.items()}
    for key, strategy in optional.items():
        value = draw(st.one_of(st.just(ABSENT), st.none(), strategy))
        if value is not ABSENT:
            out[key] = value
    return out


PORTS = st.lists(
    _objects({"containerPort": st.integers(1, 65535)}, protocol=st.sampled_from(["TCP", "UDP"]), name=st.just("http")),
    max_size=3,
)
SECRET_REFS = _objects({"key": st.just("k")}, name=st.sampled_from(["s", ""]), optional=st.booleans())
ENV = st.lists(
    _objects(
        {"name": st.sampled_from(["A", "S"])},
        value=st.text(max_size=4),
        valueFrom=_objects({}, secretKeyRef=SECRET_REFS),
    ),
    max_size=3,
)
PROBES = _objects({}, grpc=_objects({"port": st.integers(1, 9)}, service=st.just("s")))
CONTAINERS = st.lists(
    _objects(
        {"name": st.sampled_from(["ray", "side"]), "image": st.just("rayproject/ray")},
        ports=PORTS,
        env=ENV,
        readinessProbe=PROBES,
    ),
    min_size=1,
    max_size=2,
)
STRING_MAPS = st.dictionaries(st.sampled_from(["app", "k"]), st.none() | st.just("v"), max_size=2)
TEMPLATES = _objects(
    {"spec": _objects({"containers": CONTAINERS}, initContainers=CONTAINERS, nodeSelector=STRING_MAPS)},
    metadata=_objects({}, labels=STRING_MAPS),
)
WORKER_GROUPS = _objects(
    {"groupName": st.sampled_from(["a", "b"])},
    template=TEMPLATES,
    replicas=COUNTS,
    minReplicas=COUNTS,
    maxReplicas=COUNTS,
    numOfHosts=COUNTS,
    suspend=st.booleans(),
    rayStartParams=STRING_MAPS,
    unknownField=ANY_JSON,
)
CLUSTERS = _objects(
    {"headGroupSpec": _objects({"template": TEMPLATES})},
    workerGroupSpecs=st.lists(WORKER_GROUPS, max_size=3),
    enableInTreeAutoscaling=st.booleans(),
)


@st.composite
def kuberay_objects(draw: st.DrawFn) -> dict[str, Any]:
    """RayClusters, RayJobs and RayServices with fields absent, null or set, and an unknown field or two."""
    kind = draw(st.sampled_from(sorted(CLUSTER_PATH)))
    extra: dict[str, Any] = {}
    if kind == "RayService":
        options = _objects({}, maxSurgePercent=COUNTS)
        extra = draw(_objects({}, upgradeStrategy=_objects({}, clusterUpgradeOptions=options)))
    obj = ray_object(kind, draw(CLUSTERS), **extra)
    obj["apiVersion"] = draw(st.sampled_from(["ray.io/v1", "ray.io/v1alpha1"]))
    if draw(st.booleans()):
        obj["status"] = draw(_objects({}, lastUpdateTime=st.just("2024-01-01T00:00:00Z"), state=st.just("ready")))
    return obj


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kuberay_objects())
def test_generated_objects_idempotent_unmutated_and_complete(obj: dict[str, Any]) -> None:
    before = copy.deepcopy(obj)
    once = PACKAGED.apply(obj)
    assert obj == before
    assert not shares_containers(once, obj)
    assert PACKAGED.apply(once) == once
    if obj["apiVersion"] != "ray.io/v1":
        return  # v1alpha1 has no numOfHosts
    groups = cluster_of(once).get("workerGroupSpecs") or []
    for group, given_group in zip(groups, cluster_of(obj).get("workerGroupSpecs") or [], strict=True):
        for key, default in WORKER_DEFAULTS.items():
            expected = given_group[key] if given_group.get(key) is not None else default
            assert group[key] == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kuberay_objects())
def test_generated_objects_agree_with_the_stepwise_algorithm_on_whole_schemas(obj: dict[str, Any]) -> None:
    assert known_fields_only(PACKAGED.apply(obj)) == reference_defaulting(obj)
