"""One verdict per object: resolve through its definition, run the rules, decide by mode.

Shared by the webhook, the offline `check` and the background `audit`, so all three agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.config import Config, Mode
from webhook.karta.definitions import load_directory
from webhook.karta.registry import CompiledDefinition, DefinitionSet
from webhook.karta.resolve import ResolvedWorkload
from webhook.policy.engine import denied, evaluate
from webhook.policy.model import Violation


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
        return self.mode is not Mode.ENFORCE or not denied(self.violations)


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


def load_definitions(config: Config) -> DefinitionSet:
    """Built-in definitions, then those of the configured directories (which win for the same kind)."""
    extra = [d for directory in config.definition_directories for d in load_directory(directory)]
    return DefinitionSet.builtin(extra)


class Checker:
    def __init__(self, definitions: DefinitionSet, config: Config) -> None:
        self.definitions = definitions
        self.config = config

    def definition_for(self, obj: Mapping[str, Any]) -> CompiledDefinition | None:
        return self.definitions.for_object(as_served(obj))

    def violations(self, workload: ResolvedWorkload) -> list[Violation]:
        return evaluate(workload, self.config.policy)

    def verdict(self, obj: Mapping[str, Any], mode: Mode | None = None) -> Verdict | None:
        """None when no definition covers the object's kind."""
        compiled = self.definition_for(obj)
        if compiled is None:
            return None
        effective_mode = mode or self.config.mode
        workload = compiled.resolve(as_served(obj))
        violations = [] if effective_mode is Mode.OFF else self.violations(workload)
        return Verdict(
            kind=workload.kind,
            name=workload.name,
            namespace=workload.namespace,
            definition=compiled.definition.name,
            mode=effective_mode,
            violations=tuple(violations),
        )
