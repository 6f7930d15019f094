"""`karta-admission export vap`: the objects are valid Kubernetes objects, the expressions compile and use
only what Kubernetes 1.30's CEL environment has, and configured modes and severities shape the output."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cel
import kubernetes_validate
import pytest
import yaml

from tests.vapcel import compiled
from webhook.cli.main import main
from webhook.config import parse_config
from webhook.karta.registry import DefinitionSet
from webhook.policy.registry import BUILTIN_RULES
from webhook.vap import jq
from webhook.vap.policy import ANNOTATION_NOT_COVERED, Namespaces, export
from webhook.vap.rules import COMPILERS, NOT_EXPRESSIBLE

KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Functions of the Kubernetes 1.30 CEL environment (k8s.io/apiserver/pkg/cel/environment/base.go: the
# standard library, ext.Strings v2, and the Kubernetes lists, regex and quantity libraries) that the
# policies may call; CEL operators are listed by their overload names.
KUBERNETES_130_FUNCTIONS = frozenset(
    {
        "!_", "-_", "@in", "@not_strictly_false", "_!=_", "_%_", "_&&_", "_*_", "_+_", "_-_", "_/_", "_<_",
        "_<=_", "_==_", "_>_", "_>=_", "_?_:_", "_[_]", "_||_", "dyn", "double", "int", "string", "size", "type",
        "matches", "startsWith", "endsWith", "contains",
        "indexOf", "lastIndexOf", "lowerAscii", "upperAscii", "substring", "trim", "join", "split", "replace",
        "sum", "min", "max", "isSorted",
        "quantity", "isQuantity", "isInteger", "asInteger", "asApproximateFloat", "isGreaterThan", "isLessThan",
        "compareTo",
    }
)  # fmt: skip
ROOT_VARIABLES = frozenset({"object", "oldObject", "request", "variables", "map", "list", "int", "double",
                            "string", "bool", "null_type"})  # fmt: skip
CONFIGS = {
    "defaults": {},
    "audit": {"mode": "audit", "rules": {"gpu-on-head": "deny", "replicas-within-bounds": "warn"}},
    "off": {"mode": "off", "namespaceModeLabel": "example.com/policy", "rules": {"gpu-toleration": "off"}},
}


def _objects(name: str) -> list[dict[str, Any]]:
    config = parse_config(CONFIGS[name], name)
    namespaces = Namespaces(str(config.mode), config.namespace_mode_label, ("kube-system", "karta-admission"))
    return export([d.definition for d in DefinitionSet.builtin()], config.policy, namespaces).objects


def _expressions(policy: dict[str, Any]) -> list[tuple[str, str]]:
    spec = policy["spec"]
    found = [(f"variables.{v['name']}", v["expression"]) for v in spec["variables"]]
    found += [(f"matchConditions.{c['name']}", c["expression"]) for c in spec["matchConditions"]]
    for index, v in enumerate(spec["validations"]):
        found += [(f"validations[{index}]", v["expression"]), (f"validations[{index}].message", v["messageExpression"])]
    return found


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(config: str, version: str) -> None:
    objects = _objects(config)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_objects_follow_the_api_servers_own_validation(config: str) -> None:
    """What admissionregistration validation checks beyond the OpenAPI schema (validation.go)."""
    objects = _objects(config)
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"}
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 253 and re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name
        )
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            spec = obj["spec"]
            assert spec["policyName"] in policies
            assert not {"Deny", "Warn"} <= set(spec["validationActions"]), "Deny and Warn may not be used together"
            assert len(set(spec["validationActions"])) == len(spec["validationActions"])
            continue
        spec = obj["spec"]
        names = [v["name"] for v in spec["variables"]]
        assert len(names) == len(set(names))
        assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names)
        assert spec["validations"] and len(spec["matchConditions"]) <= 64
        for validation in spec["validations"]:
            assert validation["reason"] in {"Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"}
            assert "\n" not in validation["message"]
        assert len(json.dumps(obj)) < 512 * 1024, "far below etcd's 1.5 MiB object limit"


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_expression_compiles_with_kubernetes_130_functions_only(config: str) -> None:
    for policy in (o for o in _objects(config) if o["kind"] == "ValidatingAdmissionPolicy"):
        defined: list[str] = []
        for where, expression in _expressions(policy):
            program = compiled(expression)  # raises on a syntax error
            unknown = set(program.functions()) - KUBERNETES_130_FUNCTIONS
            assert not unknown, f"{policy['metadata']['name']} {where}: {unknown}"
            assert ".?" not in expression and "cel.bind" not in expression, "not in Kubernetes 1.30 VAP CEL"
            used = set(re.findall(r"variables\.([A-Za-z_][A-Za-z0-9_]*)", expression))
            if where.startswith("variables."):
                assert used <= set(defined), f"{where} reads a variable defined after it: {used - set(defined)}"
                defined.append(where.removeprefix("variables."))
            else:
                assert used <= set(defined)


def test_regular_expressions_are_re2_literals_that_compile() -> None:
    """Kubernetes 1.29+ refuses a policy whose regex literal does not compile (cel.ValidateRegexLiterals)."""
    for policy in (o for o in _objects("defaults") if o["kind"] == "ValidatingAdmissionPolicy"):
        for _, expression in _expressions(policy):
            for literal in re.findall(r'matches\(("(?:[^"\\]|\\.)*")\)', expression):
                pattern = json.loads(literal)
                re.compile(pattern)
                assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), "no lookaround or backreference in RE2"


def test_every_rule_is_either_compiled_or_listed_with_a_reason() -> None:
    assert set(COMPILERS) | set(NOT_EXPRESSIBLE) == set(BUILTIN_RULES.ids())
    assert not set(COMPILERS) & set(NOT_EXPRESSIBLE)
    for item in export([d.definition for d in DefinitionSet.builtin()], parse_config({}, "t").policy).definitions:
        assert set(item.covered) | set(item.not_covered) == set(BUILTIN_RULES.ids())
        for policy in item.objects:
            if policy["kind"] == "ValidatingAdmissionPolicy":
                assert json.loads(policy["metadata"]["annotations"][ANNOTATION_NOT_COVERED]) == item.not_covered


def test_off_rules_are_listed_not_compiled() -> None:
    exported = export([d.definition for d in DefinitionSet.builtin()],
                      parse_config({"rules": {"gpu-toleration": "off"}}, "t").policy)  # fmt: skip
    for item in exported.definitions:
        assert item.not_covered["gpu-toleration"] == "off in the configuration"
        assert "gpu-toleration" not in item.covered
        text = json.dumps(item.objects)
        assert "[gpu-toleration]" not in text


@pytest.mark.parametrize(
    ("mode", "enforce", "audit", "either"),
    [
        ("enforce", [("NotIn", ["audit", "off"])], [("In", ["audit"])], [("NotIn", ["off"])]),
        ("audit", [("In", ["enforce"])], [("NotIn", ["enforce", "off"])], [("NotIn", ["off"])]),
        ("off", [("In", ["enforce"])], [("In", ["audit"])], [("In", ["enforce", "audit"])]),
    ],
)
def test_bindings_select_namespaces_by_mode_like_the_webhook_entries(mode, enforce, audit, either) -> None:
    objects = _objects({"enforce": "defaults", "audit": "audit", "off": "off"}[mode])
    label = "example.com/policy" if mode == "off" else "karta-admission.io/mode"
    by_suffix: dict[str, dict[str, Any]] = {}
    for obj in objects:
        if obj["kind"] == "ValidatingAdmissionPolicyBinding" and "rayservice" in obj["metadata"]["name"]:
            by_suffix[obj["metadata"]["name"].rsplit(".", 1)[1]] = obj["spec"]
    expected = {"deny-enforce": (["Deny", "Audit"], enforce), "deny-audit": (["Warn", "Audit"], audit),
                "warn": (["Warn", "Audit"], either)}  # fmt: skip
    for suffix, (actions, selector) in expected.items():
        spec = by_suffix[suffix]
        assert spec["validationActions"] == actions
        expressions = spec["matchResources"]["namespaceSelector"]["matchExpressions"]
        assert expressions[0] == {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                  "values": ["kube-system", "karta-admission"]}  # fmt: skip
        assert [(e["operator"], e["values"]) for e in expressions[1:] if e["key"] == label] == selector


def test_a_path_outside_the_subset_leaves_its_rules_not_covered(tmp_path: Path) -> None:
    source = yaml.safe_load((Path(__file__).parents[2] / "docs/samples/rayservice.yaml").read_text())
    worker = source["spec"]["structureDefinition"]["childComponents"][2]
    # `.[]` over a map's values in a computed order: nothing the compiler should guess at.
    worker["scaleDefinition"]["replicasPath"] = ".spec.rayClusterConfig.workerGroupSpecs[]? | (.replicas | tostring)"
    (tmp_path / "rayservice.yaml").write_text(yaml.safe_dump(source))
    definitions = DefinitionSet.from_directories([tmp_path])
    item = next(d for d in export([c.definition for c in definitions], parse_config({}, "t").policy).definitions
                if d.kind.endswith("RayService"))  # fmt: skip
    assert "tostring" in item.not_covered["replicas-within-bounds"]
    assert "gpu-on-head" in item.not_covered  # it reads every component, the worker included
    assert item.covered["ray-name"] == "deny"  # rules that do not read the definition still compile


def test_the_jq_subset_refuses_what_it_cannot_translate() -> None:
    for expression in (".a | tostring", ".a[0]", ".a < 2", "[.a[]] | length", ".a as $x | $x", ".a, .b"):
        with pytest.raises(jq.Untranslatable):
            jq.translate_path(jq.shape(expression), "object", given_is_map=True)


def test_export_command_yaml_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mode: audit\nrules:\n  gpu-on-head: off\n")
    assert main(["export", "vap", "--config", str(config), "--exclude-namespace", "ray-system"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# ValidatingAdmissionPolicies compiled by `karta-admission export vap`")
    assert "#     gpu-on-head: off in the configuration" in out
    assert "#     ray-job-runtime-env: parses runtimeEnvYAML as YAML, which CEL cannot" in out
    documents = [d for d in yaml.safe_load_all(out) if d]
    assert {d["kind"] for d in documents} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert "objects for 3 definitions" in err
    assert main(["export", "vap", "-o", "json", "--mode", "enforce"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List" and len(listed["items"]) == len(documents)


def test_export_command_refuses_a_bad_configuration(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("rules:\n  no-such-rule: deny\n")
    assert main(["export", "vap", "--config", str(config)]) == 2
    assert "no-such-rule" in capsys.readouterr().err


def test_cel_rust_is_the_library_used() -> None:
    assert hasattr(cel, "compile")
