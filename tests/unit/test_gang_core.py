"""The gang read through Karta definitions: v1 `podGroups` and v2 `podGroup` alike, and what cannot be sized."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gang import Gangs, mutate, pod_from, raycluster, worker
from webhook.config import parse_config
from webhook.gang import SCHEDULERS, GangError, GroupObjectStatus, gang_of, owns_pods, plan_gang
from webhook.gang.plan import INFORMATIONAL_ANNOTATIONS
from webhook.karta.load import builtin_definitions
from webhook.karta.parse import parse_definition
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


# --- properties of the pod decision, for any cluster and any pod -----------------------------------


GROUP_NAMES = st.sampled_from(["cpu", "gpu", "small-group", "GPU_workers", "a"])


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(GROUP_NAMES, min_size=1, max_size=3, unique=True))
    groups = []
    for name in names:
        low = draw(st.integers(0, 3))
        groups.append(worker(
            name, draw(st.one_of(st.none(), st.integers(0, 6))), min_replicas=low,
            max_replicas=draw(st.integers(low, 6)), hosts=draw(st.sampled_from([None, 1, 2])),
            suspend=draw(st.sampled_from([None, False, True])),
        ))  # fmt: skip
    return raycluster(*groups, autoscaling=draw(st.booleans()))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    clusters(),
    st.sampled_from(["coscheduling", "volcano", "kai", "kueue", "yunikorn"]),
    st.sampled_from(list(GroupObjectStatus)),
    st.data(),
)
def test_pods_get_all_their_keys_or_none_and_nothing_is_overwritten(
    obj: dict[str, Any], scheduler: str, status: GroupObjectStatus, data: st.DataObject
) -> None:
    config = parse_config({"gang": {"scheduler": scheduler}}, "test")
    gangs = Gangs(config, obj, status=status)
    ((_, planned),) = gangs.plans.values()
    group = data.draw(st.sampled_from(["headgroup", *(g["groupName"] for g in obj["spec"]["workerGroupSpecs"])]))
    spec = SCHEDULERS[scheduler]
    preset = data.draw(
        st.dictionaries(
            st.sampled_from([*spec.labels, "app"]), st.sampled_from(["x", obj["metadata"]["name"]]), max_size=2
        )
    )
    notes = data.draw(
        st.dictionaries(
            st.sampled_from([*spec.annotations, *INFORMATIONAL_ANNOTATIONS]), st.sampled_from(["1", "y"]), max_size=2
        )
    )
    scheduler_name = data.draw(st.sampled_from([None, "", "default-scheduler", "other", spec.scheduler_name]))
    pod = pod_from(obj, group, labels=preset, annotations=notes, scheduler_name=scheduler_name)
    admitted, outcome = mutate(pod, config, gangs)
    added = {k for k in admitted["metadata"]["labels"] if k not in pod["metadata"]["labels"]}
    added |= {
        k for k in admitted["metadata"].get("annotations") or {} if k not in (pod["metadata"].get("annotations") or {})
    }
    # Nothing anyone else set was changed or removed.
    for section in ("labels", "annotations"):
        for key, value in (pod["metadata"].get(section) or {}).items():
            if key not in INFORMATIONAL_ANNOTATIONS:
                assert admitted["metadata"][section][key] == value
    keys = planned.keys.get(group)
    grouped = outcome.gang_reason is None
    if grouped:
        assert keys is not None and planned.withheld is None
        assert status is GroupObjectStatus.EXPECTED or not spec.needs_group_object
        everything = {**keys.labels, **keys.annotations}
        final = {**admitted["metadata"]["labels"], **(admitted["metadata"].get("annotations") or {})}
        for key, value in everything.items():
            if key != "yunikorn.apache.org/app-id":
                assert final[key] == value  # all of them
    else:
        own = {*spec.labels, *spec.annotations, "yunikorn.apache.org/app-id"}
        assert not added & own  # none of them
        assert admitted["spec"].get("schedulerName") == pod["spec"].get("schedulerName")
        assert not set(admitted["metadata"].get("annotations") or {}) & set(INFORMATIONAL_ANNOTATIONS)
    # Kueue: never one of its two keys added without the other being there.
    kueue = {"kueue.x-k8s.io/pod-group-name", "kueue.x-k8s.io/pod-group-total-count"}
    if added & kueue:
        assert kueue <= {*admitted["metadata"]["labels"], *(admitted["metadata"].get("annotations") or {})}
    again, second = mutate(admitted, config, gangs)
    assert again == admitted, second.notes
