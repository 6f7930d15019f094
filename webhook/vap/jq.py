"""Karta jq paths as CEL: the subset that translates faithfully, and a refusal (with the reason) for the rest.

webhook.karta.jqparse parses a path and inlines its `def`s (jq evaluates a filter argument at its use,
on the input there, which is what substituting the argument's tree does); this module translates that
tree (webhook.karta.jqcompile compiles the same tree to Python). A path is read two ways. Its *shape*:
a literal, a scalar expression over the object, or the per-element form `.a.b[]? | EXPR` (also
`.a.b[]?.c`) that yields one output per element of one list. Its *meaning*, as two CEL expressions
over the CEL value of jq's input `.`: `value` (what jq outputs) and `ok` (jq does not stop with an
error). `value` is only meaningful where `ok` holds, so it carries no checks of its own. Translated:
field access (`.a`, `.["a"]`), literals (negative numbers too), `//` (an error on its left is the
whole path's error, in gojq as in libjq), `==`/`!=`, `and`/`or`/`not`, `+ - *` on numbers,
`if/elif/else/end`, pipes, array literals piped into `min`/`max`, and non-recursive `def`s. Anything
else raises Untranslatable, what jqparse refuses included: the compiler then lists what depends on the
path as not covered.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from webhook.karta import jqparse
from webhook.karta.jqparse import (
    ArrayOf,
    Binary,
    Call,
    Identity,
    If,
    IndexStep,
    IterateStep,
    Literal,
    Negate,
    Node,
    Try,
)
from webhook.vap import cel


class Untranslatable(ValueError):
    """A path outside the subset that translates to CEL faithfully; the message says what is in the way."""


# --- the translatable subset of the tree -----------------------------------------------------------

_BUILTINS = frozenset({"min", "max", "not"})  # applied to the input, without arguments
_OPERATORS = frozenset({"|", "==", "!=", "+", "-", "*", "and", "or", "//"})
# Why the other operators jqparse reads do not translate.
_REFUSED_OPERATORS = {
    ",": "',' outside an array literal yields several outputs",
    **{op: f"'{op}' orders values of any type in jq; it is not translated" for op in ("<", "<=", ">", ">=")},
    "/": "'/' and '%' are not translated",
    "%": "'/' and '%' are not translated",
}


def parse(expression: str) -> Node:
    """The path's tree, `def`s inlined; Untranslatable when it holds anything this module cannot translate."""
    try:
        node = jqparse.inline(jqparse.parse(expression), _check_builtin)
    except jqparse.JqUnsupported as exc:
        raise Untranslatable(str(exc)) from exc
    return _in_subset(node)


def _check_builtin(call: Call) -> None:
    if call.name not in _BUILTINS or call.args:
        raise Untranslatable(f"{call.name!r} is outside the subset that translates to CEL")


def _in_subset(node: Node) -> Node:
    """node with negative numbers as literals; Untranslatable for a node no translation handles
    (array literals and min/max are checked where they are used: translate)."""
    if isinstance(node, Identity | Literal | Call):
        return node  # the Calls left by inlining passed _check_builtin
    if isinstance(node, IndexStep):
        if isinstance(node.key, int):
            raise Untranslatable('only [] and ["name"] subscripts translate')
        if node.optional:
            raise Untranslatable("'?' is outside the subset that translates to CEL")
        return replace(node, target=_in_subset(node.target))
    if isinstance(node, IterateStep):
        return replace(node, target=_in_subset(node.target))
    if isinstance(node, Binary):
        if node.operator not in _OPERATORS:
            raise Untranslatable(_REFUSED_OPERATORS.get(node.operator, f"{node.operator!r} does not translate"))
        return Binary(node.operator, _in_subset(node.left), _in_subset(node.right))
    if isinstance(node, If):
        return If(_in_subset(node.condition), _in_subset(node.then), _in_subset(node.otherwise))
    if isinstance(node, ArrayOf):
        if node.body is None:
            raise Untranslatable("the empty array does not translate")
        items = [_in_subset(item) for item in array_items(node)]
        return ArrayOf(functools.reduce(lambda left, right: Binary(",", left, right), items))
    if isinstance(node, Negate):
        return _in_subset(_negated(node.body))
    if isinstance(node, Try):
        raise Untranslatable("'try' and '?' are outside the subset that translates to CEL")
    raise Untranslatable(f"{type(node).__name__} does not translate")


def array_items(node: ArrayOf) -> tuple[Node, ...]:
    """The items of an array literal `[a, b, c]`: its comma chain, which the parser nests to the left."""
    items: list[Node] = []
    body = node.body
    while isinstance(body, Binary) and body.operator == ",":
        items.append(body.right)
        body = body.left
    assert body is not None
    return (body, *reversed(items))


def _negated(node: Node) -> Node:
    """jq's unary minus takes in the products that follow (`-2 * .a` is `-(2 * .a)`): the sign goes onto
    the leading number, exactly so (IEEE rounding is symmetric; `/` and `%` are refused afterwards with
    their own reason). A minus before anything else does not translate."""
    if isinstance(node, Literal) and type(node.value) in (int, float):
        return Literal(-node.value)
    if isinstance(node, Binary) and node.operator in {"*", "/", "%"}:
        return Binary(node.operator, _negated(node.left), node.right)
    raise Untranslatable("'-' is translated only before a number")


# --- shape -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathShape:
    """A path as the compiler uses it: over the whole object, or once per element of one list."""

    expression: str
    element: Node  # evaluated with `.` = the element (per-element) or the object (scalar)
    list_steps: tuple[str, ...] | None = None  # field names from the object to the iterated list
    optional: bool = True  # `[]?` (a missing list gives no outputs) rather than `[]` (an error)

    @property
    def per_element(self) -> bool:
        return self.list_steps is not None


def shape(expression: str) -> PathShape:
    """The path's shape; Untranslatable when it is neither scalar nor per-element over one list."""
    node = parse(expression)
    if not _iterates(node):
        return PathShape(expression, node)
    steps, optional, element = _split(node)
    return PathShape(expression, element, steps, optional)


def _iterates(node: Node) -> bool:
    if isinstance(node, IterateStep):
        return True
    children: Sequence[Node] = ()
    if isinstance(node, IndexStep):
        children = (node.target,)
    elif isinstance(node, Binary):
        children = (node.left, node.right)
    elif isinstance(node, If):
        children = (node.condition, node.then, node.otherwise)
    elif isinstance(node, ArrayOf) and node.body is not None:
        children = array_items(node)
    return any(_iterates(c) for c in children)


def _split(node: Node) -> tuple[tuple[str, ...], bool, Node]:
    if isinstance(node, IterateStep):
        steps = field_chain(node.target)
        if steps is None:
            raise Untranslatable("only a plain field path may be iterated (.a.b[]?)")
        return steps, node.optional, Identity()
    if isinstance(node, IndexStep):
        steps, optional, element = _split(node.target)
        return steps, optional, replace(node, target=element)
    if isinstance(node, Binary) and node.operator == "|" and _iterates(node.left) and not _iterates(node.right):
        steps, optional, element = _split(node.left)
        return steps, optional, Binary("|", element, node.right)
    raise Untranslatable("the path iterates somewhere other than its leading field path")


def _name(step: IndexStep) -> str:
    assert isinstance(step.key, str), "_in_subset lets only names through"
    return step.key


def field_chain(node: Node) -> tuple[str, ...] | None:
    """`.a.b.c` as ("a", "b", "c"); None for anything else."""
    names: list[str] = []
    while isinstance(node, IndexStep):
        names.append(_name(node))
        node = node.target
    return tuple(reversed(names)) if isinstance(node, Identity) else None


# --- meaning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meaning:
    value: str  # CEL: jq's output (null for jq's null), valid where `ok` holds
    ok: str  # CEL bool: jq gives an output without an error
    boolean: bool = False  # the value is always a bool (so jq's truth is the value itself)

    @property
    def truth(self) -> str:
        return self.value if self.boolean else cel.truthy(self.value)


TRUE = "true"


def translate(node: Node, given: str, *, given_is_map: bool = False) -> Meaning:
    """CEL for node (from parse) applied to the CEL value `given` (given_is_map: `given` is a map, never null)."""
    if isinstance(node, Identity):
        return Meaning(given, TRUE)
    if isinstance(node, Literal):
        return Meaning(cel.literal(node.value), TRUE, isinstance(node.value, bool))
    if isinstance(node, IndexStep):
        return _field(node, given, given_is_map)
    if isinstance(node, Binary) and node.operator == "|":
        return _pipe(node, given, given_is_map)
    if isinstance(node, Binary):
        return _binary(node, given, given_is_map)
    if isinstance(node, If):
        condition = translate(node.condition, given, given_is_map=given_is_map)
        then = translate(node.then, given, given_is_map=given_is_map)
        otherwise = translate(node.otherwise, given, given_is_map=given_is_map)
        return Meaning(
            f"({condition.truth} ? {then.value} : {otherwise.value})",
            cel.all_of(condition.ok, f"({condition.truth} ? {then.ok} : {otherwise.ok})"),
            then.boolean and otherwise.boolean,
        )
    if isinstance(node, Call) and node.name == "not":
        return Meaning(f"!{cel.truthy(given)}", TRUE, True)
    if isinstance(node, Call):
        raise Untranslatable(f"{node.name} is translated only on an array literal ([a, b] | {node.name})")
    if isinstance(node, ArrayOf):
        raise Untranslatable("array values are translated only as [a, b] | min or max")
    raise Untranslatable(f"{type(node).__name__} does not translate")


def _pipe(node: Binary, given: str, given_is_map: bool) -> Meaning:
    if isinstance(node.left, ArrayOf) and isinstance(node.right, Call) and node.right.name in {"min", "max"}:
        return _extreme(node.right.name, array_items(node.left), given, given_is_map)
    left = translate(node.left, given, given_is_map=given_is_map)
    right = translate(node.right, left.value, given_is_map=given_is_map and isinstance(node.left, Identity))
    return Meaning(right.value, cel.all_of(left.ok, right.ok), right.boolean)


def _field(node: IndexStep, given: str, given_is_map: bool) -> Meaning:
    """A chain of field accesses read in one go: null where a step is missing or null, an error (not ok)
    where a step is neither a map nor null, as jq has it."""
    names: list[str] = []
    base: Node = node
    while isinstance(base, IndexStep):
        names.append(_name(base))
        base = base.target
    names.reverse()
    start = translate(base, given, given_is_map=given_is_map)
    start_is_map = given_is_map and isinstance(base, Identity)
    steps = []
    current = start.value
    for name in names:
        steps.append(current)
        current = cel.select(current, name)
    presence = []
    for index, (holder, name) in enumerate(zip(steps, names, strict=True)):
        check = cel.has(holder, name)
        if index or not start_is_map:
            check = cel.all_of(f"type({holder}) == map", check)
        presence.append(check)
    value = f"({cel.all_of(*presence)} ? {current} : null)"
    # Reading step i fails only on a holder that is neither a map nor null, and the holder is jq's null
    # (no failure) as soon as an earlier step was missing.
    oks = []
    for index, holder in enumerate(steps):
        if index == 0 and start_is_map:
            continue
        fine = f"({holder} == null || type({holder}) == map)"
        oks.append(f"(!{cel.all_of(*presence[:index])} || {fine})" if index else fine)
    return Meaning(value, cel.all_of(start.ok, *oks))


def _numeric(value: str) -> str:
    if len(value) > 40:  # bind a long value once rather than repeat it
        return f"[{value}].all(n, type(n) == int || type(n) == double)"
    return f"(type({value}) == int || type({value}) == double)"


def _binary(node: Binary, given: str, given_is_map: bool) -> Meaning:
    left = translate(node.left, given, given_is_map=given_is_map)
    right = translate(node.right, given, given_is_map=given_is_map)
    if node.operator == "//":
        # jq's alternative: the left output unless it is false or null. An error on the left is the
        # whole expression's error: gojq (Karta's runner) and libjq pass it on; only `?` would swallow
        # it. The left value is bound once (as null where it fails) instead of being repeated.
        held = f"[{left.value if left.ok == TRUE else f'({left.ok} ? {left.value} : null)'}]"
        right_ok = f"{held}.all(l, {cel.truthy('l')} || {right.ok})" if right.ok != TRUE else TRUE
        return Meaning(f"{held}.map(l, {cel.truthy('l')} ? l : {right.value})[0]", cel.all_of(left.ok, right_ok))
    ok = cel.all_of(left.ok, right.ok)
    if node.operator in {"==", "!="}:
        return Meaning(f"(dyn({left.value}) {node.operator} dyn({right.value}))", ok, True)
    if node.operator == "and":  # the right side is evaluated only when the left does not decide
        return Meaning(f"({left.truth} && {right.truth})", cel.all_of(left.ok, f"(!{left.truth} || {right.ok})"), True)
    if node.operator == "or":
        return Meaning(f"({left.truth} || {right.truth})", cel.all_of(left.ok, f"({left.truth} || {right.ok})"), True)
    # Arithmetic on numbers only: jq's other overloads (strings, arrays, null + x) are not translated,
    # so a non-number operand counts as "cannot read".
    typed = cel.all_of(ok, _numeric(left.value), _numeric(right.value))
    return Meaning(f"({left.value} {node.operator} {right.value})", typed)


def translate_path(path: PathShape, given: str, *, given_is_map: bool) -> Meaning:
    """The meaning of a path's element expression (given: the element, or the object for a scalar path)."""
    return translate(path.element, given, given_is_map=given_is_map)


def _extreme(name: str, items: Sequence[Node], given: str, given_is_map: bool) -> Meaning:
    """[items] | min or max over numbers, as nested comparisons."""
    meanings = [translate(i, given, given_is_map=given_is_map) for i in items]
    op = "<=" if name == "min" else ">="
    value = meanings[0].value
    for meaning in meanings[1:]:
        value = cel.bind(f"[{value}, {meaning.value}]", "p", f"p[0] {op} p[1] ? p[0] : p[1]")
    return Meaning(value, cel.all_of(*(m.ok for m in meanings), *(_numeric(m.value) for m in meanings)))
