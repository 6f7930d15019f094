"""The rule registry is an explicit list: the same rules whatever is imported first, none forgotten."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import webhook.policy
from webhook.policy.model import Rule
from webhook.policy.registry import BUILTIN_RULES

FIRST_IMPORTS = ["webhook.policy.registry", "webhook.config", "webhook.cli", "webhook.admission", "webhook.policy.gpu"]


@pytest.mark.parametrize("first", FIRST_IMPORTS)
def test_rule_set_does_not_depend_on_import_order(first: str) -> None:
    program = (
        f"import {first}\n"
        "from webhook.policy.registry import BUILTIN_RULES\n"
        "import json; print(json.dumps([(r.id, r.category) for r in BUILTIN_RULES]))"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [[r.id, r.category] for r in BUILTIN_RULES]


def test_every_rule_defined_in_the_policy_package_is_in_force() -> None:
    defined = set()
    for module_info in pkgutil.iter_modules(webhook.policy.__path__):
        module = importlib.import_module(f"webhook.policy.{module_info.name}")
        defined |= {value.id for value in vars(module).values() if isinstance(value, Rule)}
    assert defined == set(BUILTIN_RULES.ids())


def test_every_rule_has_a_category() -> None:
    assert all(rule.category for rule in BUILTIN_RULES)
    assert {rule.category for rule in BUILTIN_RULES} >= {"Replicas", "GPU", "KubeRay"}
