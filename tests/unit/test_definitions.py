"""Loading and validating Karta definitions: Karta's validator rules, structure, jq safety, hints."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builders import children, minimal, root
from webhook.karta.load import builtin_definitions, load_directory, load_file
from webhook.karta.model import GVK, HINTS_ANNOTATION
from webhook.karta.parse import DefinitionError, parse_definition

ROOT = Path(__file__).resolve().parents[2]


def refused(change: Callable[[dict[str, Any]], None]) -> str:
    d = minimal()
    change(d)
    with pytest.raises(DefinitionError) as caught:
        parse_definition(d, "test.yaml")
    return str(caught.value)


def test_minimal_definition_loads() -> None:
    definition = parse_definition(minimal(), "test.yaml")
    assert definition.root_kind == GVK("example.com", "v1", "Job")
    assert [c.name for c in definition.leaves] == ["worker"]
    assert [a.name for a in definition.ancestors("worker")] == ["job"]


def test_builtin_definitions_are_the_docs_samples() -> None:
    definitions = builtin_definitions()
    assert {d.root_kind.kind for d in definitions} == {"RayCluster", "RayJob", "RayService"}
    samples = sorted(p.name for p in (ROOT / "docs" / "samples").glob("*.yaml"))
    assert samples == ["raycluster.yaml", "rayjob.yaml", "rayservice.yaml"]
    for path in (ROOT / "docs" / "samples").glob("*.yaml"):
        (loaded,) = load_file(path)
        assert loaded.root_kind in {d.root_kind for d in definitions}


def test_rayservice_models_the_raycluster_as_intermediate_component() -> None:
    (service,) = [d for d in builtin_definitions() if d.root_kind.kind == "RayService"]
    cluster = service.component("raycluster")
    assert cluster.kind == GVK("ray.io", "v1", "RayCluster")
    assert cluster.owner_ref == "rayservice"
    assert service.component("head").owner_ref == "raycluster"
    assert service.component("worker").owner_ref == "raycluster"
    (group,) = service.pod_groups
    assert [m.component_name for m in group.members] == ["raycluster"]
    assert group.members[0].group_by_key_paths == ('.metadata.labels["ray.io/cluster"]',)
    worker = service.component("worker")
    assert worker.scale is not None
    # Per-element form only: the stream form `[].replicas // 1` drops groups.
    for path in (worker.scale.replicas_path, worker.scale.min_replicas_path, worker.scale.max_replicas_path,
                 worker.instance_id_path):  # fmt: skip
        assert path is not None and "workerGroupSpecs[]?" in path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: children(d)[0].update(name="job"), "component name job is not unique"),
        (lambda d: root(d)["kind"].update(group=""), "root component must have full kind"),
        (lambda d: root(d).update(ownerRef="x"), "root component cannot have owner ref"),
        (lambda d: root(d).pop("statusDefinition"), "root component must have status definition"),
        (lambda d: children(d)[0].pop("ownerRef"), "child component 'worker' has no owner ref"),
        (lambda d: children(d)[0].update(ownerRef="ghost"), "has owner ref to non-existing component 'ghost'"),
        (
            lambda d: children(d)[0]["specDefinition"].update(podSpecPath=".spec.x"),
            "component 'worker' has multiple pod spec definitions",
        ),
        (
            lambda d: children(d)[0]["podSelector"].pop("componentInstanceSelector"),
            "has instance id path but no pod component instance selector",
        ),
        (
            lambda d: children(d)[0].pop("instanceIdPath"),
            "has pod component instance selector but no instance id path",
        ),
        (
            lambda d: children(d)[0]["podSelector"].update(componentTypeSelector={"value": "x"}),
            "neither keyPath nor matchLabels",
        ),
        (
            lambda d: children(d)[0]["podSelector"].update(
                componentTypeSelector={"matchLabels": {"a": "b"}, "value": "x"}
            ),
            "value without keyPath",
        ),
        (
            lambda d: children(d)[0]["podSelector"].update(componentTypeSelector={"matchLabels": {"bad key!": "b"}}),
            "matchLabels key 'bad key!'",
        ),
        (
            lambda d: d["spec"]["optimizationInstructions"]["gangScheduling"]["podGroups"][0]["members"][0].update(
                componentName="ghost"
            ),
            "pod-group member component 'ghost' is not defined",
        ),
    ],
)
def test_karta_validator_rules(change: Callable[[dict[str, Any]], None], message: str) -> None:
    assert message in refused(change)


def test_ownership_cycle() -> None:
    def cycle(d: dict[str, Any]) -> None:
        children(d).append({"name": "a", "ownerRef": "b"})
        children(d).append({"name": "b", "ownerRef": "a"})

    assert "ownership cycle detected" in refused(cycle)


def test_multi_level_chains_are_allowed() -> None:
    d = minimal()
    children(d)[0]["ownerRef"] = "middle"
    children(d).append({"name": "middle", "ownerRef": "job", "kind": {"group": "x.io", "version": "v1", "kind": "Mid"}})
    definition = parse_definition(d, "t")
    assert [a.name for a in definition.ancestors("worker")] == ["middle", "job"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # Unquoted YAML number where the CRD wants a string.
        (lambda d: children(d)[0]["scaleDefinition"].update(replicasPath=1), "1 is not of type 'string'"),
        # The Technical Guide's typo: refused instead of silently ignored.
        (
            lambda d: children(d)[0]["specDefinition"].update(fragmentedPodDefinition={}),
            "'fragmentedPodDefinition' was unexpected",
        ),
        (lambda d: d["metadata"].pop("name"), "'name' is a required property"),
        (lambda d: d.update(kind="ConfigMap"), "not a Karta object"),
    ],
)
def test_structure_errors_name_the_field(change: Callable[[dict[str, Any]], None], message: str) -> None:
    assert message in refused(change)


def test_structure_error_points_at_the_path() -> None:
    text = refused(lambda d: children(d)[0]["scaleDefinition"].update(replicasPath=1))
    assert "spec.structureDefinition.childComponents[0].scaleDefinition.replicasPath" in text


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("del(.spec)", "del function is not allowed"),
        ("[range(1e9)]", "function 'range' may produce excessive output"),
        ("env.HOME", "function 'env' reaches outside the input"),
        ("$ENV.PATH", "variable '$ENV' is not allowed"),
        ("[..]", "recursive descent operator"),
        ("def f: f; f", "calls itself"),
        ("gpu", "failed to compile JQ expression 'gpu'"),
    ],
)
def test_hostile_jq_is_refused_at_load(path: str, message: str) -> None:
    text = refused(lambda d: children(d)[0]["scaleDefinition"].update(replicasPath=path))
    assert message in text
    assert "component 'worker' scaleDefinition.replicasPath" in text


def test_jq_in_pod_group_paths_is_checked_too() -> None:
    def change(d: dict[str, Any]) -> None:
        d["spec"]["optimizationInstructions"]["gangScheduling"]["podGroups"][0]["members"][0]["filters"] = ["[..]"]

    assert "filters[0]" in refused(change)


def test_every_problem_is_reported_at_once() -> None:
    def change(d: dict[str, Any]) -> None:
        root(d).pop("statusDefinition")
        children(d)[0]["ownerRef"] = "ghost"

    text = refused(change)
    assert "root component must have status definition" in text and "non-existing component 'ghost'" in text


def test_policy_hints_are_checked() -> None:
    def bad_hints(value: str) -> Callable[[dict[str, Any]], None]:
        return lambda d: d["metadata"].setdefault("annotations", {}).update({HINTS_ANNOTATION: value})

    assert "primaryContainer: -1 is less than the minimum of 0" in refused(bad_hints("primaryContainer: -1"))
    assert "no component named 'ghost'" in refused(bad_hints("components: {ghost: {role: head}}"))
    assert "failed validation" in refused(bad_hints("autoscalingPath: '[..]'"))
    assert "not valid YAML" in refused(bad_hints("a: [b"))


def test_directory_skips_configmap_internals(tmp_path: Path) -> None:
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "x.yaml").write_text("garbage: [")
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(minimal()))
    (tmp_path / "notes.txt").write_text("not a definition")
    (loaded,) = load_directory(tmp_path)
    assert loaded.name == "example"
    assert loaded.source.endswith("one.yaml")


def test_file_with_a_bad_document_names_it(tmp_path: Path) -> None:
    second = copy.deepcopy(minimal())
    second["spec"]["structureDefinition"]["rootComponent"].pop("statusDefinition")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([minimal(), second]))
    with pytest.raises(DefinitionError) as caught:
        load_file(path)
    assert caught.value.source.endswith("two.yaml#2")


def test_unreadable_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: [b")
    with pytest.raises(DefinitionError, match="cannot read"):
        load_file(path)
