"""Evaluation of Karta jq paths, the way Karta's gojq runner evaluates them.

Feeding a document to libjq costs more than running the paths, so the paths of a definition are
evaluated together against one document (PathBatch): plain field chains natively, the expressions in
jqcompile's subset as compiled Python closures, the rest in a single libjq program. Conversions of
the outputs follow Go's JSON decoding into Karta's field types.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import jq
import orjson

from webhook.karta import jqcheck, jqcompile, native

# Karta's runner fails a query once its result count reaches this number.
MAX_RESULTS = 1000
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# libjq outputs remembered per definition, by the pruned and projected input text.
OUTPUT_CACHE_ENTRIES = 256
OUTPUT_CACHE_MAX_TEXT = 16 * 1024

# Defence in depth behind jqcheck: even if a refused builtin slipped through, it sees nothing.
SANDBOX_PRELUDE = (
    'def env: {}; def input: error("input is disabled"); def inputs: empty; '
    "def debug: .; def debug(m): .; def stderr: .; def input_filename: null; "
    "{} as $ENV | "
)

PathPart = str | int


@dataclass(slots=True)  # one per path per review: not frozen, which takes three times as long to build
class PathOutcome:
    """All outputs of one path (Karta's result list), where in the input each came from, or the error."""

    values: tuple[Any, ...] = ()
    locations: tuple[tuple[PathPart, ...], ...] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ConversionError(ValueError):
    """A jq output that Karta could not convert into the Go type the field has."""


@lru_cache(maxsize=512)
def compile_program(source: str) -> Any:
    """Compile once; libjq compilation costs about 1.5 ms, evaluation microseconds."""
    return jq.compile(source)


def compile_error(expression: str) -> str | None:
    """libjq's own message when the expression does not compile, else None."""
    # Compiled alone first so that the message's line and column refer to the expression itself.
    for source in (expression, SANDBOX_PRELUDE + "(" + expression + ")"):
        try:
            compile_program(source)
        except ValueError as exc:
            return " ".join(str(exc).split())
    return None


def _may_multiply(expression: str) -> bool:
    """Whether outputs could grow beyond the input's size: more than one iteration or binding.

    One `[]` yields at most as many outputs as the input has elements; nested iterations, `as`
    bindings, `reduce` and `foreach` can multiply them. Only those get jq's `limit`, which costs
    about 5 µs per path (the cap itself is checked on the result count either way).
    """
    try:
        tokens = jqcheck.tokenize(expression)
    except jqcheck.JqSyntaxError:
        return True
    iterations = sum(1 for a, b in itertools.pairwise(tokens) if a.kind == "op" and a.text == "[" and b.text == "]")
    bindings = sum(1 for t in tokens if t.kind == "ident" and t.text in {"as", "reduce", "foreach", "limit"})
    return iterations + bindings > 1


def _wrap(expression: str) -> str:
    body = f"limit({MAX_RESULTS}; ({expression}))" if _may_multiply(expression) else f"({expression})"
    return f"(try {{v: [{body}]}} catch {{e: tostring}})"


class OutputCache:
    """A small thread-safe LRU of program outputs by input text; large texts are not kept.

    Bounded to OUTPUT_CACHE_ENTRIES x 2 x OUTPUT_CACHE_MAX_TEXT characters (8 MiB) per definition.
    """

    def __init__(self) -> None:
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> str | None:
        with self._lock:
            output = self._entries.get(text)
            if output is not None:
                self._entries.move_to_end(text)
            return output

    def put(self, text: str, output: str) -> None:
        if len(text) > OUTPUT_CACHE_MAX_TEXT or len(output) > OUTPUT_CACHE_MAX_TEXT:
            return
        with self._lock:
            self._entries[text] = output
            if len(self._entries) > OUTPUT_CACHE_ENTRIES:
                self._entries.popitem(last=False)


class PathBatch:
    """A fixed list of jq paths evaluated against one document.

    Plain field chains and literals are evaluated natively (webhook.karta.native), with the location
    of every output. Expressions in jqcompile's subset run as compiled closures over the decoded
    document. The others are compiled into one libjq program, each wrapped in `try` so that one
    failing path does not hide the others (Karta evaluates them one by one), and given only the
    parts of the document they can reach. Outputs of both are computed values without locations.
    """

    def __init__(self, expressions: Sequence[str]) -> None:
        self.expressions = tuple(expressions)
        self._simple = [native.parse_simple(e) for e in self.expressions]
        self._compiled = [
            jqcompile.compile_native(e) if simple is None else None
            for e, simple in zip(self.expressions, self._simple, strict=True)
        ]
        # libjq still judges the syntax: the subset's parser is not meant to accept what it refuses.
        # The same check definition validation ran, so it is answered from compile_program's cache.
        for expression in self.compiled_expressions:
            error = compile_error(expression)
            if error is not None:
                raise ValueError(error)
        self._complex = [
            i for i, (simple, compiled) in enumerate(zip(self._simple, self._compiled, strict=True))
            if simple is None and compiled is None
        ]  # fmt: skip
        reaches = [native.reach(self.expressions[i]) for i in self._complex]
        self._reaches = None if any(r is None for r in reaches) else [r for r in reaches if r is not None]
        self._program = None
        # Outputs by input text, unless a path reads the clock: the only input a sandboxed program
        # has besides the document.
        self._cache = None if any(_reads_clock(self.expressions[i]) for i in self._complex) else OutputCache()
        if self._complex:
            parts = ", ".join(_wrap(self.expressions[i]) for i in self._complex)
            self._program = compile_program(SANDBOX_PRELUDE + "[" + parts + "]")

    @property
    def needs_libjq(self) -> bool:
        """Whether a review calls libjq (a compiled path may still, for a value outside its subset)."""
        return self._program is not None

    @property
    def compiled_expressions(self) -> list[str]:
        return [e for e, c in zip(self.expressions, self._compiled, strict=True) if c is not None]

    def _evaluate(self, text: str) -> list[dict[str, Any]]:
        """The libjq program's output for an input text, memoised when the program is pure.

        The input is only what the computed paths can reach, projected to the fields they read
        (for a RayService: replicas, bounds and numOfHosts per group), so many objects, and the
        object and oldObject of most UPDATEs, share it. The cache holds output text, so every
        caller decodes fresh values (with json, as the jq binding decodes its own output).
        """
        output = self._cache.get(text) if self._cache is not None else None
        if output is None:
            output = self._program.input_text(text).text()  # type: ignore[union-attr]
            if self._cache is not None:
                self._cache.put(text, output)
        result: list[dict[str, Any]] = json.loads(output)
        return result

    def run(self, document: Any) -> list[PathOutcome]:
        outcomes: list[PathOutcome | None] = [None] * len(self.expressions)
        for index, simple in enumerate(self._simple):
            if simple is not None:
                outcomes[index] = _native_outcome(self.expressions[index], simple, document)
        for index, compiled in enumerate(self._compiled):
            if compiled is not None:
                outcomes[index] = _compiled_outcome(self.expressions[index], compiled, document)
        if self._program is not None:
            visible = native.prune(document, self._reaches) if self._reaches is not None else document
            raw = self._evaluate(document_json(visible))
            for index, item in zip(self._complex, raw, strict=True):
                outcomes[index] = _outcome(self.expressions[index], item)
        return [o for o in outcomes if o is not None]


def _reads_clock(expression: str) -> bool:
    return any(
        t.kind == "ident" and t.text in {"now", "localtime", "strflocaltime"} for t in jqcheck.tokenize(expression)
    )


def _native_outcome(expression: str, simple: native.SimplePath, document: Any) -> PathOutcome:
    try:
        values, locations = simple.evaluate(document)
    except native.NativeError as exc:
        return PathOutcome(error=f"JQ execution error for expression '{expression}': {exc}")
    if len(values) >= MAX_RESULTS:
        return PathOutcome(error=f"query results exceed the allowed number {MAX_RESULTS}")
    return PathOutcome(values=tuple(values), locations=tuple(locations) if locations is not None else None)


def _compiled_outcome(expression: str, outputs: jqcompile.Compiled, document: Any) -> PathOutcome:
    try:
        # Karta's runner stops at the cap: no more outputs are generated than it would take.
        values = list(itertools.islice(outputs(document), MAX_RESULTS))
    except native.NativeError as exc:
        return PathOutcome(error=f"JQ execution error for expression '{expression}': {exc}")
    except (jqcompile.NotNative, RecursionError):
        return _libjq_outcome(expression, document)
    if len(values) >= MAX_RESULTS:
        return PathOutcome(error=f"query results exceed the allowed number {MAX_RESULTS}")
    return PathOutcome(values=tuple(values))


def _libjq_outcome(expression: str, document: Any) -> PathOutcome:
    """One path through libjq, for the rare value a compiled path leaves to it."""
    program = compile_program(SANDBOX_PRELUDE + "[" + _wrap(expression) + "]")
    (item,) = json.loads(program.input_text(document_json(document)).text())
    return _outcome(expression, item)


def _outcome(expression: str, item: dict[str, Any]) -> PathOutcome:
    if "e" in item:
        return PathOutcome(error=f"JQ execution error for expression '{expression}': {item['e']}")
    values = item["v"]
    if len(values) >= MAX_RESULTS:
        return PathOutcome(error=f"query results exceed the allowed number {MAX_RESULTS}")
    return PathOutcome(values=tuple(values))


def document_json(document: Any) -> str:
    """Serialise with sorted keys: gojq walks object keys sorted, libjq in insertion order."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


def to_int32(value: Any) -> int | None:
    """Karta's conversion of a scale output into *int32: null is nil, 2 and 2.0 are 2, others fail."""
    if type(value) is int and INT32_MIN <= value <= INT32_MAX:  # the usual case, first
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConversionError(f"cannot use {go_format(value)!s} ({native.json_type_name(value)}) as an integer")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ConversionError(f"cannot use {go_format(value)} as an integer")
        value = int(value)
    number = int(value)
    if not INT32_MIN <= number <= INT32_MAX:
        raise ConversionError(f"{number} overflows a 32-bit integer")
    return number


def to_string(value: Any) -> str:
    """Karta's conversion of an id output into a string: null is "", anything but a string fails."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConversionError(f"cannot use {go_format(value)} ({native.json_type_name(value)}) as a string")
    return value


def go_format(value: Any) -> str:
    """Stringify like Go's %v on a decoded JSON value (numbers are float64 there)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        value = float(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _go_float(value: float) -> str:
    # %v on a float64 is %g with the shortest exact digits: exponent form below 1e-4 and from 1e6 up,
    # with at least two exponent digits ("1e+06").
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + exponent - 1  # decimal exponent of the first digit
    prefix = "-" if sign else ""
    if point < -4 or point >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if point < 0 else '+'}{abs(point):02d}"
    if point < 0:
        return f"{prefix}0.{'0' * (-point - 1)}{digits}"
    whole = digits[: point + 1].ljust(point + 1, "0")
    fraction = digits[point + 1 :]
    return prefix + whole + ("." + fraction if fraction else "")
