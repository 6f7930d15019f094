"""Offline commands: `check` (manifests), `rules` and `definitions`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from webhook.checker import Checker, Verdict, load_definitions
from webhook.config import Config
from webhook.karta.definitions import DefinitionError, load_file
from webhook.kube.defaults import CRDDefaults, CRDSchemaError
from webhook.manifests import ManifestError, describe, load_documents, load_manifests, object_problem
from webhook.policy.model import RULES, Severity

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
        crds = [d for path in crd_files for _, d in load_documents(str(path)) if isinstance(d, Mapping)]
        self._sources = [CRDDefaults.from_crds(crds), CRDDefaults.packaged()] if crds else [CRDDefaults.packaged()]

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        for source in self._sources:
            if source.knows(api_version, kind):
                return source.apply(obj)
        return {str(k): v for k, v in obj.items()}


def run_check(files: list[str], checker: Checker, defaulter: Defaulter) -> CheckReport:
    report = CheckReport()
    for name in files:
        try:
            documents = load_manifests(name)
        except ManifestError as exc:
            report.errors.append(str(exc))
            continue
        for document in documents:
            item = document.obj
            problem = object_problem(item)
            if problem is not None:
                report.errors.append(f"{document.where}: {problem}")
                continue
            if checker.definition_for(item) is None:
                report.skipped.append(f"{document.where}: {describe(item)}")
                continue
            try:
                verdict = checker.verdict(defaulter.apply(item))
            except Exception as exc:  # never a traceback and exit 1 ("would be denied") on odd input
                problem = f"cannot be checked: {type(exc).__name__}: {exc}"
                report.errors.append(f"{document.where}: {describe(item)}: {problem}")
                continue
            assert verdict is not None
            report.checked.append(CheckedObject(name, document.index, verdict))
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
    checker = Checker(load_definitions(config), config)
    try:
        defaulter = Defaulter(list(args.crd))
    except (OSError, yaml.YAMLError, CRDSchemaError, ManifestError) as exc:
        print(f"karta-admission: --crd: cannot use it: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = run_check(list(args.files), checker, defaulter)
    for error in report.errors:
        print(f"karta-admission: {error}", file=sys.stderr)
    if args.output == "json":
        json.dump([c.as_dict() for c in report.checked], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_text(report, sys.stdout, verbose=args.verbose)
    if not report.checked and not report.errors and not args.allow_empty:
        # A typo in a path or a file of other kinds would otherwise pass as "nothing denied".
        print(
            f"karta-admission: no objects checked ({len(report.skipped)} documents of kinds no definition "
            "covers; -v lists them); --allow-empty accepts that",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return report.exit_code


def rules_command() -> int:
    width = max(len(r) for r in RULES)
    for rule in RULES.values():
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
