"""Evaluation of Karta jq paths with libjq, the way Karta's gojq runner evaluates them.

Converting the input document into jq values costs far more than running a path, so every path of a
definition that reads the same document is compiled into one program and run in one pass; each path
is wrapped in `try` so that one failing path does not hide the others (Karta evaluates them one by one,
so a failure there is also per path).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import jq
import orjson

# Karta's runner fails a query once its result count reaches this number.
MAX_RESULTS = 1000
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# Defence in depth behind jqcheck: even if a refused builtin slipped through, it sees nothing.
SANDBOX_PRELUDE = (
    "def env: {}; def input: error(\"input is disabled\"); def inputs: empty; "
    "def debug: .; def debug(m): .; def stderr: .; def input_filename: null; "
    "{} as $ENV | "
)

PathPart = str | int


@dataclass(frozen=True)
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


def _wrap(expression: str) -> str:
    # Ask for the outputs' paths first: the values are then read from the Python object, which is
    # much cheaper than converting large outputs (pod templates) back out of jq. path() fails for
    # computed outputs (arithmetic, literals); only then are the values themselves returned. Inside
    # `catch` the input is the error message, hence the saved input.
    limited = f"limit({MAX_RESULTS}; ({expression}))"
    return (
        f"(try {{p: [limit({MAX_RESULTS}; path({expression}))]}} "
        f"catch ($__karta_input | try {{v: [{limited}]}} catch {{e: tostring}}))"
    )


class PathBatch:
    """A fixed list of jq paths, compiled into one program and evaluated against one document."""

    def __init__(self, expressions: Sequence[str]) -> None:
        self.expressions = tuple(expressions)
        parts = ", ".join(_wrap(e) for e in self.expressions)
        source = SANDBOX_PRELUDE + ". as $__karta_input | [" + parts + "]"
        self._program = compile_program(source) if self.expressions else None

    def run(self, document: Any) -> list[PathOutcome]:
        return self.run_json(document, document_json(document))

    def run_json(self, document: Any, document_text: str) -> list[PathOutcome]:
        """Evaluate against `document`, whose sorted-key JSON text the caller already has."""
        if self._program is None:
            return []
        raw = self._program.input_text(document_text).first()
        return [_outcome(expression, item, document) for expression, item in zip(self.expressions, raw, strict=True)]


def _outcome(expression: str, item: dict[str, Any], document: Any) -> PathOutcome:
    if "e" in item:
        return PathOutcome(error=f"JQ execution error for expression '{expression}': {item['e']}")
    if "p" in item:
        paths = item["p"]
        if len(paths) >= MAX_RESULTS:
            return PathOutcome(error=f"query results exceed the allowed number {MAX_RESULTS}")
        locations = tuple(tuple(p) for p in paths)
        return PathOutcome(values=tuple(get_path(document, p) for p in locations), locations=locations)
    values = item["v"]
    if len(values) >= MAX_RESULTS:
        return PathOutcome(error=f"query results exceed the allowed number {MAX_RESULTS}")
    return PathOutcome(values=tuple(values))


def get_path(document: Any, path: Sequence[PathPart]) -> Any:
    """jq's getpath on plain Python data: a missing key or index gives null."""
    current = document
    for part in path:
        if isinstance(current, dict) and isinstance(part, str):
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and not isinstance(part, bool):
            current = current[part] if -len(current) <= part < len(current) else None
        else:
            return None
    return current


def document_json(document: Any) -> str:
    """Serialise with sorted keys: gojq walks object keys sorted, libjq in insertion order."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


def to_int32(value: Any) -> int | None:
    """Karta's conversion of a scale output into *int32: null is nil, 2 and 2.0 are 2, others fail."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConversionError(f"cannot use {go_format(value)!s} ({type_name(value)}) as an integer")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ConversionError(f"cannot use {go_format(value)} as an integer")
        value = int(value)
    if not INT32_MIN <= value <= INT32_MAX:
        raise ConversionError(f"{value} overflows a 32-bit integer")
    return value


def to_string(value: Any) -> str:
    """Karta's conversion of an id output into a string: null is "", anything but a string fails."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConversionError(f"cannot use {go_format(value)} ({type_name(value)}) as a string")
    return value


def type_name(value: Any) -> str:
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
