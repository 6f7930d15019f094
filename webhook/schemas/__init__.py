"""The package's JSON schemas (Karta objects, policy hints, the configuration file) and their checker."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from webhook.kube.fieldpath import format_path


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files("webhook").joinpath("schemas", name).read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def schema_problems(schema_name: str, document: Any, prefix: str = "") -> list[str]:
    """Structural problems of a document against one of the package's JSON schemas, path first."""
    problems = []
    for error in sorted(_validator(schema_name).iter_errors(document), key=lambda e: list(e.path)):
        where = format_path([prefix, *error.absolute_path] if prefix else list(error.absolute_path))
        problems.append(f"{where or '(top level)'}: {error.message}")
    return problems
