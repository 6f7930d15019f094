"""docs/vap.md shows real output: every YAML block of its RayService excerpt is part of what
`karta-admission export vap` generates for the built-in RayService definition."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from webhook.config import parse_config
from webhook.karta.registry import DefinitionSet
from webhook.vap.policy import export

DOC = Path(__file__).resolve().parents[2] / "docs" / "vap.md"


def _contains(actual: Any, shown: Any) -> bool:
    """shown is actual with parts left out: fewer keys, fewer list items (each equal to one of actual's)."""
    if isinstance(shown, dict):
        return isinstance(actual, dict) and all(k in actual and _contains(actual[k], v) for k, v in shown.items())
    if isinstance(shown, list) and isinstance(actual, list) and shown and isinstance(shown[0], dict):
        return all(any(_contains(a, s) for a in actual) for s in shown)
    return bool(actual == shown)


def test_the_rayservice_excerpt_is_generated_output() -> None:
    excerpt = DOC.read_text(encoding="utf-8").split("### A generated policy for RayService")[1].split("## What is")[0]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", excerpt, re.DOTALL)]
    assert len(blocks) == 4
    exported = export([d.definition for d in DefinitionSet.builtin()], parse_config({}, "docs").policy).objects
    deny = next(o for o in exported if o["metadata"]["name"] == "karta-admission.ray-io-rayservice-v1.deny")
    header, variables, validations, binding = blocks
    assert _contains(deny, header)
    assert _contains(deny["spec"], variables)
    assert _contains(deny["spec"], validations)
    assert any(_contains(o, binding) for o in exported if o["kind"] == "ValidatingAdmissionPolicyBinding")
