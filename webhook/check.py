"""Offline commands: `check` (manifests), `rules` and `definitions`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from webhook.config import Config, build_evaluator, load_definitions
from webhook.evaluation import Evaluator, Verdict
from webhook.karta.load import load_documents, load_file
from webhook.karta.parse import DefinitionError
from webhook.kube.defaults import CRDDefaults, CRDSchemaError
from webhook.policy.model import Severity
from webhook.policy.registry import BUILTIN_RULES

EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


@dataclass
class CheckedObject:
    file: str
    document: int
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "file": self.file,
            "document": self.document,
            "kind": v.kind,
            "name": v.name,
            "namespace": v.namespace,
            "allowed": v.allowed,
            "definition": v.definition,
            "violations": [violation.as_dict() for violation in v.violations],
        }


@dataclass
class CheckReport:
    checked: list[CheckedObject] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_USAGE
        return EXIT_DENIED if any(not c.verdict.allowed for c in self.checked) else EXIT_OK


class Defaulter:
    """CRD defaults from user-given CRDs first, then the built-in KubeRay ones."""

    def __init__(self, crd_files: list[Path]) -> None:
        crds = [d for path in crd_files for d in load_documents(path) if isinstance(d, Mapping)]
        self._sources = [CRDDefaults.from_crds(crds), CRDDefaults.packaged()] if crds else [CRDDefaults.packaged()]

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        for source in self._sources:
            if source.knows(api_version, kind):
                return source.apply(obj)
        return {str(k): v for k, v in obj.items()}


def _documents(name: str) -> Iterator[tuple[int, Any]]:
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    for index, document in enumerate(yaml.safe_load_all(text), start=1):
        if document is not None:
            yield index, document


def _items(document: Any) -> Iterator[tuple[str, Any]]:
    """A document, or the items of a v1 List (what `kubectl get -o yaml` prints)."""
    if isinstance(document, Mapping) and document.get("kind") == "List" and isinstance(document.get("items"), list):
        for i, item in enumerate(document["items"]):
            yield f"items[{i}]", item
    else:
        yield "", document


def run_check(files: list[str], evaluator: Evaluator, defaulter: Defaulter) -> CheckReport:
    report = CheckReport()
    for name in files:
        try:
            documents = list(_documents(name))
        except (OSError, UnicodeDecodeError) as exc:
            report.errors.append(f"{name}: cannot read: {exc}")
            continue
        except yaml.YAMLError as exc:
            report.errors.append(f"{name}: not valid YAML: {exc}")
            continue
        for index, document in documents:
            for item_label, item in _items(document):
                where = f"{name}#{index}{'.' + item_label if item_label else ''}"
                if not isinstance(item, Mapping):
                    report.skipped.append(f"{where}: not a Kubernetes object")
                    continue
                kind = f"{item.get('apiVersion', '?')} {item.get('kind', '?')}"
                if evaluator.definition_for(item) is None:
                    report.skipped.append(f"{where}: {kind} {(item.get('metadata') or {}).get('name', '')}".rstrip())
                    continue
                verdict = evaluator.verdict(defaulter.apply(item))
                assert verdict is not None
                report.checked.append(CheckedObject(name, index, verdict))
    return report


def _object_name(verdict: Verdict) -> str:
    return f"{verdict.namespace}/{verdict.name}" if verdict.namespace else verdict.name


def print_text(report: CheckReport, out: TextIO, *, verbose: bool) -> None:
    for item in report.checked:
        v = item.verdict
        warnings = [x for x in v.violations if x.severity is Severity.WARN]
        status = "DENIED" if not v.allowed else ("allowed with warnings" if v.violations else "allowed")
        print(f"{item.file}: {v.kind} {_object_name(v)}: {status}", file=out)
        for violation in v.violations:
            label = "deny" if violation.severity is Severity.DENY else "warn"
            print(f"  {label}  {violation.rule}  {violation.path or '(object)'}", file=out)
            print(f"        {violation.message}", file=out)
        del warnings
    if verbose:
        for skipped in report.skipped:
            print(f"skipped {skipped}", file=out)
    denied = sum(1 for c in report.checked if not c.verdict.allowed)
    warned = sum(1 for c in report.checked if c.verdict.allowed and c.verdict.violations)
    clean = len(report.checked) - denied - warned
    summary = (
        f"{len(report.checked)} object{'s' if len(report.checked) != 1 else ''} checked: "
        f"{denied} denied, {warned} allowed with warnings, {clean} allowed"
    )
    if report.skipped:
        summary += f"; {len(report.skipped)} document{'s' if len(report.skipped) != 1 else ''} skipped"
        summary += "" if verbose else " (-v lists them)"
    print(summary, file=out)


def check_command(args: argparse.Namespace, config: Config) -> int:
    evaluator = build_evaluator(config)
    try:
        defaulter = Defaulter(list(args.crd))
    except (OSError, yaml.YAMLError, CRDSchemaError) as exc:
        print(f"karta-admission: --crd: cannot use it: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = run_check(list(args.files), evaluator, defaulter)
    for error in report.errors:
        print(f"karta-admission: {error}", file=sys.stderr)
    if args.output == "json":
        json.dump([c.as_dict() for c in report.checked], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_text(report, sys.stdout, verbose=args.verbose)
    return report.exit_code


def rules_command() -> int:
    width = max(len(r) for r in BUILTIN_RULES.ids())
    for rule in BUILTIN_RULES:
        scope = f" [{rule.api_group} only]" if rule.api_group else ""
        print(f"{rule.id:<{width}}  {rule.default_severity!s:<4}  {rule.summary}{scope}")
    return EXIT_OK


def definitions_command(args: argparse.Namespace, config: Config) -> int:
    if args.files:
        status = EXIT_OK
        for name in args.files:
            try:
                for definition in load_file(Path(name)):
                    print(f"OK: {definition.source}: {definition.name} (root kind {definition.root_kind})")
            except DefinitionError as exc:
                print(f"INVALID: {exc}")
                status = EXIT_DENIED
        return status
    for compiled in load_definitions(config):
        d = compiled.definition
        components = ", ".join(c.name for c in d.components)
        print(f"{d.root_kind}: {d.name} from {d.source} (components: {components})")
    return EXIT_OK
