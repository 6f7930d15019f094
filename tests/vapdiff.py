"""The exported policies against `check`: same verdict and rule ids for every rule the policy covers.

A policy sees an object after the API server has validated it against the CRD schema and applied its
defaults, so objects are filtered with tests.kuberay_table.apiserver_problems and defaulted first; the
webhook side is Evaluator.verdict on the same object, which is what `check` and the webhook decide with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from tests import vapcel
from tests.kuberay_table import apiserver_problems, defaulted
from webhook.config import build_evaluator, parse_config
from webhook.evaluation import Evaluator
from webhook.karta.registry import DefinitionSet
from webhook.vap.policy import Export, Namespaces, export


@dataclass(frozen=True)
class Compiled:
    evaluator: Evaluator
    exported: Export

    @property
    def covered(self) -> set[str]:
        return {r for d in self.exported.definitions for r in d.covered}


@cache
def compiled(config_json: str = "{}") -> Compiled:
    """The evaluator and the export for one configuration (JSON text, so that it can be a cache key)."""
    config = parse_config(json.loads(config_json), "test")
    definitions = DefinitionSet.builtin()
    evaluator = build_evaluator(config, definitions)
    return Compiled(evaluator, export([d.definition for d in definitions], config.policy, Namespaces()))


@dataclass(frozen=True)
class Outcome:
    denied: bool
    findings: frozenset[tuple[str, str]]  # (rule, severity)
    errors: tuple[str, ...] = ()


def policy_outcome(exported: Export, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> Outcome:
    """What the policies do to obj in an enforce-mode namespace: the deny policy's failures deny (Deny),
    the warn policy's warn."""
    findings = set()
    errors = []
    for policy in exported.objects:
        if policy["kind"] != "ValidatingAdmissionPolicy":
            continue
        failures = vapcel.run_policy(policy, obj, old, "UPDATE" if old is not None else "CREATE")
        severity = "deny" if policy["metadata"]["name"].endswith(".deny") else "warn"
        for failure in failures or []:
            if failure.error:
                errors.append(f"{policy['metadata']['name']}[{failure.index}]: {failure.message}")
                continue
            assert "messageExpression failed" not in failure.message, failure.message
            assert "\n" not in failure.message and len(failure.message.encode()) <= 5 * 1024, failure.message
            rule = failure.message[1 : failure.message.index("]")]
            findings.add((rule, severity))
    return Outcome(any(s == "deny" for _, s in findings), frozenset(findings), tuple(errors))


def webhook_outcome(compiled: Compiled, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> Outcome:
    verdict = compiled.evaluator.verdict(obj, old=old)
    assert verdict is not None
    covered = compiled.covered
    findings = frozenset((v.rule, str(v.severity)) for v in verdict.violations if v.rule in covered)
    return Outcome(any(s == "deny" for _, s in findings), findings)


def admitted_form(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """obj as a policy sees it (schema-checked, defaulted), or None when the API server refuses it first."""
    meta = obj.get("metadata") or {}
    if not meta.get("name") and meta.get("generateName"):
        # The API server makes the name before admission: generateName plus five random characters.
        obj = {**obj, "metadata": {**meta, "name": f"{meta['generateName']}x7k2q"}}
    stored = defaulted(obj)  # defaults (and null pruning) come before schema validation
    return None if apiserver_problems(stored) else stored
