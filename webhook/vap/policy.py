"""Karta definitions and policy settings in, ValidatingAdmissionPolicies and their bindings out.

Per definition, two policies for its root kind: `<prefix>.<definition>.deny` holds the checks of the
rules whose configured severity is deny, `<prefix>.<definition>.warn` those of warn rules and the
findings the webhook softens to warnings. A binding's validationActions apply to every validation of
its policy, so severity has to be a policy of its own. Bindings follow the webhook's namespace modes:

  deny policy, namespaces in enforce mode  -> [Deny, Audit]  (the webhook denies and annotates the audit event)
  deny policy, namespaces in audit mode    -> [Warn, Audit]
  warn policy, enforce or audit namespaces -> [Warn, Audit]

An UPDATE that leaves spec, labels and annotations as they were cannot add or worsen a finding, so the
webhook only warns about the deny findings it keeps (they were already there); the policies do the same:
the deny check passes and a warn-policy check reports it "already present before this update". (The
webhook also lets through a spec change that does not worsen an existing finding; the policies deny it:
see docs/vap.md.) Rules or components that do not translate are listed in `not_covered`, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.karta.model import GVK, KartaDefinition
from webhook.policy.model import PolicySettings, Rule, Severity
from webhook.policy.registry import BUILTIN_RULES, RuleRegistry
from webhook.vap import cel, views
from webhook.vap.rules import COMPILERS, NOT_EXPRESSIBLE, Check, Context
from webhook.vap.views import NotCovered

API_VERSION = "admissionregistration.k8s.io/v1"
PREFIX = "karta-admission"
ANNOTATION_DEFINITION = "karta-admission.io/definition"
ANNOTATION_RULES = "karta-admission.io/rules"
ANNOTATION_NOT_COVERED = "karta-admission.io/not-covered"
ALREADY_PRESENT = " (already present before this update)"
MODES = ("enforce", "audit", "off")


@dataclass(frozen=True)
class Namespaces:
    """Which namespaces the bindings select, as the chart's webhook entries do."""

    global_mode: str = "enforce"  # enforce | audit | off
    mode_label: str = "karta-admission.io/mode"
    excluded: tuple[str, ...] = ("kube-system",)


@dataclass
class DefinitionExport:
    definition: str
    kind: str
    covered: dict[str, str] = field(default_factory=dict)  # rule id -> severity
    not_covered: dict[str, str] = field(default_factory=dict)  # rule id -> why
    objects: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Export:
    definitions: list[DefinitionExport]

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [o for d in self.definitions for o in d.objects]


def export(
    definitions: Iterable[KartaDefinition],
    settings: PolicySettings,
    namespaces: Namespaces = Namespaces(),
    rules: RuleRegistry = BUILTIN_RULES,
) -> Export:
    return Export([compile_definition(d, settings, namespaces, rules) for d in definitions])


def compile_definition(
    definition: KartaDefinition, settings: PolicySettings, namespaces: Namespaces, rules: RuleRegistry = BUILTIN_RULES
) -> DefinitionExport:
    kind = definition.root_kind
    result = DefinitionExport(definition.name, f"{kind.api_version} {kind.kind}")
    view = views.build(definition)
    ctx = Context(view, settings, kind.kind)
    deny: list[dict[str, Any]] = []
    warn: list[dict[str, Any]] = []
    for rule in rules:
        if not rule.applies_to(kind.group):
            continue
        severity = settings.severity(rule)
        if severity is Severity.OFF:
            result.not_covered[rule.id] = "off in the configuration"
            continue
        compiler = COMPILERS.get(rule.id)
        if compiler is None:
            result.not_covered[rule.id] = NOT_EXPRESSIBLE.get(rule.id, "not translated to CEL")
            continue
        try:
            checks = compiler(ctx)
        except NotCovered as exc:
            result.not_covered[rule.id] = str(exc)
            continue
        # Covered even with no checks: then the rule never fires for this kind, in the webhook either.
        result.covered[rule.id] = str(severity)
        for check in checks:
            if check.condition == "false":
                continue
            if severity is Severity.DENY and not check.softened:
                deny.append(_validation(rule, check, _deny_expression(check)))
                warn.append(_validation(rule, check, _already_present_expression(check), ALREADY_PRESENT))
            else:
                warn.append(_validation(rule, check, f"!({check.condition})"))
    metadata = {
        ANNOTATION_DEFINITION: definition.name,
        ANNOTATION_NOT_COVERED: json.dumps(result.not_covered, sort_keys=True),
    }
    base = f"{PREFIX}.{definition.name}"
    variables = [*view.variables.as_list(), {"name": "unchanged", "expression": _UNCHANGED}]
    for suffix, validations in (("deny", deny), ("warn", warn)):
        if not validations:
            continue
        covered = sorted({v["_rule"] for v in validations})
        for v in validations:
            del v["_rule"]
        annotations = {**metadata, ANNOTATION_RULES: ",".join(covered)}
        result.objects.append(_policy(f"{base}.{suffix}", kind, variables, validations, annotations))
    enforce, audit, either = _selectors(namespaces)
    if deny:
        result.objects.append(_binding(f"{base}.deny-enforce", f"{base}.deny", ["Deny", "Audit"], enforce, namespaces))
        result.objects.append(_binding(f"{base}.deny-audit", f"{base}.deny", ["Warn", "Audit"], audit, namespaces))
    if warn:
        result.objects.append(_binding(f"{base}.warn", f"{base}.warn", ["Warn", "Audit"], either, namespaces))
    return result


# Spec, labels and annotations as they were (oldObject is null on CREATE; no labels is the same as {}).
_UNCHANGED = "oldObject != null && " + " && ".join(
    [
        f"({cel.value_at('object', ('spec',))} == {cel.value_at('oldObject', ('spec',))})",
        *(
            f"{cel.map_at('object', ('metadata', part))} == {cel.map_at('oldObject', ('metadata', part))}"
            for part in ("labels", "annotations")
        ),
    ]
)
_UPDATE_UNCHANGED = "(request.operation == 'UPDATE' && variables.unchanged)"


def _deny_expression(check: Check) -> str:
    return f"{_UPDATE_UNCHANGED} || !({check.condition})"


def _already_present_expression(check: Check) -> str:
    return f"!({_UPDATE_UNCHANGED} && ({check.condition}))"


def _validation(rule: Rule, check: Check, expression: str, suffix: str = "") -> dict[str, Any]:
    # A VAP validation has no fieldPath (only CRD validation rules do): the path goes into the message.
    tag = cel.string(f"[{rule.id}] " + (f"{check.field_path}: " if check.field_path else ""))
    more = '(size(m) > 1 ? " (and " + string(size(m) - 1) + " more)" : "")'
    # kube-apiserver evaluates every messageExpression on every request (validator.go), so one with no
    # finding must not fail: it gives the summary then.
    first = f"{tag} + m[0] + {more}" + (f" + {cel.string(suffix)}" if suffix else "")
    message = cel.bind(check.messages, "m", f"size(m) == 0 ? {cel.string(f'[{rule.id}] {rule.summary}')} : {first}")
    validation: dict[str, Any] = {
        "expression": expression,
        "message": f"[{rule.id}] {rule.summary}{suffix}",
        "messageExpression": message,
        "reason": "Invalid",
        "_rule": rule.id,
    }
    return validation


def _policy(
    name: str,
    kind: GVK,
    variables: Sequence[Mapping[str, str]],
    validations: list[dict[str, Any]],
    annotations: Mapping[str, str],
) -> dict[str, Any]:
    group, version = kind.group, kind.version  # fmt: skip
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": PREFIX},
            "annotations": dict(annotations),
        },
        "spec": {
            # An expression that errors (e.g. out of its cost budget) denies under a Deny binding and warns
            # under a Warn binding: what the webhook does with an object it cannot check in each mode.
            "failurePolicy": "Fail",
            "matchConstraints": {
                "matchPolicy": "Equivalent",
                "resourceRules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": [version],
                        "operations": ["CREATE", "UPDATE"],
                        # Every resource of the group, never a subresource (status and scale writes pass);
                        # the kind is chosen by the match condition, so no plural has to be guessed.
                        "resources": ["*"],
                    }
                ],
            },
            "matchConditions": [
                {
                    "name": "definition-kind",
                    "expression": f"request.kind.group == {cel.string(group)} && "
                    f"request.kind.kind == {cel.string(kind.kind)}",
                }
            ],
            "variables": list(variables),
            "validations": validations,
        },
    }


def _selectors(namespaces: Namespaces) -> tuple[list[tuple[str, list[str]]], ...]:
    """(operator, values) on the mode label for enforce-mode, audit-mode and any-mode namespaces."""
    if namespaces.global_mode == "enforce":
        return [("NotIn", ["audit", "off"])], [("In", ["audit"])], [("NotIn", ["off"])]
    if namespaces.global_mode == "audit":
        return [("In", ["enforce"])], [("NotIn", ["enforce", "off"])], [("NotIn", ["off"])]
    return [("In", ["enforce"])], [("In", ["audit"])], [("In", ["enforce", "audit"])]


def _binding(
    name: str, policy: str, actions: list[str], mode: list[tuple[str, list[str]]], namespaces: Namespaces
) -> dict[str, Any]:
    expressions: list[dict[str, Any]] = [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(namespaces.excluded)}
    ] if namespaces.excluded else []  # fmt: skip
    expressions += [{"key": namespaces.mode_label, "operator": op, "values": values} for op, values in mode]
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": PREFIX}},
        "spec": {
            "policyName": policy,
            "validationActions": actions,
            "matchResources": {"namespaceSelector": {"matchExpressions": expressions}},
        },
    }
