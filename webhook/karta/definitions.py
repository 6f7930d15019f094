"""Loading Karta definitions: structure check, Karta's validator rules, jq safety, policy hints."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from webhook.karta import jqcheck, jqengine
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
from webhook.kube import names
from webhook.kube.fieldpath import format_path


class DefinitionError(ValueError):
    """A Karta definition that cannot be used; `problems` name the component and the field."""

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: invalid Karta definition:\n  - " + "\n  - ".join(self.problems))


@cache
def _schema_validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files("webhook").joinpath("schemas", name).read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema)


def schema_problems(schema_name: str, document: Any, prefix: str = "") -> list[str]:
    """Structural problems of a document against one of the package's JSON schemas, path first."""
    problems = []
    for error in sorted(_schema_validator(schema_name).iter_errors(document), key=lambda e: list(e.path)):
        where = format_path([prefix, *error.absolute_path] if prefix else list(error.absolute_path))
        problems.append(f"{where or '(top level)'}: {error.message}")
    return problems


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
        problems = _hint_reference_problems(definition)
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


def validator_problems(definition: KartaDefinition) -> list[str]:
    """Karta's own KartaValidator rules (reference/karta.md §1.3), in its order and stop points."""
    components = definition.components
    seen: set[str] = set()
    for c in components:
        if c.name in seen:
            return [f"component name {c.name} is not unique"]
        seen.add(c.name)
    problems: list[str] = []
    root = definition.root
    kind = root.kind
    if kind is None or not kind.version or not kind.kind or (not kind.group and kind.kind != "Pod"):
        problems.append("root component must have full kind (group, version, kind)")
    if root.owner_ref:
        problems.append("root component cannot have owner ref")
    if root.status is None:
        problems.append("root component must have status definition")
    for c in definition.children:
        if not c.owner_ref:
            problems.append(f"child component '{c.name}' has no owner ref")
        elif c.owner_ref not in seen:
            problems.append(f"child component '{c.name}' has owner ref to non-existing component '{c.owner_ref}'")
    for c in components:
        if not c.name:
            problems.append("component name must not be empty")
        if c.spec is not None and c.spec.pattern_count > 1:
            problems.append(f"component '{c.name}' has multiple pod spec definitions")
        instance_selector = c.pod_selector.instance_id_path if c.pod_selector else None
        if c.instance_id_path and not instance_selector:
            problems.append(f"component '{c.name}' has instance id path but no pod component instance selector")
        if instance_selector and not c.instance_id_path:
            problems.append(f"component '{c.name}' has pod component instance selector but no instance id path")
        type_selector = c.pod_selector.type_selector if c.pod_selector else None
        if type_selector is not None:
            if not type_selector.key_path and not type_selector.match_labels:
                problems.append(f"component '{c.name}' componentTypeSelector has neither keyPath nor matchLabels")
            if type_selector.value is not None and not type_selector.key_path:
                problems.append(f"component '{c.name}' componentTypeSelector has value without keyPath")
            if type_selector.match_labels is not None and not type_selector.match_labels:
                problems.append(f"component '{c.name}' componentTypeSelector has empty matchLabels")
            for key, value in (type_selector.match_labels or {}).items():
                for p in names.label_key_problems(key):
                    problems.append(f"component '{c.name}' matchLabels key {key!r}: {p}")
                for p in names.label_value_problems(value):
                    problems.append(f"component '{c.name}' matchLabels value {value!r}: {p}")
    if problems:
        return problems
    for c in components:
        visited: list[str] = []
        current: Component | None = c
        while current is not None and current.owner_ref:
            if current.name in visited:
                return [f"ownership cycle detected involving component {c.name}"]
            visited.append(current.name)
            current = definition.component(current.owner_ref)
    for group in definition.pod_groups:
        for member in group.members:
            if member.component_name not in seen:
                problems.append(
                    f"pod-group member component '{member.component_name}' is not defined "
                    "(should be a root or child component)"
                )
    return problems


def jq_fields(definition: KartaDefinition) -> list[tuple[str, str]]:
    """Every jq expression of the definition with a readable location, in Karta's validated set."""
    fields: list[tuple[str, str]] = []
    for c in definition.components:
        where = f"component '{c.name}'"
        if c.instance_id_path:
            fields.append((f"{where} instanceIdPath", c.instance_id_path))
        if c.spec:
            for label, path in (
                ("podTemplateSpecPath", c.spec.pod_template_spec_path),
                ("podSpecPath", c.spec.pod_spec_path),
                ("metadataPath", c.spec.metadata_path),
            ):
                if path:
                    fields.append((f"{where} specDefinition.{label}", path))
            for label, path in c.spec.fragments.items():
                fields.append((f"{where} fragmentedPodSpecDefinition.{label}", path))
        if c.scale:
            for label, path in c.scale.paths().items():
                fields.append((f"{where} scaleDefinition.{label}Path", path))
        if c.status:
            if c.status.phase_path:
                fields.append((f"{where} statusDefinition.phaseDefinition.path", c.status.phase_path))
            if c.status.conditions:
                fields.append((f"{where} statusDefinition.conditionsDefinition.path", c.status.conditions.path))
            for phase, matchers in c.status.mappings.items():
                for i, m in enumerate(matchers):
                    if m.by_expression:
                        fields.append(
                            (f"{where} statusMappings.{phase}[{i}].byExpression.expression", m.by_expression[0])
                        )
        if c.suspend:
            for label, actions in (("suspendActions", c.suspend.suspend_actions),
                                   ("resumeActions", c.suspend.resume_actions)):  # fmt: skip
                for i, a in enumerate(actions):
                    fields.append((f"{where} suspendDefinition.{label}[{i}].path", a.path))
        if c.pod_selector:
            ts = c.pod_selector.type_selector
            if ts and ts.key_path:
                fields.append((f"{where} podSelector.componentTypeSelector.keyPath", ts.key_path))
            if c.pod_selector.instance_id_path:
                fields.append(
                    (f"{where} podSelector.componentInstanceSelector.idPath", c.pod_selector.instance_id_path)
                )
            if c.pod_selector.replica_key_path:
                fields.append((f"{where} podSelector.replicaSelector.keyPath", c.pod_selector.replica_key_path))
    for g in definition.pod_groups:
        for member in g.members:
            where = f"podGroup '{g.name}' member '{member.component_name}'"
            for i, path in enumerate(member.group_by_key_paths):
                fields.append((f"{where} groupByKeyPaths[{i}]", path))
            for i, path in enumerate(member.filters):
                fields.append((f"{where} filters[{i}]", path))
    hints = definition.hints
    if hints.autoscaling_path:
        fields.append((f"annotation {HINTS_ANNOTATION} autoscalingPath", hints.autoscaling_path))
    for name, ch in hints.components.items():
        if ch.pods_per_replica_path:
            fields.append(
                (f"annotation {HINTS_ANNOTATION} components.{name}.podsPerReplicaPath", ch.pods_per_replica_path)
            )
        if ch.suspended_path:
            fields.append((f"annotation {HINTS_ANNOTATION} components.{name}.suspendedPath", ch.suspended_path))
    return fields


def jq_problems(definition: KartaDefinition) -> list[str]:
    """Refuse unsafe or uncompilable jq before anything is ever evaluated."""
    problems: list[str] = []
    for where, expression in jq_fields(definition):
        refusals = jqcheck.check_expression(expression)
        if refusals:
            problems.extend(f"{where}: JQ expression '{expression}' failed validation: {r}" for r in refusals)
            continue
        error = jqengine.compile_error(expression)
        if error:
            problems.append(f"{where}: failed to compile JQ expression '{expression}': {error}")
    return problems


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


def _hint_reference_problems(definition: KartaDefinition) -> list[str]:
    known = {c.name for c in definition.components}
    return [
        f"annotation {HINTS_ANNOTATION}: components.{name}: no component named {name!r} in this definition"
        for name in definition.hints.components
        if name not in known
    ]


def load_documents(path: Path) -> list[Any]:
    """All YAML documents of a file (JSON is YAML too), empty documents dropped."""
    with path.open(encoding="utf-8") as handle:
        return [d for d in yaml.safe_load_all(handle) if d is not None]


def load_file(path: Path, source_prefix: str = "") -> list[KartaDefinition]:
    """Every Karta object in the file; other documents are refused so that nothing is silently ignored."""
    source = f"{source_prefix}{path}"
    try:
        documents = load_documents(path)
    except (OSError, yaml.YAMLError) as exc:
        raise DefinitionError(source, [f"cannot read: {exc}"]) from exc
    definitions = []
    for index, document in enumerate(documents):
        where = source if len(documents) == 1 else f"{source}#{index + 1}"
        if not isinstance(document, Mapping):
            raise DefinitionError(where, ["document is not a mapping"])
        definitions.append(parse_definition(document, where))
    return definitions


def load_directory(directory: Path) -> list[KartaDefinition]:
    """All *.yaml, *.yml and *.json files of a directory, in name order (not recursive)."""
    if not directory.is_dir():
        raise DefinitionError(str(directory), ["not a directory"])
    definitions: list[KartaDefinition] = []
    for path in sorted(directory.iterdir()):
        # Kubernetes ConfigMap volumes hold ..data symlinks and dot-directories next to the files.
        if path.name.startswith(".") or path.suffix not in {".yaml", ".yml", ".json"} or not path.is_file():
            continue
        definitions.extend(load_file(path))
    return definitions


@cache
def builtin_definitions() -> tuple[KartaDefinition, ...]:
    """The definitions shipped with the package (docs/samples/*.yaml)."""
    package = resources.files("webhook").joinpath("definitions")
    definitions: list[KartaDefinition] = []
    for entry in sorted(package.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        for index, document in enumerate(d for d in yaml.safe_load_all(entry.read_text()) if d is not None):
            definitions.append(parse_definition(document, f"built-in:{entry.name}#{index + 1}"))
    return tuple(definitions)
