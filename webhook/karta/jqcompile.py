"""A compiler from a subset of jq to Python closures, for the computed paths of Karta definitions.

libjq has to parse the JSON text of its input for every call (about 50 µs per KB), while a compiled
path walks the dict the webhook already decoded. webhook.karta.jqparse parses the expression and
inlines its `def`s; this module compiles the resulting tree (webhook.vap.jq translates the same tree
to CEL). The subset is what definitions use: field, index and iteration steps with `?`, literals,
array construction, `|`, `,`, `//`, `and`/`or`, comparisons, arithmetic, unary minus, `if`, `try`
without `catch`, `def` with filter parameters (no recursion) and a few builtins. Anything else
(refused by jqparse, or a builtin not compiled here) compiles to None and stays on libjq.

Semantics are Karta's, that is gojq's (the oracle of tests/unit/test_gojq_oracle.py), and libjq's
where the two agree (the oracle of tests/unit/test_jqcompile.py): jq values are generators, binary
operators loop over the right operand's outputs outside the left's, `//` passes errors of its left
side on, a `?` after an index or iteration step drops that step's errors per value while `?` after
any other term (and `try`) ends the stream at the first error. Where gojq and libjq differ, gojq wins:
a string indexed by a number gives its character, and `tostring` writes numbers as gojq writes the
float64 Karta holds ("1" for 1.0). Where a value makes exact agreement uncertain (integers beyond
2^53, where libjq switches between exact literals and doubles; merged objects, whose key order libjq
keeps), evaluation raises NotNative and the caller asks libjq instead.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from webhook.karta.jqparse import (
    COMPARISONS,
    ArrayOf,
    Binary,
    Call,
    Identity,
    If,
    IndexStep,
    IterateStep,
    JqUnsupported,
    Literal,
    Negate,
    Node,
    Try,
    inline,
    parse,
)
from webhook.karta.native import NativeError, element, json_type_name

SAFE_INTEGER = 2**53
# Beyond this, libjq prints an integral double in exponent form: keep it a float.
PRINTED_AS_INTEGER = 10**17
# A string repetition longer than this is left to libjq rather than built here.
MAX_REPEAT_LENGTH = 1 << 20


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
        compiled = _Compiler().compile(inline(parse(expression), _check_builtin))
    except (JqUnsupported, _Unsupported, RecursionError):
        return None
    stream = compiled.stream
    return lambda document: map(_as_printed, stream(document))


class _Unsupported(Exception):
    """A builtin outside the compiled subset (jqparse refuses the rest of what is not compiled)."""


# ---------------------------------------------------------------------------------------------------
# Compiler


@dataclass
class _Compiler:
    """A def-free tree (jqparse.inline) to Filters. Inlining shares an argument's subtree among the
    uses of its parameter: each node object compiles once, as a bound parameter did before inlining."""

    filters: dict[int, Filter] = field(default_factory=dict)  # by id() of nodes the tree keeps alive

    def compile(self, node: Node) -> Filter:
        # One method (no helper per node) keeps the Python stack as deep as the tree, no deeper.
        compiled = self.filters.get(id(node))
        if compiled is not None:
            return compiled
        if isinstance(node, Identity):
            compiled = Filter(lambda x: (x,), lambda x: x, is_identity=True)
        elif isinstance(node, Literal):
            value = node.value
            compiled = Filter(lambda x: (value,), lambda x: value)
        elif isinstance(node, IndexStep):
            compiled = _index(self.compile(node.target), node.key, node.optional)
        elif isinstance(node, IterateStep):
            compiled = _iterate(self.compile(node.target), node.optional)
        elif isinstance(node, Try):
            compiled = _try(self.compile(node.body))
        elif isinstance(node, Binary):
            compiled = _binary(node.operator, self.compile(node.left), self.compile(node.right))
        elif isinstance(node, Negate):
            compiled = _unary(self.compile(node.body), _negate)
        elif isinstance(node, If):
            compiled = _if(*(self.compile(n) for n in (node.condition, node.then, node.otherwise)))
        elif isinstance(node, ArrayOf):
            compiled = _array(self.compile(node.body) if node.body is not None else None)
        elif isinstance(node, Call):
            compiled = _builtin(node.name, [self.compile(a) for a in node.args])
        else:
            raise AssertionError(f"{type(node).__name__} left after inlining")
        self.filters[id(node)] = compiled
        return compiled


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
    return lambda value: element(value, position)


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


def _check_builtin(call: Call) -> None:
    """Refuses, at inlining, the builtins _builtin does not compile."""
    key = (call.name, len(call.args))
    if key not in _FILTER_FUNCTIONS and (call.args or call.name not in _VALUE_FUNCTIONS):
        raise _Unsupported(f"{call.name}/{len(call.args)}")


def _builtin(name: str, args: list[Filter]) -> Filter:
    if not args and name in _VALUE_FUNCTIONS:
        return _from_single(_VALUE_FUNCTIONS[name])
    return _FILTER_FUNCTIONS[name, len(args)](*args)


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


# The builtins of filters, by (name, arity); those of the input value alone are _VALUE_FUNCTIONS.
_FILTER_FUNCTIONS: dict[tuple[str, int], Callable[..., Filter]] = {
    ("empty", 0): lambda: Filter(lambda x: ()),
    ("error", 0): lambda: _from_single(_raise_error),
    ("error", 1): _error_with,
    ("select", 1): _select,
}


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
    return _gojq_text(value)


def _gojq_text(value: Any) -> str:
    """JSON text as gojq writes it: keys sorted, numbers as the float64 Karta decoded them to."""
    kind = type(value)
    if kind is float or (kind is int and abs(value) > SAFE_INTEGER):
        return go_float_text(float(value))
    if kind is list:
        return "[" + ",".join(_gojq_text(v) for v in value) + "]"
    if kind is dict:
        return "{" + ",".join(f"{_gojq_string(k)}:{_gojq_text(value[k])}" for k in sorted(value)) + "}"
    if kind is str:
        return _gojq_string(value)
    return _json_text(value)


def _gojq_string(text: str) -> str:
    # gojq escapes what encoding/json escapes, and DEL as well (encoder.go encodeString).
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def go_float_text(number: float) -> str:
    """gojq's text for a float64 (encoder.go encodeFloat64): the shortest digits that read back the
    same, in fixed notation unless below 1e-6 or from 1e21 on, a one-digit negative exponent unpadded."""
    if math.isnan(number):
        return "null"
    number = max(-sys.float_info.max, min(sys.float_info.max, number))
    magnitude = abs(number)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, _, exponent = repr(number).partition("e")  # Python's repr is exponential here too
        digits = exponent[1:].lstrip("0")
        return f"{mantissa}e{exponent[0]}{digits.rjust(2, '0') if exponent[0] == '+' else digits}"
    text = format(Decimal(repr(number)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


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
