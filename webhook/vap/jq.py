"""Karta jq paths as CEL: the subset that translates faithfully, and a refusal (with the reason) for the rest.

A definition path is read two ways. Its *shape*: a literal, a scalar expression over the object, or the
per-element form `.a.b[]? | EXPR` (also `.a.b[]?.c`) that yields one output per element of one list.
Its *meaning*, as two CEL expressions over the CEL value of jq's input `.`: `value` (what jq outputs) and
`ok` (jq does not stop with an error). `value` is only meaningful where `ok` holds, so it carries no
checks of its own. Supported: field access (`.a`, `.["a"]`), literals, `//` (which in jq also swallows
an error on its left), `==`/`!=`, `and`/`or`/`not`, `+ - *` on numbers, `if/elif/else/end`, parentheses,
pipes, array literals piped into `min`/`max`, and non-recursive `def`s (inlined: jq evaluates a filter
argument at its use, on the input there, which is what substituting the argument's tree does).
Anything else raises Untranslatable: the compiler then lists what depends on the path as not covered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from webhook.karta.jqcheck import JqSyntaxError, Token, tokenize
from webhook.vap import cel


class Untranslatable(ValueError):
    """A path outside the subset that translates to CEL faithfully; the message says what is in the way."""


# --- syntax tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    pass


@dataclass(frozen=True)
class Identity(Node):
    pass


@dataclass(frozen=True)
class Literal(Node):
    value: object


@dataclass(frozen=True)
class Field(Node):
    base: Node
    name: str


@dataclass(frozen=True)
class Iterate(Node):
    base: Node
    optional: bool


@dataclass(frozen=True)
class Pipe(Node):
    left: Node
    right: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # == != + - * and or //
    left: Node
    right: Node


@dataclass(frozen=True)
class If(Node):
    condition: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True)
class ArrayOf(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Builtin(Node):
    name: str  # min, max, not (applied to the input)


@dataclass(frozen=True)
class Param(Node):
    name: str


_BUILTINS = frozenset({"min", "max", "not"})


@dataclass
class _Def:
    params: tuple[str, ...]
    body: Node


@dataclass
class _Parser:
    tokens: list[Token]
    position: int = 0
    defs: dict[str, _Def] = field(default_factory=dict)
    params: frozenset[str] = frozenset()

    def peek(self, offset: int = 0) -> Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.text == text and token.kind in {"op", "ident"}

    def take(self, text: str) -> None:
        if not self.at(text):
            token = self.peek()
            raise Untranslatable(f"expected {text!r}, found {token.text if token else 'the end'!r}")
        self.position += 1

    def program(self) -> Node:
        while self.at("def"):
            self.definition()
        node = self.pipe()
        if self.peek() is not None:
            raise Untranslatable(f"{self.peek().text!r} is outside the subset that translates to CEL")  # type: ignore[union-attr]
        return node

    def definition(self) -> None:
        self.take("def")
        name = self._ident()
        params: list[str] = []
        if self.at("("):
            self.take("(")
            params.append(self._ident())
            while self.at(";"):
                self.take(";")
                params.append(self._ident())
            self.take(")")
        self.take(":")
        outer = self.params
        self.params = frozenset(params)
        body = self.pipe()
        self.params = outer
        self.take(";")
        self.defs[name] = _Def(tuple(params), body)

    def _ident(self) -> str:
        token = self.peek()
        if token is None or token.kind != "ident":
            raise Untranslatable("expected a name")
        if token.text.startswith("$"):
            raise Untranslatable("variables ($name) do not translate")
        self.position += 1
        return token.text

    def pipe(self) -> Node:
        left = self.comma()
        if self.at("|"):
            self.take("|")
            return Pipe(left, self.pipe())
        return left

    def comma(self) -> Node:
        node = self.alternative()
        if self.at(","):
            raise Untranslatable("',' outside an array literal yields several outputs")
        return node

    def alternative(self) -> Node:
        left = self.disjunction()
        if self.at("//"):
            self.take("//")
            return Binary("//", left, self.alternative())
        return left

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.at("or"):
            self.take("or")
            node = Binary("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.comparison()
        while self.at("and"):
            self.take("and")
            node = Binary("and", node, self.comparison())
        return node

    def comparison(self) -> Node:
        node = self.additive()
        for op in ("==", "!="):
            if self.at(op):
                self.take(op)
                return Binary(op, node, self.additive())
        for op in ("<", "<=", ">", ">="):
            if self.at(op):
                raise Untranslatable(f"'{op}' orders values of any type in jq; it is not translated")
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.at("+") or self.at("-"):
            op = self.peek().text  # type: ignore[union-attr]
            self.position += 1
            node = Binary(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.postfix()
        while self.at("*"):
            self.take("*")
            node = Binary("*", node, self.postfix())
        if self.at("/") or self.at("%"):
            raise Untranslatable("'/' and '%' are not translated")
        return node

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            token = self.peek()
            if token is None:
                return node
            if token.kind == "field":
                self.position += 1
                node = Field(node, token.text)
            elif token.text == "." and token.kind == "op" and self._bracket_follows(1):
                self.position += 1
            elif token.text == "[" and token.kind == "op":
                node = self._bracket(node)
            else:
                return node

    def _bracket_follows(self, offset: int) -> bool:
        token = self.peek(offset)
        return token is not None and token.kind == "op" and token.text == "["

    def _bracket(self, base: Node) -> Node:
        self.take("[")
        if self.at("]"):
            self.take("]")
            optional = self.at("?")
            if optional:
                self.take("?")
            return Iterate(base, optional)
        token = self.peek()
        if token is not None and token.kind == "str":
            self.position += 1
            self.take("]")
            return Field(base, _string(token.text))
        raise Untranslatable('only [] and ["name"] subscripts translate')

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise Untranslatable("incomplete expression")
        if token.kind == "field":
            return Identity()  # postfix() reads the field itself
        if token.kind == "op" and token.text == ".":
            self.position += 1
            return Identity()
        if token.kind == "num":
            self.position += 1
            number = json.loads(token.text)
            return Literal(number)
        if token.kind == "str":
            self.position += 1
            return Literal(_string(token.text))
        if token.kind == "op" and token.text == "(":
            self.take("(")
            node = self.pipe()
            self.take(")")
            return node
        if token.kind == "op" and token.text == "[":
            self.take("[")
            items = [self.alternative()]
            while self.at(","):
                self.take(",")
                items.append(self.alternative())
            self.take("]")
            return ArrayOf(tuple(items))
        if token.kind == "op" and token.text == "-" and (nxt := self.peek(1)) is not None and nxt.kind == "num":
            self.position += 2
            return Literal(-json.loads(nxt.text))
        if token.kind == "ident":
            return self._word(token.text)
        raise Untranslatable(f"{token.text!r} is outside the subset that translates to CEL")

    def _word(self, word: str) -> Node:
        self.position += 1
        if word in {"true", "false", "null"}:
            return Literal({"true": True, "false": False, "null": None}[word])
        if word == "if":
            return self._if()
        if word in self.params:
            return Param(word)
        if word in self.defs:
            definition = self.defs[word]
            args: list[Node] = []
            if self.at("("):
                self.take("(")
                args.append(self.pipe())
                while self.at(";"):
                    self.take(";")
                    args.append(self.pipe())
                self.take(")")
            if len(args) != len(definition.params):
                raise Untranslatable(f"{word} takes {len(definition.params)} arguments")
            return _substitute(definition.body, dict(zip(definition.params, args, strict=True)))
        if word in _BUILTINS and not self.at("("):
            return Builtin(word)
        raise Untranslatable(f"{word!r} is outside the subset that translates to CEL")

    def _if(self) -> Node:
        condition = self.pipe()
        self.take("then")
        then = self.pipe()
        if self.at("elif"):
            self.take("elif")
            return If(condition, then, self._if())
        otherwise: Node = Identity()  # jq 1.7: `if c then a end` is `if c then a else . end`
        if self.at("else"):
            self.take("else")
            otherwise = self.pipe()
        self.take("end")
        return If(condition, then, otherwise)


def _string(text: str) -> str:
    if "\\(" in text:
        raise Untranslatable("string interpolation does not translate")
    value = json.loads(text)
    assert isinstance(value, str)
    return value


def _substitute(node: Node, args: Mapping[str, Node]) -> Node:
    if isinstance(node, Param):
        return args.get(node.name, node)
    if isinstance(node, Field):
        return replace(node, base=_substitute(node.base, args))
    if isinstance(node, Iterate):
        return replace(node, base=_substitute(node.base, args))
    if isinstance(node, Pipe):
        return Pipe(_substitute(node.left, args), _substitute(node.right, args))
    if isinstance(node, Binary):
        return Binary(node.op, _substitute(node.left, args), _substitute(node.right, args))
    if isinstance(node, If):
        return If(*(_substitute(n, args) for n in (node.condition, node.then, node.otherwise)))
    if isinstance(node, ArrayOf):
        return ArrayOf(tuple(_substitute(n, args) for n in node.items))
    return node


def parse(expression: str) -> Node:
    try:
        tokens = tokenize(expression)
    except JqSyntaxError as exc:
        raise Untranslatable(str(exc)) from exc
    return _Parser(tokens).program()


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
    if isinstance(node, Iterate):
        return True
    children: Sequence[Node] = ()
    if isinstance(node, Field):
        children = (node.base,)
    elif isinstance(node, Pipe | Binary):
        children = (node.left, node.right)
    elif isinstance(node, If):
        children = (node.condition, node.then, node.otherwise)
    elif isinstance(node, ArrayOf):
        children = node.items
    return any(_iterates(c) for c in children)


def _split(node: Node) -> tuple[tuple[str, ...], bool, Node]:
    if isinstance(node, Iterate):
        steps = field_chain(node.base)
        if steps is None:
            raise Untranslatable("only a plain field path may be iterated (.a.b[]?)")
        return steps, node.optional, Identity()
    if isinstance(node, Field):
        steps, optional, element = _split(node.base)
        return steps, optional, Field(element, node.name)
    if isinstance(node, Pipe) and _iterates(node.left) and not _iterates(node.right):
        steps, optional, element = _split(node.left)
        return steps, optional, Pipe(element, node.right)
    raise Untranslatable("the path iterates somewhere other than its leading field path")


def field_chain(node: Node) -> tuple[str, ...] | None:
    """`.a.b.c` as ("a", "b", "c"); None for anything else."""
    names: list[str] = []
    while isinstance(node, Field):
        names.append(node.name)
        node = node.base
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
    """CEL for node applied to the CEL value `given` (given_is_map: `given` is a map, never null)."""
    if isinstance(node, Identity):
        return Meaning(given, TRUE)
    if isinstance(node, Literal):
        return Meaning(cel.literal(node.value), TRUE, isinstance(node.value, bool))
    if isinstance(node, Field):
        return _field(node, given, given_is_map)
    if isinstance(node, Pipe):
        left = translate(node.left, given, given_is_map=given_is_map)
        right = translate(node.right, left.value, given_is_map=given_is_map and isinstance(node.left, Identity))
        return Meaning(right.value, cel.all_of(left.ok, right.ok), right.boolean)
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
    if isinstance(node, _Extreme):
        return _extreme(node, given, given_is_map)
    if isinstance(node, Builtin) and node.name == "not":
        return Meaning(f"!{cel.truthy(given)}", TRUE, True)
    if isinstance(node, Builtin):
        raise Untranslatable(f"{node.name} is translated only on an array literal ([a, b] | {node.name})")
    if isinstance(node, ArrayOf):
        raise Untranslatable("array values are translated only as [a, b] | min or max")
    raise Untranslatable(f"{type(node).__name__} does not translate")


def _field(node: Field, given: str, given_is_map: bool) -> Meaning:
    """A chain of field accesses read in one go: null where a step is missing or null, an error (not ok)
    where a step is neither a map nor null, as jq has it."""
    names: list[str] = []
    base: Node = node
    while isinstance(base, Field):
        names.append(base.name)
        base = base.base
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
    if node.op == "//":
        # jq's alternative: the left output unless it is false or null; an error on the left is
        # swallowed too (libjq backtracks out of it), so the right is used then as well. The left value
        # is bound once (as null where it fails) instead of being repeated.
        held = f"[{left.value if left.ok == TRUE else f'({left.ok} ? {left.value} : null)'}]"
        return Meaning(
            f"{held}.map(l, {cel.truthy('l')} ? l : {right.value})[0]",
            f"{held}.all(l, {cel.truthy('l')} || {right.ok})" if right.ok != TRUE else TRUE,
        )
    ok = cel.all_of(left.ok, right.ok)
    if node.op in {"==", "!="}:
        return Meaning(f"(dyn({left.value}) {node.op} dyn({right.value}))", ok, True)
    if node.op == "and":  # the right side is evaluated only when the left does not decide
        return Meaning(f"({left.truth} && {right.truth})", cel.all_of(left.ok, f"(!{left.truth} || {right.ok})"), True)
    if node.op == "or":
        return Meaning(f"({left.truth} || {right.truth})", cel.all_of(left.ok, f"({left.truth} || {right.ok})"), True)
    # Arithmetic on numbers only: jq's other overloads (strings, arrays, null + x) are not translated,
    # so a non-number operand counts as "cannot read".
    typed = cel.all_of(ok, _numeric(left.value), _numeric(right.value))
    return Meaning(f"({left.value} {node.op} {right.value})", typed)


def translate_path(path: PathShape, given: str, *, given_is_map: bool) -> Meaning:
    """The meaning of a path's element expression (given: the element, or the object for a scalar path)."""
    return translate(_fold(path.element), given, given_is_map=given_is_map)


@dataclass(frozen=True)
class _Extreme(Node):
    """[items] | min or max over numbers, as nested comparisons."""

    name: str
    items: tuple[Node, ...]


def _fold(node: Node) -> Node:
    if (
        isinstance(node, Pipe)
        and isinstance(node.left, ArrayOf)
        and isinstance(node.right, Builtin)
        and node.right.name in {"min", "max"}
    ):
        return _Extreme(node.right.name, tuple(_fold(i) for i in node.left.items))
    if isinstance(node, Pipe):
        return Pipe(_fold(node.left), _fold(node.right))
    if isinstance(node, Binary):
        return Binary(node.op, _fold(node.left), _fold(node.right))
    if isinstance(node, If):
        return If(_fold(node.condition), _fold(node.then), _fold(node.otherwise))
    if isinstance(node, Field):
        return Field(_fold(node.base), node.name)
    return node


def _extreme(node: _Extreme, given: str, given_is_map: bool) -> Meaning:
    items = [translate(i, given, given_is_map=given_is_map) for i in node.items]
    op = "<=" if node.name == "min" else ">="
    value = items[0].value
    for item in items[1:]:
        value = cel.bind(f"[{value}, {item.value}]", "p", f"p[0] {op} p[1] ? p[0] : p[1]")
    return Meaning(value, cel.all_of(*(i.ok for i in items), *(_numeric(i.value) for i in items)))
