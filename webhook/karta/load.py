"""Where definitions come from: files, directories and the built-in ones shipped with the package."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from webhook.karta.model import KartaDefinition
from webhook.karta.parse import DefinitionError, parse_definition


def load_documents(path: Path) -> list[Any]:
    """All YAML documents of a file (JSON is YAML too), empty documents dropped."""
    with path.open(encoding="utf-8") as handle:
        return [d for d in yaml.safe_load_all(handle) if d is not None]


def load_file(path: Path, source_prefix: str = "") -> list[KartaDefinition]:
    """Every Karta object in the file; other documents are refused so that nothing is silently ignored."""
    source = f"{source_prefix}{path}"
    try:
        documents = load_documents(path)
    except (OSError, yaml.YAMLError) as exc:
        raise DefinitionError(source, [f"cannot read: {exc}"]) from exc
    definitions = []
    for index, document in enumerate(documents):
        where = source if len(documents) == 1 else f"{source}#{index + 1}"
        if not isinstance(document, Mapping):
            raise DefinitionError(where, ["document is not a mapping"])
        definitions.append(parse_definition(document, where))
    return definitions


def load_directory(directory: Path) -> list[KartaDefinition]:
    """All *.yaml, *.yml and *.json files of a directory, in name order (not recursive)."""
    if not directory.is_dir():
        raise DefinitionError(str(directory), ["not a directory"])
    definitions: list[KartaDefinition] = []
    for path in sorted(directory.iterdir()):
        # Kubernetes ConfigMap volumes hold ..data symlinks and dot-directories next to the files.
        if path.name.startswith(".") or path.suffix not in {".yaml", ".yml", ".json"} or not path.is_file():
            continue
        definitions.extend(load_file(path))
    return definitions


@cache
def builtin_definitions() -> tuple[KartaDefinition, ...]:
    """The definitions shipped with the package (docs/samples/*.yaml)."""
    package = resources.files("webhook").joinpath("definitions")
    definitions: list[KartaDefinition] = []
    for entry in sorted(package.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        for index, document in enumerate(d for d in yaml.safe_load_all(entry.read_text()) if d is not None):
            definitions.append(parse_definition(document, f"built-in:{entry.name}#{index + 1}"))
    return tuple(definitions)
