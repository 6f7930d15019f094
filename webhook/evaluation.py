"""The one place that decides: an object (and, on UPDATE, its old version) in, a verdict out.

The webhook, `check` and `audit` all call `Evaluator.verdict`, so they cannot disagree: the same
definitions, the same rules, the same mode handling and the same UPDATE leniency.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.karta.model import KartaDefinition
from webhook.karta.registry import CompiledDefinition, DefinitionSet
from webhook.karta.resolve import ResolvedWorkload
from webhook.policy.engine import RulePlan, demote_existing, evaluate, plan
from webhook.policy.model import PolicySettings, Severity, Violation


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"
    OFF = "off"


# KubeRay's CRDs still serve ray.io/v1alpha1 (RayCluster; RayJob and RayService deprecated) next to
# ray.io/v1, with no conversion webhook (strategy None): a v1alpha1 object is stored as written, pruned
# and defaulted by the v1alpha1 schema, and KubeRay reads it as ray.io/v1. So it is checked as the v1
# object it becomes. In a cluster the webhook gets such requests as v1 anyway (its rules name v1 and
# matchPolicy: Equivalent converts the request); this serves `check`, `audit` and explicit registrations.
EQUIVALENT_VERSIONS = {("ray.io/v1alpha1", kind): "ray.io/v1" for kind in ("RayCluster", "RayJob", "RayService")}


def as_served(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """obj under the apiVersion its controller reads it as (ray.io/v1alpha1 Ray objects as ray.io/v1)."""
    target = EQUIVALENT_VERSIONS.get((str(obj.get("apiVersion", "")), str(obj.get("kind", ""))))
    return {**obj, "apiVersion": target} if target else obj


class DefinitionStore:
    """The definitions in force. Replaced whole by one assignment, so a review in flight keeps the set
    it started with and never sees half of an update."""

    def __init__(self, definitions: DefinitionSet) -> None:
        self._current = definitions

    @property
    def current(self) -> DefinitionSet:
        return self._current

    def replace(self, definitions: DefinitionSet) -> None:
        self._current = definitions


@dataclass(frozen=True)
class Verdict:
    kind: str
    name: str
    namespace: str
    definition: str
    mode: Mode
    violations: tuple[Violation, ...]

    @property
    def allowed(self) -> bool:
        return self.mode is not Mode.ENFORCE or not self.denying

    @property
    def denying(self) -> list[Violation]:
        return [v for v in self.violations if v.severity is Severity.DENY]


class Evaluator:
    def __init__(self, store: DefinitionStore, policy: PolicySettings, mode: Mode = Mode.ENFORCE) -> None:
        self.store = store
        self.policy = policy
        self.mode = mode
        # Rule plans for the definition set in force, by definition identity; dropped when the set changes.
        self._plans: tuple[DefinitionSet, dict[int, tuple[KartaDefinition, RulePlan]]] = (store.current, {})

    @property
    def definitions(self) -> DefinitionSet:
        return self.store.current

    def definition_for(self, obj: Mapping[str, Any]) -> CompiledDefinition | None:
        return self.store.current.for_object(as_served(obj))

    def rule_plan(self, definition: KartaDefinition) -> RulePlan:
        """The definition's rule plan, computed on first use and kept while its definition set is in force."""
        current = self.store.current
        plans = self._plans
        if plans[0] is not current:
            plans = self._plans = (current, {})  # one assignment: a concurrent review sees old or new
        found = plans[1].get(id(definition))
        if found is None or found[0] is not definition:
            found = plans[1][id(definition)] = (definition, plan(definition, self.policy))
        return found[1]

    def violations(self, workload: ResolvedWorkload) -> list[Violation]:
        return evaluate(workload, self.policy, rule_plan=self.rule_plan(workload.definition))

    def verdict(
        self, obj: Mapping[str, Any], mode: Mode | None = None, old: Mapping[str, Any] | None = None
    ) -> Verdict | None:
        """The verdict on obj in mode (default: the configured one); None when no definition covers its kind.

        With old (an UPDATE), a denying violation the old object already had and that the update does
        not make worse only warns: objects admitted before the webhook stay editable and deletable.
        """
        obj = as_served(obj)
        compiled = self.store.current.for_object(obj)
        if compiled is None:
            return None
        effective = mode or self.mode
        violations: list[Violation] = []
        if effective is not Mode.OFF:
            violations = self.violations(compiled.resolve(obj))
            if old is not None and violations:
                violations = demote_existing(violations, self.violations(compiled.resolve(as_served(old))))
        meta = obj.get("metadata") or {}
        return Verdict(
            kind=str(obj.get("kind") or ""),
            name=str(meta.get("name") or meta.get("generateName") or ""),
            namespace=str(meta.get("namespace") or ""),
            definition=compiled.definition.name,
            mode=effective,
            violations=tuple(violations),
        )
