"""The rule plan: worked out once per definition, and leaving out only rules that could not find anything."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.corpus import ray_objects
from tests.kuberay_table import load_cases
from webhook.evaluation import as_served
from webhook.karta.parse import parse_definition
from webhook.karta.registry import DefinitionSet
from webhook.policy.engine import RulePlan, evaluate, plan
from webhook.policy.model import PolicySettings, Severity
from webhook.policy.registry import BUILTIN_RULES

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = PolicySettings()


def _definition(kind: str) -> Any:
    return next(d for d in DefinitionSet.builtin() if d.definition.root_kind.kind == kind).definition


def _ids(rule_plan: RulePlan) -> set[str]:
    return {rule.id for rule, _ in rule_plan.rules}


def test_kind_specific_rules_run_only_for_their_kind() -> None:
    service, job, cluster = (plan(_definition(k), SETTINGS) for k in ("RayService", "RayJob", "RayCluster"))
    assert {"ray-job-ttl", "ray-job-cluster-source"} <= _ids(job)
    assert not {"ray-job-ttl", "ray-job-cluster-source"} & (_ids(service) | _ids(cluster))
    assert "ray-service-upgrade-strategy" in _ids(service)
    assert "ray-service-upgrade-strategy" in job.left_out
    assert "ray-cluster-upgrade-strategy" in _ids(cluster) and "ray-cluster-upgrade-strategy" in service.left_out
    # Rules for every kind stay in every plan.
    for every in ("gpu-whole-number", "replicas-within-bounds", "ray-group-labels", "definition-resolution"):
        assert all(every in _ids(p) for p in (service, job, cluster)), every


def test_rules_switched_off_are_not_planned() -> None:
    settings = PolicySettings(severities={"gpu-whole-number": Severity.OFF})
    assert "gpu-whole-number" not in _ids(plan(_definition("RayService"), settings))


def _without(definition_kind: str, key: str) -> Any:
    """The built-in definition's YAML with `key` removed from every component."""
    text = (ROOT / "docs" / "samples" / f"{definition_kind.lower()}.yaml").read_text()
    raw = yaml.safe_load(text)
    stripped = copy.deepcopy(raw)
    for component in stripped["spec"]["structureDefinition"]["childComponents"]:
        component.pop(key, None)
    root = stripped["spec"]["structureDefinition"]["rootComponent"]
    root.pop(key, None)
    return parse_definition(stripped, "test")


def test_a_definition_without_scale_leaves_the_scale_rules_out() -> None:
    rule_plan = plan(_without("RayCluster", "scaleDefinition"), SETTINGS)
    assert {"replicas-within-bounds", "min-not-above-max", "non-negative-scale"} <= set(rule_plan.left_out)
    assert "gpu-whole-number" in _ids(rule_plan)


def test_a_definition_without_pod_templates_leaves_the_pod_rules_out() -> None:
    rule_plan = plan(_without("RayCluster", "specDefinition"), SETTINGS)
    gpu_rules = {rule.id for rule in BUILTIN_RULES if rule.category == "GPU"}
    assert gpu_rules | {"pod-template-containers"} <= set(rule_plan.left_out)
    assert "replicas-within-bounds" in _ids(rule_plan)


def _everything(definition: Any) -> RulePlan:
    """Every rule in force for the API group, whatever the definition gives: what ran before plans."""
    return RulePlan(definition.name, tuple(BUILTIN_RULES.in_force(definition.root_kind.group, SETTINGS)), ())


def _objects() -> list[tuple[str, dict[str, Any]]]:
    found = [(f"corpus/{name}", obj) for name, obj in ray_objects()]
    found += [(f"kuberay/{case.id}", case.obj) for case in load_cases()]
    return found


@pytest.mark.parametrize(
    "definitions",
    [DefinitionSet.builtin(), DefinitionSet([_without("RayCluster", "scaleDefinition")])],
    ids=["builtin", "raycluster-without-scale"],
)
def test_the_plan_finds_what_running_every_rule_finds(definitions: DefinitionSet) -> None:
    """Corpus objects and KubeRay's validation cases (many of them broken): the same violations."""
    compared = 0
    for name, obj in _objects():
        served = as_served(obj)
        compiled = definitions.for_object(served)
        if compiled is None:
            continue
        workload = compiled.resolve(served)
        planned = evaluate(workload, SETTINGS, rule_plan=plan(compiled.definition, SETTINGS))
        assert planned == evaluate(workload, SETTINGS, rule_plan=_everything(compiled.definition)), name
        compared += 1
    assert compared >= 80
