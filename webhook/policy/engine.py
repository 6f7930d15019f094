"""Run the policy rules over a resolved workload."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from webhook.karta.resolve import ResolvedWorkload

# Importing the rule modules registers their rules; the ray_* ones are KubeRay's own validation, by family.
from webhook.policy import (  # noqa: F401
    gpu,
    kuberay,
    ray_autoscaler,
    ray_cluster,
    ray_features,
    ray_rayjob,
    ray_rayservice,
    scale,
)
from webhook.policy.model import RULES, PolicySettings, RuleContext, Severity, Violation, where

__all__ = ["RULES", "demote_existing", "denied", "evaluate"]


def _document_order(violation: Violation) -> tuple[object, ...]:
    """Object-level findings first, then by field path with indices compared as numbers ([2] before [10])."""
    parts = re.split(r"\[(\d+)\]", violation.path)
    # split() alternates text and index, so equal positions always hold equal types.
    return (bool(violation.path), tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), violation.rule)


def evaluate(workload: ResolvedWorkload, settings: PolicySettings) -> list[Violation]:
    """Every violation of every enabled rule, in the order of the fields they point at."""
    violations: list[Violation] = []
    context = RuleContext(workload, settings)
    root_group = workload.definition.root_kind.group
    for rule in RULES.values():
        if rule.api_group is not None and rule.api_group != root_group:
            continue
        severity = settings.severity(rule)
        if severity is Severity.OFF:
            continue
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
    before = {v.key: v for v in old}
    result = []
    for violation in new:
        previous = before.get(violation.key)
        if violation.severity is Severity.DENY and previous is not None and _not_worse(violation, previous):
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
