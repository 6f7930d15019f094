"""The jq subset of Karta paths as a syntax tree: the one parser of the code base.

`parse` reads an expression (tokens from jqcheck.tokenize) into the nodes below, exactly as jq groups
it; `inline` then expands user `def`s, so that consumers see only builtins. Two consumers read the
tree: webhook.karta.jqcompile compiles it to Python closures, webhook.vap.jq translates it to CEL.
Each refuses, in its own terms, the nodes it cannot handle; this module refuses (JqUnsupported) what
the subset leaves out altogether: variables, `reduce`/`foreach`/`label`, object construction, slices
and indexes by expression, `catch`, string interpolation, formats, `..`, modules, and recursion.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.karta.jqcheck import JqSyntaxError, Token, tokenize

# Inlining function bodies multiplies nodes; a program past this size is refused.
MAX_INLINED_NODES = 4000


class JqUnsupported(ValueError):
    """Outside the subset this parser reads, or not jq at all: the message says what is in the way."""


def parse(expression: str) -> Node:
    """The syntax tree of `expression`, `def`s included (see `inline`)."""
    try:
        tokens = tokenize(expression)
    except JqSyntaxError as exc:
        raise JqUnsupported(f"cannot be read: {exc}") from exc
    return _Parser(tokens).parse_program()


# ---------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class Identity:
    """`.`"""


@dataclass(frozen=True)
class Literal:
    """null, a boolean, a number or a string"""

    value: Any


@dataclass(frozen=True)
class IndexStep:
    """`.a`, `."a"`, `.["a"]`, `.[0]` after target; optional: a `?` right after the step"""

    target: Node
    key: str | int
    optional: bool


@dataclass(frozen=True)
class IterateStep:
    """`.[]` after target; optional: `.[]?`"""

    target: Node
    optional: bool


@dataclass(frozen=True)
class Try:
    """`try body` (without `catch`), or `body?` where the `?` does not belong to a step"""

    body: Node


@dataclass(frozen=True)
class Binary:
    operator: str  # "|", ",", "//", "and", "or", comparisons, arithmetic
    left: Node
    right: Node


@dataclass(frozen=True)
class Negate:
    """unary minus"""

    body: Node


@dataclass(frozen=True)
class If:
    condition: Node
    then: Node
    otherwise: Node  # Identity when `else` is left out


@dataclass(frozen=True)
class ArrayOf:
    """`[body]`; `[]` has no body"""

    body: Node | None


@dataclass(frozen=True)
class Call:
    """a builtin or a user function (until `inline`), or a filter parameter"""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class FuncDef:
    """`def name(params): body; rest`"""

    name: str
    params: tuple[str, ...]
    body: Node
    rest: Node


Node = Identity | Literal | IndexStep | IterateStep | Try | Binary | Negate | If | ArrayOf | Call | FuncDef

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_TERM_ENDS = frozenset({"then", "elif", "else", "end", "and", "or", "as", "catch"})


# ---------------------------------------------------------------------------------------------------
# Parser: jq's grammar, by precedence from loosest: def, |, ",", // (right), or, and, comparisons
# (non-associative), + -, * / %, unary minus, postfix terms.


class _Parser:
    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tokens
        self.position = 0

    def parse_program(self) -> Node:
        node = self.parse_pipe()
        if self.position != len(self.tokens):
            raise JqUnsupported(f"{self.tokens[self.position].text!r} is outside the subset")
        return node

    def peek(self, offset: int = 0) -> Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def peek_text(self, offset: int = 0) -> str | None:
        token = self.peek(offset)
        return token.text if token is not None and token.kind in {"op", "ident"} else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise JqUnsupported("the expression ends too early")
        self.position += 1
        return token

    def expect(self, text: str) -> None:
        if self.peek_text() != text:
            raise JqUnsupported(f"expected {text!r}")
        self.position += 1

    def parse_pipe(self) -> Node:
        if self.peek_text() == "def":
            return self.parse_def()
        left = self.parse_comma()
        if self.peek_text() == "|":
            self.position += 1
            return Binary("|", left, self.parse_pipe())
        return left

    def parse_def(self) -> Node:
        self.expect("def")
        name = self.take()
        if name.kind != "ident" or "::" in name.text:
            raise JqUnsupported(f"{name.text!r} is not a function name")
        params: list[str] = []
        if self.peek_text() == "(":
            self.position += 1
            while True:
                param = self.take()
                if param.kind != "ident":
                    raise JqUnsupported(f"parameter {param.text!r}: only filter parameters")  # `$x` binds a variable
                params.append(param.text)
                if self.peek_text() == ";":
                    self.position += 1
                    continue
                self.expect(")")
                break
        self.expect(":")
        body = self.parse_pipe()
        self.expect(";")
        return FuncDef(name.text, tuple(params), body, self.parse_pipe())

    def parse_comma(self) -> Node:
        left = self.parse_alternative()
        while self.peek_text() == ",":
            self.position += 1
            left = Binary(",", left, self.parse_alternative())
        return left

    def parse_alternative(self) -> Node:
        left = self.parse_or()
        if self.peek_text() == "//":
            self.position += 1
            return Binary("//", left, self.parse_alternative())
        return left

    def parse_or(self) -> Node:
        left = self.parse_and()
        while self.peek_text() == "or":
            self.position += 1
            left = Binary("or", left, self.parse_and())
        return left

    def parse_and(self) -> Node:
        left = self.parse_comparison()
        while self.peek_text() == "and":
            self.position += 1
            left = Binary("and", left, self.parse_comparison())
        return left

    def parse_comparison(self) -> Node:
        left = self.parse_additive()
        operator = self.peek_text()
        if operator in COMPARISONS:
            self.position += 1
            left = Binary(operator, left, self.parse_additive())
            if self.peek_text() in COMPARISONS:
                raise JqUnsupported("comparisons do not chain")
        return left

    def parse_additive(self) -> Node:
        left = self.parse_multiplicative()
        while (operator := self.peek_text()) in {"+", "-"}:
            assert operator is not None
            self.position += 1
            left = Binary(operator, left, self.parse_multiplicative())
        return left

    def parse_multiplicative(self) -> Node:
        left = self.parse_unary()
        while (operator := self.peek_text()) in {"*", "/", "%"}:
            assert operator is not None
            self.position += 1
            left = Binary(operator, left, self.parse_unary())
        return left

    def parse_unary(self) -> Node:
        if self.peek_text() == "-":
            # jq's `'-' Exp` has the precedence of binary minus: it takes in `*`, `/` and `%`.
            self.position += 1
            return Negate(self.parse_multiplicative())
        return self.parse_postfix(self.parse_term())

    def parse_term(self) -> Node:
        token = self.take()
        if token.kind == "num":
            return Literal(_number_literal(token.text))
        if token.kind == "str":
            return Literal(_string_literal(token.text))
        if token.kind == "field":
            return self.optional_step(IndexStep(Identity(), token.text, optional=False))
        if token.kind == "op":
            return self.parse_operator_term(token.text)
        if token.kind == "ident":
            return self.parse_word(token.text)
        raise JqUnsupported(f"{token.text!r} ({token.kind}) is outside the subset")  # variables, formats, `..`

    def parse_operator_term(self, text: str) -> Node:
        if text == ".":
            following = self.peek()
            if following is not None and (following.kind == "str" or following.text == "["):
                return self.parse_dot_suffix(Identity())
            return Identity()
        if text == "(":
            inner = self.parse_pipe()
            self.expect(")")
            return inner
        if text == "[":
            if self.peek_text() == "]":
                self.position += 1
                return ArrayOf(None)
            inner = self.parse_pipe()
            self.expect("]")
            return ArrayOf(inner)
        raise JqUnsupported(f"{text!r} is outside the subset")  # object construction, `?//` and the rest

    def parse_word(self, word: str) -> Node:
        if word in {"true", "false", "null"}:
            return Literal({"true": True, "false": False, "null": None}[word])
        if word == "if":
            return self.parse_if()
        if word == "try":
            # `try` binds tighter than any operator: its body is one postfix term.
            if self.peek_text() == "-":
                raise JqUnsupported("try followed by -")
            body = self.parse_postfix(self.parse_term())
            if self.peek_text() == "catch":
                raise JqUnsupported("'catch' is outside the subset")
            return Try(body)
        if word in _TERM_ENDS or word in {"def", "reduce", "foreach", "label", "import", "include", "__loc__"}:
            raise JqUnsupported(f"{word!r} is outside the subset")
        if "::" in word:
            raise JqUnsupported(f"module function {word!r} is outside the subset")
        args: list[Node] = []
        if self.peek_text() == "(":
            self.position += 1
            args.append(self.parse_pipe())
            while self.peek_text() == ";":
                self.position += 1
                args.append(self.parse_pipe())
            self.expect(")")
        return Call(word, tuple(args))

    def parse_if(self) -> Node:
        condition = self.parse_pipe()
        self.expect("then")
        then = self.parse_pipe()
        word = self.peek_text()
        if word == "elif":
            self.position += 1
            return If(condition, then, self.parse_if())
        otherwise: Node = Identity()
        if word == "else":
            self.position += 1
            otherwise = self.parse_pipe()
        self.expect("end")
        return If(condition, then, otherwise)

    def parse_postfix(self, node: Node) -> Node:
        while True:
            token = self.peek()
            if token is None:
                return node
            if token.kind == "field":
                self.position += 1
                node = self.optional_step(IndexStep(node, token.text, optional=False))
            elif token.kind == "op" and token.text == "." and self.peek(1) is not None:
                following = self.peek(1)
                assert following is not None
                if following.kind != "str" and following.text != "[":
                    return node
                self.position += 1
                node = self.parse_dot_suffix(node)
            elif token.kind == "op" and token.text == "[":
                node = self.parse_bracket(node)
            elif token.kind == "op" and token.text == "?":
                self.position += 1
                node = Try(node)
            else:
                return node

    def parse_dot_suffix(self, node: Node) -> Node:
        """After a `.`: `"name"` or a bracket step."""
        token = self.peek()
        assert token is not None
        if token.kind == "str":
            self.position += 1
            return self.optional_step(IndexStep(node, _string_literal(token.text), optional=False))
        return self.parse_bracket(node)

    def parse_bracket(self, node: Node) -> Node:
        self.expect("[")
        if self.peek_text() == "]":
            self.position += 1
            return self.optional_step(IterateStep(node, optional=False))
        negative = self.peek_text() == "-"
        if negative:
            self.position += 1
        key_token = self.take()
        self.expect("]")
        if key_token.kind == "str" and not negative:
            key: str | int = _string_literal(key_token.text)
        elif key_token.kind == "num" and key_token.text.isdigit():
            key = -int(key_token.text) if negative else int(key_token.text)
        else:
            raise JqUnsupported("indexes by expression, fraction or slice are outside the subset")
        return self.optional_step(IndexStep(node, key, optional=False))

    def optional_step(self, step: IndexStep | IterateStep) -> Node:
        """A `?` right after a step makes that step alone optional (libjq's INDEX_OPT / EACH_OPT)."""
        if self.peek_text() != "?":
            return step
        self.position += 1
        if isinstance(step, IndexStep):
            return IndexStep(step.target, step.key, optional=True)
        return IterateStep(step.target, optional=True)


def _number_literal(text: str) -> int | float:
    if text.isdigit():
        if len(text) > 1 and text.startswith("0"):
            raise JqUnsupported(f"number {text} has a leading zero")
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise JqUnsupported(f"number {text} is out of range")
    return value


def _string_literal(text: str) -> str:
    # Valid JSON is a jq string without interpolation (jq's escapes are JSON's).
    try:
        value = json.loads(text)
        value.encode("utf-8")  # a lone surrogate escape: libjq replaces it, leave that to libjq
    except (ValueError, UnicodeEncodeError) as exc:
        raise JqUnsupported(f"string {text} is not plain JSON text (interpolation, lone surrogate)") from exc
    if not isinstance(value, str):
        raise JqUnsupported(f"string {text} is not plain JSON text")
    return value


# ---------------------------------------------------------------------------------------------------
# Inlining: jq's functions are closures, and a filter parameter is evaluated where it is used, on the
# input there. So a call becomes the function's body with each parameter replaced by the argument's
# tree, inlined beforehand in the caller's scope (a name in the argument means what it means there).


def inline(node: Node, check_builtin: Callable[[Call], None]) -> Node:
    """`node` without FuncDef: every call of a user function replaced by its body, so the Calls left
    are builtins. A subtree passed as an argument is shared by each use of the parameter.

    check_builtin raises the caller's refusal of a builtin it does not handle. It sees every builtin
    call, those in arguments that are never used as well: jq compiles those too (an unknown name
    fails the whole program).
    """
    return _Inliner(check_builtin).inline(node, _Scope())


@dataclass(frozen=True)
class _Definition:
    params: tuple[str, ...]
    body: Node
    scope: _Scope
    key: tuple[str, int]


@dataclass(frozen=True)
class _Scope:
    """Lexical scope: user functions by (name, arity) and bound filter parameters, innermost last."""

    entries: tuple[tuple[tuple[str, int], _Definition | Node], ...] = ()

    def lookup(self, key: tuple[str, int]) -> _Definition | Node | None:
        for name, found in reversed(self.entries):
            if name == key:
                return found
        return None

    def with_entry(self, key: tuple[str, int], entry: _Definition | Node) -> _Scope:
        return _Scope((*self.entries, (key, entry)))


@dataclass
class _Inliner:
    check_builtin: Callable[[Call], None]
    nodes: int = 0
    expanding: list[_Definition] = field(default_factory=list)

    def inline(self, node: Node, scope: _Scope) -> Node:
        self.nodes += 1
        if self.nodes > MAX_INLINED_NODES:
            raise JqUnsupported("too large once its functions are inlined")
        if isinstance(node, Identity | Literal):
            return node
        if isinstance(node, IndexStep | IterateStep):
            return replace(node, target=self.inline(node.target, scope))
        if isinstance(node, Try | Negate):
            return replace(node, body=self.inline(node.body, scope))
        if isinstance(node, Binary):
            return Binary(node.operator, self.inline(node.left, scope), self.inline(node.right, scope))
        if isinstance(node, If):
            return If(*(self.inline(n, scope) for n in (node.condition, node.then, node.otherwise)))
        if isinstance(node, ArrayOf):
            return ArrayOf(self.inline(node.body, scope) if node.body is not None else None)
        if isinstance(node, FuncDef):
            key = (node.name, len(node.params))
            # The function sees itself (a recursive call must not fall through to a builtin).
            return self.inline(node.rest, scope.with_entry(key, _Definition(node.params, node.body, scope, key)))
        return self.inline_call(node, scope)

    def inline_call(self, node: Call, scope: _Scope) -> Node:
        key = (node.name, len(node.args))
        found = scope.lookup(key)
        if found is not None and not isinstance(found, _Definition):
            return found  # a parameter: the argument, inlined where the call was made
        args = tuple(self.inline(a, scope) for a in node.args)
        if found is None:
            call = Call(node.name, args)
            self.check_builtin(call)
            return call
        if any(d is found for d in self.expanding):
            raise JqUnsupported(f"{node.name} is recursive")
        body_scope = found.scope.with_entry(found.key, found)
        for param, arg in zip(found.params, args, strict=True):
            body_scope = body_scope.with_entry((param, 0), arg)
        self.expanding.append(found)
        try:
            return self.inline(found.body, body_scope)
        finally:
            self.expanding.pop()
