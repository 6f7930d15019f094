"""Parsing a Karta object into the typed model (webhook.karta.model), then checking it whole."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from webhook.karta.model import (
    GVK,
    HINTS_ANNOTATION,
    KARTA_API_VERSIONS,
    KARTA_KINDS,
    Action,
    Component,
    ComponentHints,
    ConditionMatch,
    ConditionsDefinition,
    KartaDefinition,
    PodGroupMember,
    PodGroups,
    PodGroupV2,
    PodSelector,
    PolicyHints,
    ScaleDefinition,
    SpecDefinition,
    StatusDefinition,
    StatusMatcher,
    SuspendDefinition,
    TypeSelector,
)
from webhook.karta.validate import hint_reference_problems, jq_problems, validator_problems
from webhook.schemas import schema_problems


class DefinitionError(ValueError):
    """A Karta definition that cannot be used; `problems` name the component and the field."""

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: invalid Karta definition:\n  - " + "\n  - ".join(self.problems))


def is_karta_object(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("apiVersion") in KARTA_API_VERSIONS and obj.get("kind") in KARTA_KINDS


def parse_definition(obj: Mapping[str, Any], source: str) -> KartaDefinition:
    """Build and fully validate one definition; raise DefinitionError listing every problem found."""
    if not is_karta_object(obj):
        raise DefinitionError(
            source,
            [f"not a Karta object (apiVersion {obj.get('apiVersion')!r}, kind {obj.get('kind')!r}); "
             "expected apiVersion run.ai/v1alpha1, kind Karta"],
        )  # fmt: skip
    problems = schema_problems("karta.schema.json", obj)
    if problems:
        raise DefinitionError(source, problems)
    name = str(obj["metadata"]["name"])
    spec = obj["spec"]
    structure = spec["structureDefinition"]
    root = _component(structure["rootComponent"])
    children = tuple(_component(c) for c in structure.get("childComponents") or ())
    gang = (spec.get("optimizationInstructions") or {}).get("gangScheduling") or {}
    pod_groups = tuple(
        PodGroups(
            name=g["name"],
            members=tuple(
                PodGroupMember(
                    component_name=m["componentName"],
                    group_by_key_paths=tuple(m.get("groupByKeyPaths") or ()),
                    filters=tuple(m.get("filters") or ()),
                )
                for m in g["members"]
            ),
        )
        for g in gang.get("podGroups") or ()
    )
    pod_group = None
    if gang.get("podGroup"):
        pg = gang["podGroup"]
        pod_group = PodGroupV2(pg["name"], tuple(s["componentName"] for s in pg.get("subGroups") or ()))
    hints, hint_problems = _hints(obj.get("metadata", {}).get("annotations") or {})
    definition = KartaDefinition(
        name=name,
        source=source,
        root=root,
        children=children,
        pod_groups=pod_groups,
        pod_group=pod_group,
        hints=hints,
    )
    problems = validator_problems(definition)
    if not problems:
        problems = jq_problems(definition)
    problems += hint_problems
    if not problems:
        problems = hint_reference_problems(definition)
    if problems:
        raise DefinitionError(source, problems)
    return definition


def _component(raw: Mapping[str, Any]) -> Component:
    kind = GVK(raw["kind"]["group"], raw["kind"]["version"], raw["kind"]["kind"]) if "kind" in raw else None
    spec = None
    if "specDefinition" in raw:
        s = raw["specDefinition"]
        spec = SpecDefinition(
            pod_template_spec_path=s.get("podTemplateSpecPath") or None,
            pod_spec_path=s.get("podSpecPath") or None,
            metadata_path=s.get("metadataPath") or None,
            fragments={k: v for k, v in (s.get("fragmentedPodSpecDefinition") or {}).items() if v},
        )
    scale = None
    if "scaleDefinition" in raw:
        s = raw["scaleDefinition"]
        scale = ScaleDefinition(
            s.get("replicasPath") or None, s.get("minReplicasPath") or None, s.get("maxReplicasPath") or None
        )
    status = None
    if "statusDefinition" in raw:
        s = raw["statusDefinition"]
        conditions = None
        if "conditionsDefinition" in s:
            c = s["conditionsDefinition"]
            conditions = ConditionsDefinition(
                path=c["path"],
                type_field=c.get("typeFieldName") or "type",
                status_field=c.get("statusFieldName") or "status",
                message_field=c.get("messageFieldName") or "message",
                reason_field=c.get("reasonFieldName") or "reason",
            )
        status = StatusDefinition(
            phase_path=(s.get("phaseDefinition") or {}).get("path") or None,
            conditions=conditions,
            mappings={
                phase: tuple(_matcher(m) for m in matchers)
                for phase, matchers in (s.get("statusMappings") or {}).items()
            },
        )
    suspend = None
    if "suspendDefinition" in raw:
        s = raw["suspendDefinition"]
        suspend = SuspendDefinition(
            tuple(Action(a["path"], a["value"]) for a in s["suspendActions"]),
            tuple(Action(a["path"], a["value"]) for a in s["resumeActions"]),
        )
    selector = None
    if "podSelector" in raw:
        p = raw["podSelector"]
        type_selector = None
        if "componentTypeSelector" in p:
            t = p["componentTypeSelector"]
            type_selector = TypeSelector(t.get("keyPath"), t.get("value"), t.get("matchLabels"))
        selector = PodSelector(
            type_selector=type_selector,
            instance_id_path=(p.get("componentInstanceSelector") or {}).get("idPath"),
            replica_key_path=(p.get("replicaSelector") or {}).get("keyPath"),
        )
    return Component(
        name=raw["name"],
        kind=kind,
        owner_ref=raw.get("ownerRef") or None,
        instance_id_path=raw.get("instanceIdPath") or None,
        spec=spec,
        scale=scale,
        status=status,
        suspend=suspend,
        pod_selector=selector,
    )


def _matcher(raw: Mapping[str, Any]) -> StatusMatcher:
    expression = raw.get("byExpression")
    return StatusMatcher(
        by_phase=raw.get("byPhase") or None,
        by_conditions=tuple(
            ConditionMatch(c["type"], c.get("status") or None, c.get("reason") or None)
            for c in raw.get("byConditions") or ()
        ),
        by_expression=(expression["expression"], expression["expectedResult"]) if expression else None,
    )


def _hints(annotations: Mapping[str, str]) -> tuple[PolicyHints, list[str]]:
    text = annotations.get(HINTS_ANNOTATION)
    if not text:
        return PolicyHints(), []
    where = f"annotation {HINTS_ANNOTATION}"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return PolicyHints(), [f"{where}: not valid YAML: {exc}"]
    problems = schema_problems("policy-hints.schema.json", raw)
    if problems:
        return PolicyHints(), [f"{where}: {p}" for p in problems]
    components = {
        name: ComponentHints(
            role=c.get("role"),
            pods_per_replica_path=c.get("podsPerReplicaPath"),
            suspended_path=c.get("suspendedPath"),
            sub_group_name=c.get("subGroupName"),
            reserved_instance_ids=frozenset(c.get("reservedInstanceIds") or ()),
        )
        for name, c in (raw.get("components") or {}).items()
    }
    hints = PolicyHints(
        autoscaling_path=raw.get("autoscalingPath"),
        primary_container=raw.get("primaryContainer"),
        components=components,
    )
    return hints, []
