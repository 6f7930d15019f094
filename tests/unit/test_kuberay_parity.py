"""KubeRay's own validation tests, ported as a table of manifests (tests/data/kuberay-validation).

Every case an API server can deliver agrees with KubeRay: what KubeRay rejects is denied (or warned by a
rule that is a warning by design) with a violation at the field, what it accepts is allowed unless a
documented stricter rule denies it. Cases marked out are checked to be out for the reason given when it
is the CRD: the API server must really refuse them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from tests.kuberay_table import Case, apiserver_problems, default_checker_for, defaulted, judge, load_cases
from webhook.evaluation import Evaluator
from webhook.policy.registry import BUILTIN_RULES

CASES = load_cases()


@cache
def _checker(gates: tuple[tuple[str, bool], ...]) -> Evaluator:
    return default_checker_for(dict(gates))  # type: ignore[no-any-return]


def checker_for(gates: dict[str, bool]) -> Evaluator:
    return _checker(tuple(sorted(gates.items())))


def params() -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", params())
def test_case_agrees_with_kuberay(case: Case) -> None:
    outcome = judge(case, checker_for)
    assert outcome.agrees, outcome.detail


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.out and c.out.startswith("CRD")])
def test_cases_marked_out_for_the_crd_are_refused_by_it(case: Case) -> None:
    assert apiserver_problems(defaulted(case.obj)), f"{case.id} is marked out ({case.out}) but the CRD accepts it"


def test_every_kuberay_rule_is_exercised_by_the_table() -> None:
    fired = {v.rule for case in CASES for v in judge(case, checker_for).violations}
    kuberay_rules = {r.id for r in BUILTIN_RULES if r.check.__module__.startswith("webhook.policy.ray_")}
    # ray-group-name-pod-name is ours (stricter than KubeRay): tests/unit/test_rules.py covers it.
    assert kuberay_rules - fired == {"ray-group-name-pod-name"}


def test_table_covers_the_rules_it_names() -> None:
    named = {c.stricter for c in CASES if c.stricter}
    assert named <= set(BUILTIN_RULES.ids())
    assert len(CASES) > 200  # every upstream case is in the table, counted or out with a reason


def test_stricter_rules_are_the_documented_ones() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Stricter than KubeRay", 1)[1].split("\n## ", 1)[0]
    for rule in {c.stricter for c in CASES if c.stricter}:
        assert f"`{rule}`" in section, f"{rule} denies what KubeRay accepts but is not in the README's list"
