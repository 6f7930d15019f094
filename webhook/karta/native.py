"""Native evaluation of the jq paths that are plain field chains, and input pruning for the rest.

Most Karta paths are `.a.b["c"][]?.d` or a literal. Feeding a document to libjq costs about 45 µs
per KB (the JSON text has to be parsed into jq values), far more than walking a dict, so these paths
are evaluated here with jq's exact semantics (null propagation, errors, `[]?`, sorted object keys as
gojq iterates them). A path outside that subset still goes to libjq, but it is given only the parts
of the document it can reach, when its form proves that (see `reach`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webhook.karta.jqcheck import JqSyntaxError, Token, tokenize

PathPart = str | int
Location = tuple[PathPart, ...]


class NativeError(ValueError):
    """A jq runtime error, worded as jq words it."""


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Index:
    position: int


@dataclass(frozen=True)
class Iterate:
    optional: bool


Step = Field | Index | Iterate

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STRING = r'"(?:[^"\\]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_STEP = re.compile(
    rf"\.({_IDENT})"  # .name
    rf"|\.?\[({_STRING})\]"  # ["name"] or .["name"]
    r"|\.?\[(-?\d+)\]"  # [0] or .[0]
    r"|\.?\[\](\?)?"  # [] or []? or .[]
)
_LITERAL = re.compile(rf"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|{_STRING}|true|false|null")


@dataclass(frozen=True)
class SimplePath:
    """A literal, or `.` followed by field, index and iteration steps."""

    steps: tuple[Step, ...]
    literal: Any = None
    is_literal: bool = False

    def evaluate(self, document: Any) -> tuple[list[Any], list[Location] | None]:
        """The outputs and, for a path, where each came from (as jq's path() would give them)."""
        if self.is_literal:
            return [self.literal], None
        values: list[Any] = [document]
        locations: list[Location] = [()]
        for step in self.steps:
            values, locations = _apply(step, values, locations)
        return values, locations


def parse_simple(expression: str) -> SimplePath | None:
    """The expression as a SimplePath, or None when it needs the full jq language."""
    text = expression.strip()
    if _LITERAL.fullmatch(text):
        return SimplePath((), json.loads(text), is_literal=True)
    if text == ".":
        return SimplePath(())
    if not text.startswith("."):
        return None
    steps: list[Step] = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if not match:
            return None
        name, quoted, number, optional = match.groups()
        if name is not None:
            steps.append(Field(name))
        elif quoted is not None:
            steps.append(Field(json.loads(quoted)))
        elif number is not None:
            steps.append(Index(int(number)))
        else:
            steps.append(Iterate(optional is not None))
        position = match.end()
    return SimplePath(tuple(steps))


def json_type_name(value: Any) -> str:
    """jq's name for the type of a decoded JSON value, as its error messages print it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _apply(step: Step, values: list[Any], locations: list[Location]) -> tuple[list[Any], list[Location]]:
    """One step over every current output: a loop per kind of step, not a generator per value."""
    if isinstance(step, Field):
        return _field(step.name, values, locations)
    if isinstance(step, Index):
        return _index(step.position, values, locations)
    return _iterate(step.optional, values, locations)


def _field(name: str, values: list[Any], locations: list[Location]) -> tuple[list[Any], list[Location]]:
    found = []
    for value in values:
        if isinstance(value, dict):
            found.append(value.get(name))
        elif value is None:
            found.append(None)
        else:
            raise NativeError(f'Cannot index {json_type_name(value)} with "{name}"')
    return found, [(*location, name) for location in locations]


def _index(position: int, values: list[Any], locations: list[Location]) -> tuple[list[Any], list[Location]]:
    return [element(value, position) for value in values], [(*location, position) for location in locations]


def element(value: Any, position: int) -> Any:
    """`.[position]` on one value (the compiled paths use it too)."""
    # gojq (Karta's runner) indexes a string by character, as a list; libjq refuses to.
    if type(value) is list or type(value) is str:
        return value[position] if -len(value) <= position < len(value) else None
    if value is None:
        return None
    raise NativeError(f"Cannot index {json_type_name(value)} with number")


def _iterate(optional: bool, values: list[Any], locations: list[Location]) -> tuple[list[Any], list[Location]]:
    found: list[Any] = []
    where: list[Location] = []
    for value, location in zip(values, locations, strict=True):
        if isinstance(value, list):
            found.extend(value)
            where.extend((*location, index) for index in range(len(value)))
        elif isinstance(value, dict):
            # gojq iterates object values in sorted key order.
            for key in sorted(value):
                found.append(value[key])
                where.append((*location, key))
        elif not optional:
            raise NativeError(f"Cannot iterate over {json_type_name(value)}")
    return found, where


@dataclass(frozen=True)
class Reach:
    """What of the document an expression can read: the subtree at `prefix`; when `fields` is set,
    only those fields of each element the prefix iterates (`.a.b[]? | REST` with REST reading `.name`s)."""

    prefix: Location
    fields: frozenset[str] | None = None


def reach(expression: str) -> Reach | None:
    """The part of the document an expression can read, or None when that is not provable.

    Provable forms (after any leading `def`s): `.a.b`, `.a.b | REST`, `.a.b[]? | REST` and
    `.a.b == <literal>`: after the chain's pipe, `.` is a value under `.a.b`, and nothing in jq gives
    the root back (`$ENV`, `input` and `$__loc__`-style escapes are refused or shadowed, and no variable
    is bound before the chain). `as` bindings, `,`, `//` and other operators are not provable.
    """
    try:
        tokens = tokenize(expression)
    except JqSyntaxError:
        return None
    start = _after_definitions(tokens)
    chain: list[PathPart] = []
    index = start
    while index < len(tokens) and tokens[index].kind == "field":
        chain.append(tokens[index].text)
        index += 1
    if not chain:
        return None
    rest = tokens[index:]
    iterated = _is_iteration(rest)
    if iterated:
        rest = rest[3:] if len(rest) >= 3 and rest[2].text == "?" else rest[2:]
    if not rest or (rest[0].kind == "op" and rest[0].text == "|"):
        fields = _element_fields([*tokens[:start], *rest[1:]]) if iterated and rest else None
        return Reach(tuple(chain), fields)
    if (
        len(rest) == 2
        and rest[0].kind == "op"
        and rest[0].text in {"==", "!="}
        and (rest[1].kind in {"num", "str"} or (rest[1].kind == "ident" and rest[1].text in {"true", "false", "null"}))
    ):
        return Reach(tuple(chain))
    return None


# What the code applied to each element (and the definitions it calls) may contain so that it can only
# read the element through named fields: then the other fields can be left out of libjq's input.
# Nothing that sees a whole value (a bare `.`, iteration, `keys`, `length`, `tojson`, object
# construction with `{name}` shorthand, formats) is allowed. min/max/not on an element give the same
# result (an error, or false) whatever fields it has.
_ELEMENT_OPS = frozenset({"|", "//", "==", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", ",", "(", ")", ";", ":",
                          "[", "]", "?"})  # fmt: skip
_ELEMENT_WORDS = frozenset(
    {"if", "then", "elif", "else", "end", "and", "or", "def", "true", "false", "null", "min", "max", "not", "floor",
     "ceil", "empty"}
)  # fmt: skip


def _element_fields(tokens: Sequence[Token]) -> frozenset[str] | None:
    defined = _defined_names(tokens)
    fields: set[str] = set()
    for position, token in enumerate(tokens):
        if token.kind == "field":
            fields.add(token.text)
        elif token.kind in {"num", "str", "var"}:
            continue
        elif token.kind == "op" and token.text in _ELEMENT_OPS:
            following = tokens[position + 1] if position + 1 < len(tokens) else None
            if token.text == "[" and following is not None and following.text == "]":
                return None  # an iteration inside REST
        elif token.kind == "ident" and (token.text in _ELEMENT_WORDS or token.text in defined):
            continue
        else:
            return None
    return frozenset(fields)


def _defined_names(tokens: Sequence[Token]) -> set[str]:
    """Names of the expression's own functions and their parameters."""
    names: set[str] = set()
    for position, token in enumerate(tokens):
        if token.kind == "ident" and token.text == "def" and position + 1 < len(tokens):
            names.add(tokens[position + 1].text)
            cursor = position + 2
            if cursor < len(tokens) and tokens[cursor].text == "(":
                while cursor < len(tokens) and tokens[cursor].text != ")":
                    if tokens[cursor].kind in {"ident", "var"}:
                        names.add(tokens[cursor].text)
                    cursor += 1
    return names


def _is_iteration(tokens: Sequence[Token]) -> bool:
    return len(tokens) >= 2 and tokens[0].text == "[" and tokens[1].text == "]"


def _after_definitions(tokens: Sequence[Token]) -> int:
    """Index of the first token after the leading `def name...: body;` definitions."""
    index = 0
    while index < len(tokens) and tokens[index].kind == "ident" and tokens[index].text == "def":
        depth = 0
        nesting = 0
        index += 1
        while index < len(tokens):
            token = tokens[index]
            if token.kind == "op" and token.text in {"(", "[", "{"}:
                depth += 1
            elif token.kind == "op" and token.text in {")", "]", "}"}:
                depth -= 1
            elif token.kind == "ident" and token.text == "def":
                nesting += 1
            elif token.kind == "op" and token.text == ";" and depth == 0:
                if nesting == 0:
                    index += 1
                    break
                nesting -= 1
            index += 1
    return index


def prune(document: Any, reaches: Sequence[Reach]) -> Any:
    """A copy of the document holding only what the given reaches can read (at the same paths)."""
    plan: dict[Location, frozenset[str] | None] = {}
    for found in reaches:
        if found.prefix in plan:
            known = plan[found.prefix]
            plan[found.prefix] = None if known is None or found.fields is None else known | found.fields
        else:
            plan[found.prefix] = found.fields
    for prefix in plan:
        if any(other != prefix and other[: len(prefix)] == prefix for other in plan):
            plan[prefix] = None  # a deeper chain reads under it: keep its elements whole
    if not isinstance(document, dict):
        return document
    if () in plan:
        return document
    pruned: dict[str, Any] = {}
    for prefix, fields in sorted(plan.items(), key=lambda item: len(item[0])):
        source: Any = document
        target = pruned
        for depth, key in enumerate(prefix):
            assert isinstance(key, str)
            if key not in source:
                break
            value = source[key]
            if depth == len(prefix) - 1:
                target[key] = value if fields is None else _project(value, fields)
                break
            if not isinstance(value, dict):
                target[key] = value  # a non-object jq will fail on alike
                break
            existing = target.get(key)
            if existing is value:
                break  # a shorter prefix already took the whole subtree
            if not isinstance(existing, dict):
                existing = target[key] = {}
            target, source = existing, value
    return pruned


def _project(value: Any, fields: frozenset[str]) -> Any:
    def keep(element: Any) -> Any:
        return {k: v for k, v in element.items() if k in fields} if isinstance(element, dict) else element

    if isinstance(value, list):
        return [keep(e) for e in value]
    if isinstance(value, dict):
        return {k: keep(v) for k, v in value.items()}
    return value
