"""Run the policy rules over a resolved workload."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from webhook.karta.model import KartaDefinition
from webhook.karta.resolve import ResolvedWorkload
from webhook.policy.model import (
    READS_INSTANCE_IDS,
    READS_PODS,
    READS_SCALE,
    PolicySettings,
    Rule,
    RuleContext,
    Severity,
    Violation,
    where,
)
from webhook.policy.registry import BUILTIN_RULES, RuleRegistry


@dataclass(frozen=True)
class RulePlan:
    """The rules one definition's workloads run, with their severities: worked out once per definition.

    A rule is left out when it cannot apply to the definition's root kind, is off, or reads part of a
    resolution the definition never gives (scale, pod templates, instance ids), so a review runs only
    the checks that can find something in its object.
    """

    definition: str
    rules: tuple[tuple[Rule, Severity], ...]
    left_out: tuple[str, ...]  # ids of rules in force for the API group that this definition cannot feed


def gives(definition: KartaDefinition) -> frozenset[str]:
    """What the resolution of this definition's workloads can hold (READS_*)."""
    found = set()
    for component in definition.components:
        if component.scale is not None and component.scale.paths():
            found.add(READS_SCALE)
        if component.spec is not None:
            found.add(READS_PODS)
        if component.instance_id_path:
            found.add(READS_INSTANCE_IDS)
    return frozenset(found)


def plan(definition: KartaDefinition, settings: PolicySettings, rules: RuleRegistry = BUILTIN_RULES) -> RulePlan:
    kind = definition.root_kind
    available = gives(definition)
    chosen, left_out = [], []
    for rule, severity in rules.in_force(kind.group, settings):
        if rule.applies_to(kind.group, kind.kind) and rule.reads <= available:
            chosen.append((rule, severity))
        else:
            left_out.append(rule.id)
    return RulePlan(definition.name, tuple(chosen), tuple(left_out))


def _document_order(violation: Violation) -> tuple[object, ...]:
    """Object-level findings first, then by field path with indices compared as numbers ([2] before [10])."""
    parts = re.split(r"\[(\d+)\]", violation.path)
    # split() alternates text and index, so equal positions always hold equal types.
    return (bool(violation.path), tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), violation.rule)


def evaluate(
    workload: ResolvedWorkload,
    settings: PolicySettings,
    rules: RuleRegistry = BUILTIN_RULES,
    rule_plan: RulePlan | None = None,
) -> list[Violation]:
    """Every violation of every rule in the definition's plan, in the order of the fields they point at."""
    violations: list[Violation] = []
    context = RuleContext(workload, settings)
    if rule_plan is None:
        rule_plan = plan(workload.definition, settings, rules)
    for rule, severity in rule_plan.rules:
        for finding in rule.check(context):
            effective = severity
            if finding.at_most is Severity.WARN and severity is Severity.DENY:
                effective = Severity.WARN
            violations.append(
                Violation(rule.id, effective, where(finding.location), finding.message, finding.value, finding.excess)
            )
    return sorted(violations, key=_document_order)


def demote_existing(new: Iterable[Violation], old: Iterable[Violation]) -> list[Violation]:
    """On UPDATE, a denying violation the old object already had, and that is not made worse, only warns.

    So an object admitted before this webhook (or before a rule) can still be edited, have its
    finalizers removed and be deleted, while a change that adds or worsens a problem is still refused.
    """
    # Several findings of one rule can point at one place (an instance whose replicas and minReplicas
    # are both computed and both wrong): a new one is old when any of them was at least as bad.
    before: dict[tuple[str, str], list[Violation]] = {}
    for violation in old:
        before.setdefault(violation.key, []).append(violation)
    result = []
    for violation in new:
        previous = before.get(violation.key, ())
        if violation.severity is Severity.DENY and any(_not_worse(violation, p) for p in previous):
            result.append(
                replace(
                    violation,
                    severity=Severity.WARN,
                    message=violation.message + " (already present before this update)",
                )
            )
        else:
            result.append(violation)
    return result


def _not_worse(new: Violation, old: Violation) -> bool:
    if new.excess is None or old.excess is None:
        return bool(new.value == old.value)  # same offending value: untouched
    return new.excess <= old.excess


def denied(violations: Iterable[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity is Severity.DENY]
