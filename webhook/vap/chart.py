"""The chart's compiled ValidatingAdmissionPolicies (charts/karta-admission/files/validating-admission-policies.json).

Helm cannot run Python at install time, so `make chart-vap` writes the policies the chart installs
(`validation: policy` or `both`) with this, the same compiler as `karta-admission export vap`, from the
built-in definitions and the policy settings of the chart's default values. The chart renders the
bindings itself (they depend on the release) and refuses policy settings other than the ones recorded here.
"""

from __future__ import annotations

import json
from typing import Any

from webhook.karta.registry import DefinitionSet
from webhook.policy.model import (
    DEFAULT_GPU_NODE_LABEL_KEYS,
    DEFAULT_GPU_PATTERNS,
    DEFAULT_GPU_TAINT_KEYS,
    KUBERAY_FEATURE_GATES,
    PolicySettings,
)
from webhook.policy.registry import BUILTIN_RULES
from webhook.vap.policy import Namespaces, export


def compile_for_chart() -> dict[str, Any]:
    policy = PolicySettings()  # what the chart's default values configure
    exported = export([d.definition for d in DefinitionSet.builtin()], policy, Namespaces())
    return {
        "generatedBy": "make chart-vap (scripts/gen_chart_vap.py)",
        # The values these policies were compiled for; the chart fails on any other.
        "values": {
            "gpu": {
                "resourcePatterns": list(DEFAULT_GPU_PATTERNS),
                "taintKeys": list(DEFAULT_GPU_TAINT_KEYS),
                "nodeLabelKeys": list(DEFAULT_GPU_NODE_LABEL_KEYS),
            },
            "kuberay": {"featureGates": dict(KUBERAY_FEATURE_GATES)},
        },
        "defaultSeverities": {rule.id: str(rule.default_severity) for rule in BUILTIN_RULES},
        "definitions": [
            {
                "name": item.definition,
                "kind": item.kind,
                "covered": item.covered,
                "notCovered": item.not_covered,
                "policies": [o["metadata"]["name"] for o in item.objects if o["kind"] == "ValidatingAdmissionPolicy"],
            }
            for item in exported.definitions
        ],
        "policies": [o for o in exported.objects if o["kind"] == "ValidatingAdmissionPolicy"],
    }


def render() -> str:
    return json.dumps(compile_for_chart(), sort_keys=True, separators=(",", ":")) + "\n"
