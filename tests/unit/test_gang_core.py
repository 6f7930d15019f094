"""The gang read through Karta definitions: v1 `podGroups` and v2 `podGroup` alike, and what cannot be sized."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.gang import Gangs, mutate, pod_from, raycluster, worker
from webhook.config import parse_config
from webhook.gang import GangError, gang_of, owns_pods, plan_gang
from webhook.karta.definitions import builtin_definitions, parse_definition
from webhook.karta.registry import DefinitionSet
from webhook.karta.resolve import ResolvedWorkload

RAYCLUSTER_DEFINITION: dict[str, Any] = yaml.safe_load(
    __import__("importlib.resources").resources.files("webhook").joinpath("definitions", "raycluster.yaml").read_text()
)


def definitions_with(gang: dict[str, Any]) -> DefinitionSet:
    document = copy.deepcopy(RAYCLUSTER_DEFINITION)
    document["spec"]["optimizationInstructions"]["gangScheduling"] = gang
    return DefinitionSet([parse_definition(document, "test")])


def resolved(definitions: DefinitionSet, obj: dict[str, Any]) -> ResolvedWorkload:
    compiled = definitions.for_object(obj)
    assert compiled is not None
    return compiled.resolve(obj)


CLUSTER = raycluster(worker("cpu", 3, min_replicas=1), worker("gpu", 2))

MEMBER_KEY = ['.metadata.labels["ray.io/cluster"]']
V2_FORMS: dict[str, dict[str, Any]] = {
    "v2 whole root": {"podGroup": {"name": "cluster"}},
    "v2 sub-groups": {
        "podGroup": {"name": "cluster", "subGroups": [{"componentName": "head"}, {"componentName": "worker"}]}
    },
    "v2 wins over v1": {
        "podGroup": {"name": "cluster"},
        "podGroups": [{"name": "x", "members": [{"componentName": "head", "groupByKeyPaths": ['"x"']}]}],
    },
    "v1 leaf members (Karta's catalog)": {
        "podGroups": [
            {
                "name": "cluster",
                "members": [
                    {"componentName": "head", "groupByKeyPaths": MEMBER_KEY},
                    {"componentName": "worker", "groupByKeyPaths": MEMBER_KEY},
                ],
            }
        ]
    },
}


@pytest.mark.parametrize("form", sorted(V2_FORMS))
def test_every_form_of_the_instructions_gives_the_same_gang(form: str) -> None:
    """Karta's v2 podGroup (KAI prefers it) groups like v1 gangScheduling: one gang per RayCluster,
    the head and every worker group; leaf members of one podGroups entry are one gang, not per-pod sizes."""
    builtin = gang_of(resolved(DefinitionSet(builtin_definitions()), CLUSTER))
    other = gang_of(resolved(definitions_with(V2_FORMS[form]), CLUSTER))
    assert [(t.name, t.pods, t.minimum) for t in other.tasks] == [(t.name, t.pods, t.minimum) for t in builtin.tasks]
    assert other.key == builtin.key == CLUSTER["metadata"]["name"]
    assert other.v2 == form.startswith("v2")


@pytest.mark.parametrize("form", sorted(V2_FORMS))
def test_pods_of_every_form_get_the_same_keys(form: str) -> None:
    config = parse_config({"gang": {"scheduler": "kai"}}, "test")
    builtin = Gangs(config, CLUSTER)
    definitions = definitions_with(V2_FORMS[form])
    other = Gangs(config, CLUSTER)
    other.plans = {key: (uid, plan_gang(resolved(definitions, CLUSTER), config.gang))
                   for key, (uid, _) in builtin.plans.items()}  # fmt: skip
    for group in ("headgroup", "cpu", "gpu"):
        pod = pod_from(CLUSTER, group)
        expected, _ = mutate(pod, config, builtin)
        got, outcome = mutate(pod, config, other, definitions)
        assert outcome.verdict == "patched", outcome.notes
        assert got == expected


def test_filters_and_non_owners_cannot_be_sized() -> None:
    member = {"componentName": "raycluster", "groupByKeyPaths": MEMBER_KEY, "filters": ['.metadata.labels["g"] == "y"']}
    filtered = definitions_with({"podGroups": [{"name": "cluster", "members": [member]}]})
    with pytest.raises(GangError, match="has filters"):
        gang_of(resolved(filtered, CLUSTER))
    kinds = {c.root_kind.kind: owns_pods(c) for c in builtin_definitions()}
    assert kinds == {"RayCluster": True, "RayService": False, "RayJob": False}
    unnamed = copy.deepcopy(CLUSTER)
    del unnamed["metadata"]["name"]
    with pytest.raises(GangError, match=r"no metadata\.name"):
        gang_of(resolved(DefinitionSet(builtin_definitions()), unnamed))
