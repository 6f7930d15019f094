"""A compiler from a subset of jq to Python closures, for the computed paths of Karta definitions.

libjq has to parse the JSON text of its input for every call (about 50 µs per KB), while a compiled
path walks the dict the webhook already decoded. The subset is what definitions use: field, index and
iteration steps with `?`, literals, array construction, `|`, `,`, `//`, `and`/`or`, comparisons,
arithmetic, unary minus, `if`, `try` without `catch`, `def` with filter parameters (no recursion) and
a few builtins. Anything else compiles to None and stays on libjq.

Semantics follow the libjq the webhook links (the oracle of tests/unit/test_jqcompile.py): jq values
are generators, binary operators loop over the right operand's outputs outside the left's, `//`
passes errors of its left side on, a `?` after an index or iteration step drops that step's errors
per value while `?` after any other term (and `try`) ends the stream at the first error. Where a value
makes exact agreement uncertain (integers beyond 2^53, where libjq switches between exact literals and
doubles; `tostring` of a float, whose text depends on the literal; merged objects, whose key order
libjq keeps), evaluation raises NotNative and the caller asks libjq instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.karta.jqcheck import JqSyntaxError, Token, tokenize
from webhook.karta.native import NativeError, json_type_name

SAFE_INTEGER = 2**53
# Beyond this, libjq prints an integral double in exponent form: keep it a float.
PRINTED_AS_INTEGER = 10**17
# A string repetition longer than this is left to libjq rather than built here.
MAX_REPEAT_LENGTH = 1 << 20
# Inlining function bodies multiplies nodes; a program past this size is not worth compiling.
MAX_COMPILED_NODES = 4000


class NotNative(Exception):
    """The value at hand is outside what the compiled code reproduces exactly: ask libjq."""


class JqErrorValue(NativeError):
    """`error(v)`: the message is v itself when a string, else its JSON text (as `tostring` gives)."""


Stream = Callable[[Any], Iterable[Any]]
Single = Callable[[Any], Any]
# A compiled expression: the outputs for a document.
Compiled = Callable[[Any], Iterator[Any]]


@dataclass(frozen=True)
class Filter:
    """A compiled jq filter: all outputs for an input, and, when it always has exactly one output
    (or raises), that output directly, which spares a generator per value."""

    stream: Stream
    single: Single | None = None
    is_identity: bool = False  # `.`: a step on it applies to the input directly


def compile_native(expression: str) -> Compiled | None:
    """The outputs of `expression` as a generator function, or None when it is outside the subset.

    The generator raises NativeError where jq raises an error and NotNative where libjq must decide.
    """
    try:
        tokens = tokenize(expression)
        node = _Parser(tokens).parse_program()
        compiled = _Compiler().compile(node, _Scope())
    except (_Unsupported, JqSyntaxError, RecursionError):
        return None
    stream = compiled.stream
    return lambda document: map(_as_printed, stream(document))


class _Unsupported(Exception):
    """Outside the compiled subset (or not a program this parser reads the way jq does)."""


# ---------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class Identity:
    pass


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class IndexStep:
    target: Node
    key: str | int
    optional: bool


@dataclass(frozen=True)
class IterateStep:
    target: Node
    optional: bool


@dataclass(frozen=True)
class Try:
    body: Node


@dataclass(frozen=True)
class Binary:
    operator: str  # "|", ",", "//", "and", "or", comparisons, arithmetic
    left: Node
    right: Node


@dataclass(frozen=True)
class Negate:
    body: Node


@dataclass(frozen=True)
class If:
    condition: Node
    then: Node
    otherwise: Node  # Identity when `else` is left out


@dataclass(frozen=True)
class ArrayOf:
    body: Node | None


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class FuncDef:
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
            raise _Unsupported(f"unexpected {self.peek_text()!r}")
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
            raise _Unsupported("unexpected end")
        self.position += 1
        return token

    def expect(self, text: str) -> None:
        if self.peek_text() != text:
            raise _Unsupported(f"expected {text!r}")
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
            raise _Unsupported("definition name")
        params: list[str] = []
        if self.peek_text() == "(":
            self.position += 1
            while True:
                param = self.take()
                if param.kind != "ident":
                    raise _Unsupported("only filter parameters")  # `$x` parameters bind variables
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
                raise _Unsupported("comparisons do not chain")
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
        raise _Unsupported(token.kind)  # variables, formats, `..`

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
        raise _Unsupported(text)  # object construction, `?//` and the rest

    def parse_word(self, word: str) -> Node:
        if word in {"true", "false", "null"}:
            return Literal({"true": True, "false": False, "null": None}[word])
        if word == "if":
            return self.parse_if()
        if word == "try":
            # `try` binds tighter than any operator: its body is one postfix term.
            if self.peek_text() == "-":
                raise _Unsupported("try -")
            body = self.parse_postfix(self.parse_term())
            if self.peek_text() == "catch":
                raise _Unsupported("catch")
            return Try(body)
        if word in _TERM_ENDS or word in {"def", "reduce", "foreach", "label", "import", "include", "__loc__"}:
            raise _Unsupported(word)
        if "::" in word:
            raise _Unsupported("module function")
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
            raise _Unsupported("index by expression, fraction or slice")
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
            raise _Unsupported("leading zero")
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise _Unsupported("number out of range")
    return value


def _string_literal(text: str) -> str:
    # Valid JSON is a jq string without interpolation (jq's escapes are JSON's).
    try:
        value = json.loads(text)
        value.encode("utf-8")  # a lone surrogate escape: libjq replaces it, leave that to libjq
    except (ValueError, UnicodeEncodeError) as exc:
        raise _Unsupported("string") from exc
    if not isinstance(value, str):
        raise _Unsupported("string")
    return value


# ---------------------------------------------------------------------------------------------------
# Compiler


@dataclass(frozen=True)
class _Definition:
    params: tuple[str, ...]
    body: Node
    scope: _Scope
    key: tuple[str, int]


@dataclass(frozen=True)
class _Scope:
    """Lexical scope: user functions by (name, arity) and bound filter parameters, innermost first."""

    definitions: tuple[tuple[tuple[str, int], _Definition | Filter], ...] = ()

    def lookup(self, key: tuple[str, int]) -> _Definition | Filter | None:
        for name, found in reversed(self.definitions):
            if name == key:
                return found
        return None

    def with_entry(self, key: tuple[str, int], entry: _Definition | Filter) -> _Scope:
        return _Scope((*self.definitions, (key, entry)))


@dataclass
class _Compiler:
    nodes: int = 0
    expanding: list[_Definition] = field(default_factory=list)

    def compile(self, node: Node, scope: _Scope) -> Filter:
        self.nodes += 1
        if self.nodes > MAX_COMPILED_NODES:
            raise _Unsupported("too large")
        if isinstance(node, Identity):
            return Filter(lambda x: (x,), lambda x: x, is_identity=True)
        if isinstance(node, Literal):
            value = node.value
            return Filter(lambda x: (value,), lambda x: value)
        if isinstance(node, IndexStep):
            return _index(self.compile(node.target, scope), node.key, node.optional)
        if isinstance(node, IterateStep):
            return _iterate(self.compile(node.target, scope), node.optional)
        if isinstance(node, Try):
            return _try(self.compile(node.body, scope))
        if isinstance(node, Binary):
            return _binary(node.operator, self.compile(node.left, scope), self.compile(node.right, scope))
        if isinstance(node, Negate):
            return _unary(self.compile(node.body, scope), _negate)
        if isinstance(node, If):
            return _if(*(self.compile(n, scope) for n in (node.condition, node.then, node.otherwise)))
        if isinstance(node, ArrayOf):
            return _array(self.compile(node.body, scope) if node.body is not None else None)
        if isinstance(node, FuncDef):
            key = (node.name, len(node.params))
            definition = _Definition(node.params, node.body, scope, key)
            # The function sees itself (a recursive call must not fall through to a builtin).
            return self.compile(node.rest, scope.with_entry(key, definition))
        return self.compile_call(node, scope)

    def compile_call(self, node: Call, scope: _Scope) -> Filter:
        key = (node.name, len(node.args))
        found = scope.lookup(key)
        if isinstance(found, Filter):
            return found
        args = [self.compile(a, scope) for a in node.args]
        if found is None:
            return _builtin(node.name, args)
        if any(d is found for d in self.expanding):
            raise _Unsupported("recursion")
        body_scope = found.scope.with_entry(found.key, found)
        for param, arg in zip(found.params, args, strict=True):
            body_scope = body_scope.with_entry((param, 0), arg)
        self.expanding.append(found)
        try:
            return self.compile(found.body, body_scope)
        finally:
            self.expanding.pop()


# ---------------------------------------------------------------------------------------------------
# Filters


def _from_single(single: Single) -> Filter:
    return Filter(lambda x: (single(x),), single)


def _index(target: Filter, key: str | int, optional: bool) -> Filter:
    get = _string_index(key) if isinstance(key, str) else _number_index(key)
    if optional:
        target_stream = target.stream

        def each_opt(x: Any) -> Iterator[Any]:
            for value in target_stream(x):
                try:
                    result = get(value)
                except NativeError:
                    continue
                yield result

        return Filter(each_opt)
    if target.is_identity:
        return _from_single(get)
    if target.single is not None:
        target_single = target.single
        return _from_single(lambda x: get(target_single(x)))
    target_stream = target.stream
    return Filter(lambda x: (get(v) for v in target_stream(x)))


def _string_index(key: str) -> Single:
    def get(value: Any) -> Any:
        if type(value) is dict:
            return value.get(key)
        if value is None:
            return None
        raise NativeError(f'Cannot index {json_type_name(value)} with "{key}"')

    return get


def _number_index(position: int) -> Single:
    def get(value: Any) -> Any:
        if type(value) is list:
            return value[position] if -len(value) <= position < len(value) else None
        if value is None:
            return None
        raise NativeError(f"Cannot index {json_type_name(value)} with number")

    return get


def _iterate(target: Filter, optional: bool) -> Filter:
    target_stream = target.stream

    def each(x: Any) -> Iterator[Any]:
        for value in target_stream(x):
            if type(value) is list:
                yield from value
            elif type(value) is dict:
                # gojq (Karta's runner) iterates objects by sorted key; libjq gets sorted-key input.
                for key in sorted(value):
                    yield value[key]
            elif not optional:
                raise NativeError(f"Cannot iterate over {json_type_name(value)}")

    return Filter(each)


def _try(body: Filter) -> Filter:
    body_stream = body.stream

    def attempt(x: Any) -> Iterator[Any]:
        try:
            outputs = iter(body_stream(x))
        except NativeError:
            return
        while True:
            try:
                value = next(outputs)
            except StopIteration:
                return
            except NativeError:
                return  # errors end the body's stream; those raised downstream are not caught
            yield value

    return Filter(attempt)


def _binary(operator: str, left: Filter, right: Filter) -> Filter:
    if operator == "|":
        return _pipe(left, right)
    if operator == ",":
        return _comma(left, right)
    if operator == "//":
        return _alternative(left, right)
    if operator in {"and", "or"}:
        return _logical(operator == "and", left, right)
    return _cartesian(_OPERATIONS[operator], left, right)


def _pipe(left: Filter, right: Filter) -> Filter:
    left_stream, right_stream = left.stream, right.stream
    if left.single is not None and right.single is not None:
        left_single, right_single = left.single, right.single
        return _from_single(lambda x: right_single(left_single(x)))
    if left.single is not None:
        left_single = left.single
        return Filter(lambda x: right_stream(left_single(x)))
    if right.single is not None:
        right_single = right.single
        return Filter(lambda x: (right_single(v) for v in left_stream(x)))

    def pipe(x: Any) -> Iterator[Any]:
        for value in left_stream(x):
            yield from right_stream(value)

    return Filter(pipe)


def _comma(left: Filter, right: Filter) -> Filter:
    left_stream, right_stream = left.stream, right.stream

    def both(x: Any) -> Iterator[Any]:
        yield from left_stream(x)
        yield from right_stream(x)

    return Filter(both)


def _truthy(value: Any) -> bool:
    return value is not None and value is not False


def _alternative(left: Filter, right: Filter) -> Filter:
    if left.single is not None and right.single is not None:
        left_single, right_single = left.single, right.single

        def first_defined(x: Any) -> Any:
            value = left_single(x)
            return value if value is not None and value is not False else right_single(x)

        return _from_single(first_defined)
    left_stream, right_stream = left.stream, right.stream

    def alternative(x: Any) -> Iterator[Any]:
        found = False
        for value in left_stream(x):
            if _truthy(value):
                found = True
                yield value
        if not found:
            yield from right_stream(x)

    return Filter(alternative)


def _logical(is_and: bool, left: Filter, right: Filter) -> Filter:
    """`and`/`or`: the left operand's outputs outside; the right is evaluated only when it decides."""
    if left.single is not None and right.single is not None:
        left_single, right_single = left.single, right.single

        def decide(x: Any) -> bool:
            if _truthy(left_single(x)) != is_and:
                return not is_and
            return _truthy(right_single(x))

        return _from_single(decide)
    left_stream, right_stream = left.stream, right.stream

    def logical(x: Any) -> Iterator[bool]:
        for value in left_stream(x):
            if _truthy(value) != is_and:
                yield not is_and
            else:
                for other in right_stream(x):
                    yield _truthy(other)

    return Filter(logical)


def _cartesian(operation: Callable[[Any, Any], Any], left: Filter, right: Filter) -> Filter:
    """jq's binary operators: the right operand's outputs in the outer loop, the left's inside."""
    if left.single is not None and right.single is not None:
        left_single, right_single = left.single, right.single

        def apply(x: Any) -> Any:
            second = right_single(x)
            return operation(left_single(x), second)

        return _from_single(apply)
    left_stream, right_stream = left.stream, right.stream

    def product(x: Any) -> Iterator[Any]:
        for second in right_stream(x):
            for first in left_stream(x):
                yield operation(first, second)

    return Filter(product)


def _unary(body: Filter, operation: Single) -> Filter:
    if body.single is not None:
        body_single = body.single
        return _from_single(lambda x: operation(body_single(x)))
    body_stream = body.stream
    return Filter(lambda x: (operation(v) for v in body_stream(x)))


def _if(condition: Filter, then: Filter, otherwise: Filter) -> Filter:
    if condition.single is not None and then.single is not None and otherwise.single is not None:
        condition_single, then_single, otherwise_single = condition.single, then.single, otherwise.single

        def branch_single(x: Any) -> Any:
            value = condition_single(x)
            return then_single(x) if value is not None and value is not False else otherwise_single(x)

        return _from_single(branch_single)
    condition_stream, then_stream, otherwise_stream = condition.stream, then.stream, otherwise.stream

    def branch(x: Any) -> Iterator[Any]:
        for value in condition_stream(x):
            yield from (then_stream(x) if _truthy(value) else otherwise_stream(x))

    return Filter(branch)


def _array(body: Filter | None) -> Filter:
    if body is None:
        return _from_single(lambda x: [])
    body_stream = body.stream
    return _from_single(lambda x: list(body_stream(x)))


# ---------------------------------------------------------------------------------------------------
# Builtins


def _builtin(name: str, args: list[Filter]) -> Filter:
    if not args and name in _VALUE_FUNCTIONS:
        return _from_single(_VALUE_FUNCTIONS[name])
    if (name, len(args)) == ("empty", 0):
        return Filter(lambda x: ())
    if (name, len(args)) == ("error", 0):
        return _from_single(_raise_error)
    if (name, len(args)) == ("error", 1):
        return _error_with(args[0])
    if (name, len(args)) == ("select", 1):
        return _select(args[0])
    raise _Unsupported(f"{name}/{len(args)}")


def _raise_error(value: Any) -> Any:
    raise JqErrorValue(value if isinstance(value, str) else _json_text(value))


def _error_with(message: Filter) -> Filter:
    message_stream = message.stream

    def error(x: Any) -> Iterator[Any]:
        for value in message_stream(x):
            _raise_error(value)
        yield from ()

    return Filter(error)


def _select(condition: Filter) -> Filter:
    condition_stream = condition.stream

    def select(x: Any) -> Iterator[Any]:
        for value in condition_stream(x):
            if _truthy(value):
                yield x

    return Filter(select)


def _not(value: Any) -> bool:
    return not _truthy(value)


def _length(value: Any) -> Any:
    if value is None:
        return 0
    if type(value) in (str, list, dict):
        return len(value)
    if type(value) in (int, float):
        return abs(value)
    raise NativeError(f"{_describe(value)} has no length")


def _keys(value: Any) -> list[Any]:
    if type(value) is dict:
        return sorted(value)
    if type(value) is list:
        return list(range(len(value)))
    raise NativeError(f"{_describe(value)} has no keys")


def _extreme(is_min: bool) -> Single:
    def extreme(value: Any) -> Any:
        if type(value) is not list:
            raise NativeError(f"{_describe(value)} and {_describe(value)} cannot be iterated over")
        if not value:
            return None
        best = value[0]
        for item in value[1:]:
            order = compare(item, best)
            # libjq keeps the first of equal minima and the last of equal maxima.
            if (order < 0) if is_min else (order >= 0):
                best = item
        return best

    return extreme


def _add(value: Any) -> Any:
    if type(value) is dict:
        items: Iterable[Any] = (value[k] for k in sorted(value))
    elif type(value) is list:
        items = value
    else:
        raise NativeError(f"Cannot iterate over {json_type_name(value)}")
    total = None
    for item in items:
        total = _plus(total, item)
    return total


def _tostring(value: Any) -> str:
    if type(value) is str:
        return value
    if _has_float(value):
        raise NotNative("tostring of a float")  # libjq prints the literal's own text when it has one
    return _json_text(value)


def _has_float(value: Any) -> bool:
    if type(value) is float:
        return True
    if type(value) is list:
        return any(_has_float(v) for v in value)
    if type(value) is dict:
        return any(_has_float(v) for v in value.values())
    return False


def _tonumber(value: Any) -> Any:
    if type(value) in (int, float):
        return value
    if type(value) is str:
        if value.isascii() and value.isdigit() and (value == "0" or not value.startswith("0")):
            return int(value)
        raise NotNative("tonumber of a non-integer string")
    raise NativeError(f"{_describe(value)} cannot be parsed as a number")


_VALUE_FUNCTIONS: dict[str, Single] = {
    "not": _not,
    "length": _length,
    "keys": _keys,
    "min": _extreme(is_min=True),
    "max": _extreme(is_min=False),
    "add": _add,
    "tostring": _tostring,
    "tonumber": _tonumber,
    "type": json_type_name,
}


# ---------------------------------------------------------------------------------------------------
# Values: ordering, arithmetic, printing


def _rank(value: Any) -> int:
    if value is None:
        return 0
    if value is False:
        return 1
    if value is True:
        return 2
    kind = type(value)
    if kind is int or kind is float:
        return 3
    if kind is str:
        return 4
    if kind is list:
        return 5
    return 6


def compare(a: Any, b: Any) -> int:
    """jq's total order: null < false < true < numbers < strings < arrays < objects."""
    kind = type(a)
    if kind is type(b) and (kind is int or kind is str):
        return int(a > b) - int(a < b)  # the common case, before ranking
    rank_a, rank_b = _rank(a), _rank(b)
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    if rank_a == 3:
        _check_comparable(a, b)
    if rank_a in (3, 4):
        return int(a > b) - int(a < b)
    if rank_a == 5:
        for x, y in zip(a, b, strict=False):
            order = compare(x, y)
            if order:
                return order
        return (len(a) > len(b)) - (len(a) < len(b))
    if rank_a == 6:
        keys_a, keys_b = sorted(a), sorted(b)
        if keys_a != keys_b:
            return (keys_a > keys_b) - (keys_a < keys_b)
        for key in keys_a:
            order = compare(a[key], b[key])
            if order:
                return order
    return 0


def _check_comparable(a: Any, b: Any) -> None:
    # libjq compares two literals exactly but converts a literal to a double next to a float.
    if type(a) is not type(b) and max(abs(a), abs(b)) > SAFE_INTEGER:
        raise NotNative("a large integer next to a float")


def _double(value: Any) -> float:
    if type(value) is int and abs(value) > SAFE_INTEGER:
        raise NotNative("integer beyond 2^53")
    return float(value)


def _number(result: float) -> int | float:
    """A double result as the webhook holds numbers: integral ones as int (as libjq prints them)."""
    if not math.isfinite(result):
        raise NotNative("infinite or NaN")
    if result.is_integer() and abs(result) <= SAFE_INTEGER and not (result == 0 and math.copysign(1, result) < 0):
        return int(result)
    return result


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _plus(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if _is_number(a) and _is_number(b):
        return _number(_double(a) + _double(b))
    if type(a) is type(b) and type(a) in (str, list):
        return a + b
    if type(a) is dict and type(b) is dict:
        raise NotNative("object merge")  # libjq's key order of the merge shows in later iteration
    raise NativeError(f"{_describe(a)} and {_describe(b)} cannot be added")


def _minus(a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        return _number(_double(a) - _double(b))
    if type(a) is list and type(b) is list:
        return [x for x in a if not any(compare(x, y) == 0 for y in b)]
    raise NativeError(f"{_describe(a)} and {_describe(b)} cannot be subtracted")


def _times(a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        return _number(_double(a) * _double(b))
    if type(a) is str and _is_number(b):
        return _repeat(a, b)
    if _is_number(a) and type(b) is str:
        return _repeat(b, a)
    if type(a) is dict and type(b) is dict:
        raise NotNative("object merge")
    raise NativeError(f"{_describe(a)} and {_describe(b)} cannot be multiplied")


def _repeat(text: str, count: Any) -> str | None:
    times = _double(count)
    if times < 0:
        return None
    if not math.isfinite(times) or int(times) * max(len(text), 1) > MAX_REPEAT_LENGTH:
        raise NotNative("long repetition")
    return text * int(times)


def _divide(a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        if b == 0:
            raise NativeError(f"{_describe(a)} and {_describe(b)} cannot be divided because the divisor is zero")
        return _number(_double(a) / _double(b))
    if type(a) is str and type(b) is str:
        return _split(a, b)
    raise NativeError(f"{_describe(a)} and {_describe(b)} cannot be divided")


def _split(text: str, separator: str) -> list[str]:
    if not text:
        return []
    if not separator:
        return list(text)
    return text.split(separator)


INT64_LIMIT = 2**63


def _modulo(a: Any, b: Any) -> Any:
    if not (_is_number(a) and _is_number(b)):
        raise NativeError(f"{_describe(a)} and {_describe(b)} cannot be divided (remainder)")
    dividend, divisor = _double(a), _double(b)
    if abs(dividend) >= INT64_LIMIT or abs(divisor) >= INT64_LIMIT:
        raise NotNative("remainder beyond 64-bit integers")
    # Both truncated to integers, then C's remainder (the sign of the dividend).
    whole_dividend, whole_divisor = int(dividend), int(divisor)
    if whole_divisor == 0:
        raise NativeError(
            f"{_describe(a)} and {_describe(b)} cannot be divided (remainder) because the divisor is zero"
        )
    remainder = abs(whole_dividend) % abs(whole_divisor)
    return _number(float(-remainder if whole_dividend < 0 else remainder))


def _negate(value: Any) -> Any:
    if _is_number(value):
        return _number(-_double(value))
    raise NativeError(f"{_describe(value)} cannot be negated")


def _comparison(operator: str) -> Callable[[Any, Any], bool]:
    tests: dict[str, Callable[[int], bool]] = {
        "==": lambda order: order == 0,
        "!=": lambda order: order != 0,
        "<": lambda order: order < 0,
        "<=": lambda order: order <= 0,
        ">": lambda order: order > 0,
        ">=": lambda order: order >= 0,
    }
    test = tests[operator]
    if operator in {"==", "!="}:
        negated = operator == "!="

        def equality(a: Any, b: Any) -> bool:
            if a is None or b is None or a is True or a is False or b is True or b is False:
                return (a is b) != negated  # singletons: equal only to themselves
            kind = type(a)
            if kind is type(b) and (kind is int or kind is str):
                return bool(a == b) != negated
            return test(compare(a, b))

        return equality
    return lambda a, b: test(compare(a, b))


_OPERATIONS: dict[str, Callable[[Any, Any], Any]] = {
    "+": _plus,
    "-": _minus,
    "*": _times,
    "/": _divide,
    "%": _modulo,
    **{operator: _comparison(operator) for operator in COMPARISONS},
}


def _json_text(value: Any) -> str:
    # Objects reach libjq with sorted keys (document_json), and it prints them in that order.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _describe(value: Any) -> str:
    """`type (value)` as libjq's error messages show a value, truncated alike."""
    text = _json_text(value)
    if len(text) > 28:
        text = text[:25] + "..."
    return f"{json_type_name(value)} ({text})"


def _as_printed(value: Any) -> Any:
    """An output as libjq's printed output decodes: integers beyond 2^53 rounded to doubles, integral
    floats as integers. Containers are copied only when something inside changes."""
    kind = type(value)
    if kind is int:
        return int(float(value)) if abs(value) > SAFE_INTEGER else value
    if kind is float:
        return int(value) if value.is_integer() and abs(value) < PRINTED_AS_INTEGER else value
    if kind is list:
        items = [_as_printed(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if kind is dict:
        entries = {k: _as_printed(v) for k, v in value.items()}
        return value if all(entries[k] is v for k, v in value.items()) else entries
    return value
