"""`karta-admission export vap`: the policy as ValidatingAdmissionPolicies and bindings (webhook.vap)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import yaml

from webhook.cli.exits import Exit
from webhook.config import Config, load_definitions
from webhook.vap.policy import Export, Namespaces, export


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.splitlines())


def header(result: Export, namespaces: Namespaces) -> str:
    """What the manifests cover and what they leave to the webhook, as YAML comments."""
    lines = [
        "ValidatingAdmissionPolicies compiled by `karta-admission export vap` from the Karta definitions",
        f"and policy rules in force (global mode {namespaces.global_mode}; namespace label {namespaces.mode_label}).",
        "Needs Kubernetes 1.30+ (admissionregistration.k8s.io/v1). docs/vap.md says what each part does.",
    ]
    for item in result.definitions:
        lines.append("")
        lines.append(f"{item.definition} ({item.kind})")
        covered = ", ".join(f"{rule} ({severity})" for rule, severity in item.covered.items())
        lines.append(f"  covered: {covered or 'nothing'}")
        if item.not_covered:
            lines.append("  not covered (the webhook still checks these):")
            lines.extend(f"    {rule}: {why}" for rule, why in sorted(item.not_covered.items()))
    return _comment("\n".join(lines))


def write_yaml(result: Export, namespaces: Namespaces, out: TextIO) -> None:
    out.write(header(result, namespaces) + "\n")
    for obj in result.objects:
        out.write("---\n")
        out.write(yaml.safe_dump(obj, sort_keys=False, width=1_000_000))


def as_list(result: Export) -> dict[str, Any]:
    """A v1 List (kubectl applies it); each policy names what is not covered in an annotation."""
    return {"apiVersion": "v1", "kind": "List", "items": result.objects}


def export_command(args: argparse.Namespace, config: Config) -> Exit:
    if args.target != "vap":  # pragma: no cover - argparse allows only vap
        return Exit.ERROR
    namespaces = Namespaces(
        global_mode=str(config.mode),
        mode_label=config.namespace_mode_label,
        excluded=tuple(dict.fromkeys(["kube-system", *args.exclude_namespace])),
    )
    definitions = [compiled.definition for compiled in load_definitions(config)]
    result = export(definitions, config.policy, namespaces)
    if args.output == "json":
        json.dump(as_list(result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_yaml(result, namespaces, sys.stdout)
    covered = sum(len(d.covered) for d in result.definitions)
    missing = sum(len(d.not_covered) for d in result.definitions)
    print(
        f"karta-admission: {len(result.objects)} objects for {len(result.definitions)} definitions: "
        f"{covered} rule checks covered, {missing} left to the webhook (listed in the output)",
        file=sys.stderr,
    )
    return Exit.OK
