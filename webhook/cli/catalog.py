"""`karta-admission rules` and `karta-admission definitions`: what is in force."""

from __future__ import annotations

import argparse
from pathlib import Path

from webhook.cli.exits import Exit
from webhook.config import Config, load_definitions
from webhook.karta.load import load_file
from webhook.karta.parse import DefinitionError
from webhook.policy.registry import BUILTIN_RULES


def rules_command() -> Exit:
    width = max(len(r) for r in BUILTIN_RULES.ids())
    for rule in BUILTIN_RULES:
        scope = f" [{rule.api_group} only]" if rule.api_group else ""
        print(f"{rule.id:<{width}}  {rule.default_severity!s:<4}  {rule.summary}{scope}")
    return Exit.OK


def definitions_command(args: argparse.Namespace, config: Config) -> Exit:
    if args.files:
        status = Exit.OK
        for name in args.files:
            try:
                for definition in load_file(Path(name)):
                    print(f"OK: {definition.source}: {definition.name} (root kind {definition.root_kind})")
            except DefinitionError as exc:
                print(f"INVALID: {exc}")
                status = Exit.DENIED
        return status
    for compiled in load_definitions(config):
        d = compiled.definition
        components = ", ".join(c.name for c in d.components)
        print(f"{d.root_kind}: {d.name} from {d.source} (components: {components})")
    return Exit.OK
