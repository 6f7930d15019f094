"""Regenerate the chart's ValidatingAdmissionPolicies (charts/karta-admission/files/validating-admission-policies.json).

Helm cannot run Python at install time, so the policies the chart installs (`validation: policy` or
`both`) are compiled here, by the same compiler as `karta-admission export vap`, from the built-in
definitions and the policy settings of the chart's default values. The chart renders the bindings itself
(they depend on the release: mode, namespace label, excluded namespaces) and refuses policy settings
other than the ones compiled in. tests/unit/test_vap_chart.py fails when this file is out of date.

    python scripts/gen_chart_vap.py --out charts/karta-admission/files/validating-admission-policies.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from webhook.config import parse_config
from webhook.karta.registry import DefinitionSet
from webhook.policy.model import DEFAULT_GPU_NODE_LABEL_KEYS, DEFAULT_GPU_PATTERNS, DEFAULT_GPU_TAINT_KEYS, KUBERAY_FEATURE_GATES
from webhook.policy.registry import BUILTIN_RULES
from webhook.vap.policy import Namespaces, export


def compile_for_chart() -> dict[str, Any]:
    policy = parse_config({}, "the chart's default values").policy
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    args.out.write_text(render(), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
