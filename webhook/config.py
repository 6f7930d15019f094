"""The configuration file: read, checked against its schema, turned into typed settings."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from webhook.evaluation import DefinitionStore, Evaluator, Mode
from webhook.gang.settings import CUSTOM_TEMPLATE_FIELDS, GangSettings
from webhook.karta.registry import DefinitionSet
from webhook.policy.model import (
    DEFAULT_GPU_NODE_LABEL_KEYS,
    DEFAULT_GPU_PATTERNS,
    DEFAULT_GPU_TAINT_KEYS,
    KUBERAY_FEATURE_GATES,
    GpuSettings,
    KubeRaySettings,
    PolicySettings,
    Severity,
)
from webhook.policy.registry import BUILTIN_RULES
from webhook.schemas import schema_problems

NAMESPACE_MODE_LABEL = "karta-admission.io/mode"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, the key and the reason."""


@dataclass(frozen=True)
class ClusterSettings:
    watch_kartas: bool = True
    owner_cache: bool = True
    audit_interval_seconds: int = 0
    policy_reports: bool = False
    audit_namespaces: tuple[str, ...] = ()
    # Namespaces the webhooks do not reach (the chart's webhook.excludeNamespaces): no group objects
    # there. kube-system and the server's own namespace are always left out.
    exclude_namespaces: tuple[str, ...] = ()
    # {validatingWebhookConfiguration, webhooks}: entries installed with Ignore that the agent holding
    # the Lease sets to Fail once its server is ready (webhook.cluster.arming); None: no arming.
    arm_webhooks: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Config:
    mode: Mode = Mode.ENFORCE
    failure_policy: str = "Fail"
    namespace_mode_label: str = NAMESPACE_MODE_LABEL
    policy: PolicySettings = field(default_factory=PolicySettings)
    gang: GangSettings = field(default_factory=GangSettings)
    definition_directories: tuple[Path, ...] = ()
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    self_managed_certificates: Mapping[str, Any] | None = None
    source: str = "built-in defaults"

    def with_overrides(self, *, mode: str | None = None, definition_directories: list[Path] | None = None) -> Config:
        """Command-line flags win over the file."""
        updated = self
        if mode is not None:
            updated = replace(updated, mode=Mode(mode))
        if definition_directories:
            updated = replace(
                updated, definition_directories=(*updated.definition_directories, *definition_directories)
            )
        return updated


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from exc
    return parse_config(raw if raw is not None else {}, str(path))


def _yaml_off(raw: Any) -> Any:
    """YAML 1.1 reads an unquoted `off` as false; in `mode` and `rules` it can only mean "off"."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    if raw.get("mode") is False:
        raw["mode"] = "off"
    if isinstance(raw.get("rules"), dict):
        raw["rules"] = {k: ("off" if v is False else v) for k, v in raw["rules"].items()}
    return raw


def parse_config(raw: Any, source: str) -> Config:
    raw = _yaml_off(raw)
    problems = schema_problems("config.schema.json", raw)
    if problems:
        raise ConfigError(f"{source}: invalid configuration:\n  - " + "\n  - ".join(problems))
    severities: dict[str, Severity] = {}
    for rule_id, severity in (raw.get("rules") or {}).items():
        if rule_id not in BUILTIN_RULES:
            known = ", ".join(sorted(BUILTIN_RULES.ids()))
            raise ConfigError(f"{source}: rules.{rule_id}: no such rule; known rules: {known}")
        severities[rule_id] = Severity(severity)
    gpu_raw = raw.get("gpu") or {}
    patterns = []
    for index, pattern in enumerate(gpu_raw.get("resourcePatterns") or DEFAULT_GPU_PATTERNS):
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(
                f"{source}: gpu.resourcePatterns[{index}]: {pattern!r} is not a regular expression: {exc}"
            ) from exc
    gpu = GpuSettings(
        resource_patterns=tuple(patterns),
        taint_keys=tuple(gpu_raw.get("taintKeys", DEFAULT_GPU_TAINT_KEYS)),
        node_label_keys=tuple(gpu_raw.get("nodeLabelKeys", DEFAULT_GPU_NODE_LABEL_KEYS)),
    )
    kuberay_raw = raw.get("kuberay") or {}
    kuberay = KubeRaySettings(feature_gates={**KUBERAY_FEATURE_GATES, **(kuberay_raw.get("featureGates") or {})})
    gang_raw = raw.get("gang") or {}
    custom = gang_raw.get("custom") or {}
    gang = GangSettings(
        scheduler=gang_raw.get("scheduler", "coscheduling"),
        custom_labels=dict(custom.get("labels") or {}),
        custom_annotations=dict(custom.get("annotations") or {}),
        scheduler_name=gang_raw.get("schedulerName"),
        schedule_timeout_seconds=gang_raw.get("scheduleTimeoutSeconds"),
    )
    if gang.scheduler == "custom" and not (gang.custom_labels or gang.custom_annotations):
        raise ConfigError(f"{source}: gang.custom: scheduler 'custom' needs at least one label or annotation")
    for section, templates in (("labels", gang.custom_labels), ("annotations", gang.custom_annotations)):
        for key, template in templates.items():
            problem = _template_problem(template)
            if problem:
                raise ConfigError(f"{source}: gang.custom.{section}[{key!r}]: {template!r}: {problem}")
    cluster_raw = raw.get("cluster") or {}
    cluster = ClusterSettings(
        watch_kartas=cluster_raw.get("watchKartas", True),
        owner_cache=cluster_raw.get("ownerCache", True),
        audit_interval_seconds=cluster_raw.get("auditIntervalSeconds", 0),
        policy_reports=cluster_raw.get("policyReports", False),
        audit_namespaces=tuple(cluster_raw.get("auditNamespaces") or ()),
        exclude_namespaces=tuple(cluster_raw.get("excludeNamespaces") or ()),
        arm_webhooks=cluster_raw.get("armWebhooks"),
    )
    return Config(
        mode=Mode(raw.get("mode", "enforce")),
        failure_policy=raw.get("failurePolicy", "Fail"),
        namespace_mode_label=raw.get("namespaceModeLabel", NAMESPACE_MODE_LABEL),
        policy=PolicySettings(severities=severities, gpu=gpu, kuberay=kuberay),
        gang=gang,
        definition_directories=tuple(Path(d) for d in (raw.get("definitions") or {}).get("directories") or ()),
        cluster=cluster,
        self_managed_certificates=(raw.get("certificates") or {}).get("selfManaged"),
        source=source,
    )


def _template_problem(template: str) -> str | None:
    """Why a custom gang template cannot be rendered, or None."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"not a valid template: {exc}"
    unknown = sorted({f for f in fields if f not in CUSTOM_TEMPLATE_FIELDS})
    if unknown:
        known = ", ".join("{" + f + "}" for f in sorted(CUSTOM_TEMPLATE_FIELDS))
        return f"unknown field {', '.join('{' + f + '}' for f in unknown)}; known: {known}"
    return None


def load_definitions(config: Config) -> DefinitionSet:
    """Built-in definitions, then those of the configured directories (which win for the same kind)."""
    return DefinitionSet.from_directories(config.definition_directories)


def build_evaluator(config: Config, definitions: DefinitionSet | None = None) -> Evaluator:
    """The evaluator every command and the server decide with, over the given or the configured definitions."""
    store = DefinitionStore(definitions if definitions is not None else load_definitions(config))
    return Evaluator(store, config.policy, config.mode)
