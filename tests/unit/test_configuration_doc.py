"""docs/configuration.md is complete and correct against webhook/config.py and the CLI (issue 13).

Before: it showed `gpu-toleration: off` among the defaults (the default is warn) and left out
namespaceModeLabel, certificates.selfManaged and several flags (checked: these tests failed).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from webhook.cli import build_parser
from webhook.cluster.selfcerts import SelfManagedSettings
from webhook.config import Config, parse_config
from webhook.policy.registry import BUILTIN_RULES

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()
SCHEMA = json.loads((ROOT / "webhook" / "schemas" / "config.schema.json").read_text())


def yaml_blocks() -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOC, re.DOTALL)]


def defaults_block() -> dict[str, Any]:
    block = yaml_blocks()[0]
    assert isinstance(block, dict)
    return block


def test_the_defaults_block_is_exactly_the_built_in_defaults() -> None:
    documented = parse_config(defaults_block(), "docs/configuration.md")
    built_in = Config()
    for name in ("mode", "failure_policy", "namespace_mode_label", "gang", "cluster", "definition_directories",
                 "self_managed_certificates"):  # fmt: skip
        assert getattr(documented, name) == getattr(built_in, name) or (
            name == "self_managed_certificates" and not documented.self_managed_certificates
        ), name
    gpu, default_gpu = documented.policy.gpu, built_in.policy.gpu
    assert [p.pattern for p in gpu.resource_patterns] == [p.pattern for p in default_gpu.resource_patterns]
    assert (gpu.taint_keys, gpu.node_label_keys) == (default_gpu.taint_keys, default_gpu.node_label_keys)
    for rule in BUILTIN_RULES:
        assert documented.policy.severity(rule) is rule.default_severity, rule.id
    assert set(defaults_block()["rules"]) == set(BUILTIN_RULES.ids()), "every rule is listed with its default"


def schema_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        paths.append(path)
        paths.extend(schema_paths(sub, path + "."))
    return paths


def document_paths(data: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            paths.add(f"{prefix}{key}")
            if key not in {"rules", "labels", "annotations"}:  # free-form maps
                paths |= document_paths(value, f"{prefix}{key}.")
    return paths


def test_every_key_of_the_schema_is_documented() -> None:
    documented = set().union(*(document_paths(block) for block in yaml_blocks() if isinstance(block, dict)))
    missing = [path for path in schema_paths(SCHEMA) if path not in documented]
    assert missing == []


def test_the_self_managed_block_names_every_setting_and_is_accepted() -> None:
    (block,) = [b for b in yaml_blocks() if isinstance(b, dict) and "selfManaged" in (b.get("certificates") or {})]
    raw = block["certificates"]["selfManaged"]
    settings = SelfManagedSettings.from_mapping(raw)
    assert settings.secret_name == "karta-admission-tls"
    # Every setting the code knows is shown (from_mapping refuses unknown keys, so these are all of them).
    known = {"secretName", "serviceName", "namespace", "dir", "validatingWebhookConfiguration",
             "mutatingWebhookConfiguration", "validityDays", "renewBeforeDays", "caValidityDays",
             "caPropagationSeconds"}  # fmt: skip
    assert set(raw) == known
    for key in ("validityDays", "renewBeforeDays", "caValidityDays", "caPropagationSeconds"):
        attribute = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
        assert raw[key] == getattr(SelfManagedSettings, attribute), f"{key}: the documented default"


def test_every_command_line_flag_is_documented() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in commands.choices.items():
        assert f"karta-admission {name}" in DOC, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in {"-h", "--help"}:
                    continue
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", DOC):
                    missing.append(f"{name} {flag}")
    assert missing == []
