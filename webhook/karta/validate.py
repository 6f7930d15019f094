"""Checks on a parsed Karta definition: Karta's own validator rules, jq safety, policy-hint references.

Each function returns the problems it finds, every one naming the component and the field.
"""

from __future__ import annotations

from collections.abc import Iterator

from webhook.karta import jqcheck, jqengine
from webhook.karta.model import HINTS_ANNOTATION, Component, KartaDefinition, TypeSelector
from webhook.kube import names


def validator_problems(definition: KartaDefinition) -> list[str]:
    """Karta's own KartaValidator rules (reference/karta.md §1.3), in its order and stop points."""
    duplicate = _duplicate_component(definition)
    if duplicate is not None:
        return [f"component name {duplicate} is not unique"]
    problems = [*_root_problems(definition), *_owner_problems(definition)]
    for c in definition.components:
        problems.extend(_component_problems(c))
    if problems:
        return problems
    cycle = _ownership_cycle(definition)
    if cycle is not None:
        return [f"ownership cycle detected involving component {cycle}"]
    return _pod_group_member_problems(definition)


def _duplicate_component(definition: KartaDefinition) -> str | None:
    seen: set[str] = set()
    for c in definition.components:
        if c.name in seen:
            return c.name
        seen.add(c.name)
    return None


def _root_problems(definition: KartaDefinition) -> Iterator[str]:
    root = definition.root
    kind = root.kind
    if kind is None or not kind.version or not kind.kind or (not kind.group and kind.kind != "Pod"):
        yield "root component must have full kind (group, version, kind)"
    if root.owner_ref:
        yield "root component cannot have owner ref"
    if root.status is None:
        yield "root component must have status definition"


def _owner_problems(definition: KartaDefinition) -> Iterator[str]:
    known = {c.name for c in definition.components}
    for c in definition.children:
        if not c.owner_ref:
            yield f"child component '{c.name}' has no owner ref"
        elif c.owner_ref not in known:
            yield f"child component '{c.name}' has owner ref to non-existing component '{c.owner_ref}'"


def _component_problems(c: Component) -> Iterator[str]:
    if not c.name:
        yield "component name must not be empty"
    if c.spec is not None and c.spec.pattern_count > 1:
        yield f"component '{c.name}' has multiple pod spec definitions"
    instance_selector = c.pod_selector.instance_id_path if c.pod_selector else None
    if c.instance_id_path and not instance_selector:
        yield f"component '{c.name}' has instance id path but no pod component instance selector"
    if instance_selector and not c.instance_id_path:
        yield f"component '{c.name}' has pod component instance selector but no instance id path"
    type_selector = c.pod_selector.type_selector if c.pod_selector else None
    if type_selector is not None:
        yield from _type_selector_problems(c.name, type_selector)


def _type_selector_problems(component: str, selector: TypeSelector) -> Iterator[str]:
    where = f"component '{component}'"
    if not selector.key_path and not selector.match_labels:
        yield f"{where} componentTypeSelector has neither keyPath nor matchLabels"
    if selector.value is not None and not selector.key_path:
        yield f"{where} componentTypeSelector has value without keyPath"
    if selector.match_labels is not None and not selector.match_labels:
        yield f"{where} componentTypeSelector has empty matchLabels"
    for key, value in (selector.match_labels or {}).items():
        yield from (f"{where} matchLabels key {key!r}: {p}" for p in names.label_key_problems(key))
        yield from (f"{where} matchLabels value {value!r}: {p}" for p in names.label_value_problems(value))


def _ownership_cycle(definition: KartaDefinition) -> str | None:
    """The first component whose owner chain loops back on itself, if any."""
    for c in definition.components:
        visited: list[str] = []
        current: Component | None = c
        while current is not None and current.owner_ref:
            if current.name in visited:
                return c.name
            visited.append(current.name)
            current = definition.component(current.owner_ref)
    return None


def _pod_group_member_problems(definition: KartaDefinition) -> list[str]:
    known = {c.name for c in definition.components}
    return [
        f"pod-group member component '{member.component_name}' is not defined (should be a root or child component)"
        for group in definition.pod_groups
        for member in group.members
        if member.component_name not in known
    ]


def jq_fields(definition: KartaDefinition) -> list[tuple[str, str]]:
    """Every jq expression of the definition with a readable location, in Karta's validated set."""
    fields: list[tuple[str, str]] = []
    for c in definition.components:
        fields.extend((f"component '{c.name}' {label}", path) for label, path in _component_jq(c))
    for g in definition.pod_groups:
        for member in g.members:
            where = f"podGroup '{g.name}' member '{member.component_name}'"
            fields.extend((f"{where} groupByKeyPaths[{i}]", p) for i, p in enumerate(member.group_by_key_paths))
            fields.extend((f"{where} filters[{i}]", p) for i, p in enumerate(member.filters))
    hints = definition.hints
    where = f"annotation {HINTS_ANNOTATION}"
    if hints.autoscaling_path:
        fields.append((f"{where} autoscalingPath", hints.autoscaling_path))
    for name, ch in hints.components.items():
        for label, path in (("podsPerReplicaPath", ch.pods_per_replica_path), ("suspendedPath", ch.suspended_path)):
            if path:
                fields.append((f"{where} components.{name}.{label}", path))
    return fields


def _component_jq(c: Component) -> Iterator[tuple[str, str]]:
    """(field label, expression) for every jq path of one component."""
    if c.instance_id_path:
        yield "instanceIdPath", c.instance_id_path
    if c.spec:
        spec_paths = (
            ("podTemplateSpecPath", c.spec.pod_template_spec_path),
            ("podSpecPath", c.spec.pod_spec_path),
            ("metadataPath", c.spec.metadata_path),
        )
        yield from ((f"specDefinition.{label}", path) for label, path in spec_paths if path)
        yield from ((f"fragmentedPodSpecDefinition.{label}", path) for label, path in c.spec.fragments.items())
    if c.scale:
        yield from ((f"scaleDefinition.{label}Path", path) for label, path in c.scale.paths().items())
    if c.status:
        yield from _status_jq(c)
    if c.suspend:
        for label, actions in (("suspendActions", c.suspend.suspend_actions),
                               ("resumeActions", c.suspend.resume_actions)):  # fmt: skip
            yield from ((f"suspendDefinition.{label}[{i}].path", a.path) for i, a in enumerate(actions))
    if c.pod_selector:
        selector = c.pod_selector
        if selector.type_selector and selector.type_selector.key_path:
            yield "podSelector.componentTypeSelector.keyPath", selector.type_selector.key_path
        if selector.instance_id_path:
            yield "podSelector.componentInstanceSelector.idPath", selector.instance_id_path
        if selector.replica_key_path:
            yield "podSelector.replicaSelector.keyPath", selector.replica_key_path


def _status_jq(c: Component) -> Iterator[tuple[str, str]]:
    assert c.status is not None
    if c.status.phase_path:
        yield "statusDefinition.phaseDefinition.path", c.status.phase_path
    if c.status.conditions:
        yield "statusDefinition.conditionsDefinition.path", c.status.conditions.path
    for phase, matchers in c.status.mappings.items():
        for i, m in enumerate(matchers):
            if m.by_expression:
                yield f"statusMappings.{phase}[{i}].byExpression.expression", m.by_expression[0]


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


def hint_reference_problems(definition: KartaDefinition) -> list[str]:
    known = {c.name for c in definition.components}
    return [
        f"annotation {HINTS_ANNOTATION}: components.{name}: no component named {name!r} in this definition"
        for name in definition.hints.components
        if name not in known
    ]
