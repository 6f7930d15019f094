"""`karta-admission check`: manifests checked offline, with the verdict the webhook would give."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from webhook.cli.exits import Exit
from webhook.cli.render import print_verdict, summary, verdict_fields
from webhook.config import Config, build_evaluator
from webhook.evaluation import Evaluator, Verdict
from webhook.karta.load import load_documents
from webhook.kube.defaults import CRDDefaults, CRDSchemaError


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
    except (OSError, yaml.YAMLError, CRDSchemaError) as exc:
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
    return report.exit_code
