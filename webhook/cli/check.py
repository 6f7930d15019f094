"""`karta-admission check`: manifests checked offline, with the verdict the webhook would give."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from webhook.cli.exits import Exit
from webhook.cli.render import print_verdict, summary, verdict_fields
from webhook.config import Config, build_evaluator
from webhook.evaluation import Evaluator, Verdict
from webhook.kube.defaults import CRDDefaults, CRDSchemaError
from webhook.manifests import ManifestError, describe, load_documents, load_manifests, object_problem


@dataclass
class CheckedObject:
    file: str
    document: int
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "document": self.document, **verdict_fields(self.verdict)}


@dataclass
class CheckReport:
    checked: list[CheckedObject] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> Exit:
        if self.errors:
            return Exit.ERROR
        return Exit.DENIED if any(not c.verdict.allowed for c in self.checked) else Exit.OK


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


def run_check(files: list[str], evaluator: Evaluator, defaulter: Defaulter) -> CheckReport:
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
            if evaluator.definition_for(item) is None:
                report.skipped.append(f"{document.where}: {describe(item)}")
                continue
            try:
                verdict = evaluator.verdict(defaulter.apply(item))
            except Exception as exc:  # never a traceback and exit 1 ("would be denied") on odd input
                problem = f"cannot be checked: {type(exc).__name__}: {exc}"
                report.errors.append(f"{document.where}: {describe(item)}: {problem}")
                continue
            assert verdict is not None
            report.checked.append(CheckedObject(name, document.index, verdict))
    return report


def print_text(report: CheckReport, out: TextIO, *, verbose: bool) -> None:
    for item in report.checked:
        print_verdict(item.verdict, out, prefix=f"{item.file}: ")
    if verbose:
        for skipped in report.skipped:
            print(f"skipped {skipped}", file=out)
    line = summary([c.verdict for c in report.checked])
    if report.skipped:
        line += f"; {len(report.skipped)} document{'s' if len(report.skipped) != 1 else ''} skipped"
        line += "" if verbose else " (-v lists them)"
    print(line, file=out)


def check_command(args: argparse.Namespace, config: Config) -> int:
    evaluator = build_evaluator(config)
    try:
        defaulter = Defaulter(list(args.crd))
    except (OSError, yaml.YAMLError, CRDSchemaError, ManifestError) as exc:
        print(f"karta-admission: --crd: cannot use it: {exc}", file=sys.stderr)
        return Exit.ERROR
    report = run_check(list(args.files), evaluator, defaulter)
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
        return Exit.ERROR
    return report.exit_code
