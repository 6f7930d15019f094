"""Small builders of CEL text, so the compiler never pastes user data into an expression unquoted.

Objects reach a ValidatingAdmissionPolicy as untyped maps (kube-apiserver declares `object` as `dyn`
and converts the unstructured object), so fields are read with map semantics: `has()`/`in` for
presence, `x.f` or `x["f"]` for the value, and a missing key is an error that must be guarded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

# CEL's reserved words cannot be field selectors (cel-spec langdef "Syntax").
_RESERVED = frozenset(
    {"as", "break", "const", "continue", "else", "false", "for", "function", "if", "import", "in", "let", "loop",
     "package", "namespace", "null", "return", "true", "var", "void", "while"}
)  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def string(text: str) -> str:
    """A CEL string literal (JSON's escapes are CEL's for everything JSON emits)."""
    return json.dumps(text)


def literal(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) else f"{int(value)}.0"
    if isinstance(value, str):
        return string(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise ValueError(f"no CEL literal for {value!r}")


def strings(values: Iterable[str]) -> str:
    return "[" + ", ".join(string(v) for v in values) + "]"


def select(base: str, name: str) -> str:
    """base.name, or base["name"] where the name is not a plain identifier."""
    if _IDENT.fullmatch(name) and name not in _RESERVED:
        return f"{base}.{name}"
    return f"{base}[{string(name)}]"


def has(base: str, name: str) -> str:
    return f"({string(name)} in {base})"


def path(base: str, names: Sequence[str]) -> str:
    out = base
    for name in names:
        out = select(out, name)
    return out


def present(base: str, names: Sequence[str]) -> str:
    """Every step of base.names exists and each parent is a map (so the chain can be read)."""
    parts = []
    current = base
    for index, name in enumerate(names):
        if index:
            parts.append(f"type({current}) == map")
        parts.append(has(current, name))
        current = select(current, name)
    return all_of(*parts)


def map_at(base: str, names: Sequence[str]) -> str:
    """The map at base.names, or {} when it is missing or not a map (rules read such a field as empty)."""
    target = path(base, names)
    return f"({all_of(present(base, names), f'type({target}) == map')} ? {target} : {{}})"


def list_at(base: str, names: Sequence[str]) -> str:
    """The list at base.names, or [] when it is missing or not a list."""
    target = path(base, names)
    return f"({all_of(present(base, names), f'type({target}) == list')} ? {target} : [])"


def value_at(base: str, names: Sequence[str], default: str = "null") -> str:
    target = path(base, names)
    return f"({present(base, names)} ? {target} : {default})"


def all_of(*parts: str) -> str:
    kept = [p for p in parts if p and p != "true"]
    if not kept:
        return "true"
    if len(kept) == 1:
        return kept[0]
    return "(" + " && ".join(kept) + ")"


def any_of(*parts: str) -> str:
    if "true" in parts:
        return "true"
    kept = [p for p in parts if p and p != "false"]
    if not kept:
        return "false"
    if len(kept) == 1:
        return kept[0]
    return "(" + " || ".join(kept) + ")"


def truthy(value: str) -> str:
    """jq's truth: anything but false and null."""
    return f"({value} != null && {value} != false)"


def bind(value: str, name: str, body: str) -> str:
    """body with `name` bound to value once (Kubernetes 1.30 has no cel.bind): [value].map(name, body)[0]."""
    return f"[{value}].map({name}, {body})[0]"


def show(value: str) -> str:
    """A value as text for a message; strings quoted like the webhook's repr()."""
    return f'(type({value}) == string ? "\'" + {value} + "\'" : string({value}))'
