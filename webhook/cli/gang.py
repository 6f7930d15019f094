"""`karta-admission gang`: preview gang scheduling for manifests, offline (webhook.gang.preview)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TextIO

import yaml

from webhook.cli.check import Defaulter
from webhook.cli.exits import Exit
from webhook.config import Config, load_definitions
from webhook.gang.preview import PreviewEntry, preview
from webhook.gang.settings import GangSettings
from webhook.karta.registry import DefinitionSet
from webhook.kube.defaults import CRDSchemaError
from webhook.manifests import ManifestError, load_manifests, object_problem


def run_gang(
    files: list[str], definitions: DefinitionSet, settings: GangSettings, defaulter: Defaulter
) -> tuple[list[PreviewEntry], list[str], list[str]]:
    """Entries, notes on what was skipped, and errors (unreadable files)."""
    entries: list[PreviewEntry] = []
    skipped: list[str] = []
    errors: list[str] = []
    for name in files:
        try:
            documents = load_manifests(name)
        except ManifestError as exc:
            errors.append(str(exc))
            continue
        for document in documents:
            item = document.obj
            problem = object_problem(item)
            if problem is not None:
                errors.append(f"{document.where}: {problem}")
                continue
            entry, notes = preview(item, name, definitions, settings, defaulter.apply)
            skipped.extend(f"{document.where}: {note}" for note in notes)
            if entry is not None:
                entries.append(entry)
    return entries, skipped, errors


def _keys(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v if len(v) <= 60 else v[:57] + '...'}" for k, v in values.items()) or "-"


def print_text(entries: list[PreviewEntry], skipped: list[str], out: TextIO) -> None:
    for entry in entries:
        print(f"{entry.file}: RayCluster {entry.namespace}/{entry.name}: scheduler {entry.scheduler}", file=out)
        for obj in entry.objects:
            spec = obj.get("spec") or {}
            fields = ", ".join(f"{k} {json.dumps(v, separators=(',', ':'))}" for k, v in spec.items())
            print(f"  object  {obj['apiVersion']} {obj['kind']} {obj['metadata']['name']}: {fields}", file=out)
        for pod in entry.pods:
            print(f"  pods    {pod['group']} x{pod['count']}: schedulerName {pod['schedulerName']}", file=out)
            print(f"          labels: {_keys(pod['labels'])}", file=out)
            print(f"          annotations: {_keys(pod['annotations'])}", file=out)
        for note in entry.notes:
            print(f"  note    {note}", file=out)
    for note in skipped:
        print(f"skipped {note}", file=out)
    keyed = sum(1 for e in entries if any(p["labels"] or p["annotations"] for p in e.pods))
    print(f"{len(entries)} Ray cluster{'s' if len(entries) != 1 else ''}: {keyed} with gang keys", file=out)


def gang_command(args: argparse.Namespace, config: Config) -> Exit:
    if args.scheduler:
        config = replace(config, gang=replace(config.gang, scheduler=args.scheduler))
        if args.scheduler == "custom" and not (config.gang.custom_labels or config.gang.custom_annotations):
            print("karta-admission: --scheduler custom needs gang.custom in the --config file", file=sys.stderr)
            return Exit.ERROR
    try:
        defaulter = Defaulter([])
    except (OSError, yaml.YAMLError, CRDSchemaError) as exc:  # pragma: no cover - packaged defaults
        print(f"karta-admission: {exc}", file=sys.stderr)
        return Exit.ERROR
    entries, skipped, errors = run_gang(list(args.files), load_definitions(config), config.gang, defaulter)
    for error in errors:
        print(f"karta-admission: {error}", file=sys.stderr)
    if args.output == "json":
        document: list[dict[str, Any]] = [e.as_dict() for e in entries]
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_text(entries, skipped, sys.stdout)
    return Exit.ERROR if errors else Exit.OK
