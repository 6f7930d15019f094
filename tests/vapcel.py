"""Evaluate a ValidatingAdmissionPolicy the way kube-apiserver does, with a CEL library from PyPI.

`common-expression-language` (cel-rust) has CEL's standard functions; the Kubernetes libraries the
compiled policies use are added here in Python, written from their Kubernetes definitions and tested
against their documented examples in tests/unit/test_vap_cel_functions.py:

- quantity library (k8s.io/apiserver/pkg/cel/library/quantity.go): quantity(), isQuantity(),
  isInteger() (AsInt64 succeeds), asApproximateFloat(), isGreaterThan(), isLessThan(), compareTo();
- lists library (library/lists.go): sum();
- strings extension (cel-go ext/strings.go, version 2 in Kubernetes 1.30): indexOf, substring, trim,
  lowerAscii, join.

A quantity is carried through cel-rust as the map {"__quantity__": "<exact decimal>"}: cel-rust passes
only plain values to and from Python functions.

The evaluation follows validating/validator.go and dispatcher.go: variables are computed in order (lazily
there; here all of them, which is the same for expressions that do not fail), each validation's
expression must be true, and a failing one gives its messageExpression (or message).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

import cel

# apimachinery's quantity grammar (the CRD pattern KubeRay's schemas carry for every quantity).
_QUANTITY = re.compile(
    r"(?P<sign>[+-])?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+(?:\.[0-9]*)?|[eE][+-]?\.[0-9]+)?"
)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
INT64_MAX = 2**63 - 1
KEY = "__quantity__"


class CelError(Exception):
    pass


def parse(text: str) -> Decimal:
    """resource.ParseQuantity: exact value, digits below the nano rounded up (away from zero)."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise CelError(f"quantities must match the regular expression: {text!r}")
    suffix = match.group("suffix") or ""
    if suffix[:1] in {"e", "E"}:
        exponent_text = suffix[1:]
        if "." in exponent_text:  # ParseQuantity reads the exponent as an integer
            raise CelError(f"unable to parse quantity's suffix: {text!r}")
        exponent = int(exponent_text)
        if not -(2**31) <= exponent < 2**31:
            raise CelError(f"unable to parse quantity's suffix: {text!r}")
    with localcontext() as ctx:
        ctx.prec = 400
        number = Decimal(match.group("number"))
        if suffix in _BINARY:
            value = min(number * (2 ** _BINARY[suffix]), Decimal(INT64_MAX))
        elif suffix in _DECIMAL:
            value = number.scaleb(_DECIMAL[suffix])
        else:
            if abs(exponent) > 400:
                raise CelError("exponent out of the range this test implementation handles")
            value = number.scaleb(exponent)
        exponent_of = value.as_tuple().exponent
        if value != 0 and isinstance(exponent_of, int) and exponent_of < -9:
            value = value.quantize(Decimal("1e-9"), rounding="ROUND_UP")
    return Decimal(-value if match.group("sign") == "-" else value)


def _q(value: Any) -> Decimal:
    if not isinstance(value, dict) or KEY not in value:
        raise CelError("no such overload")
    return Decimal(value[KEY])


def _make(amount: Decimal) -> dict[str, str]:
    return {KEY: str(amount)}


def quantity(text: Any) -> dict[str, str]:
    if not isinstance(text, str):
        raise CelError("no such overload: quantity(non-string)")
    return _make(parse(text))


def is_quantity(text: Any) -> bool:
    if not isinstance(text, str):
        raise CelError("no such overload: isQuantity(non-string)")
    try:
        parse(text)
    except CelError:
        return False
    return True


def is_integer(q: Any) -> bool:
    amount = _q(q)
    return amount == amount.to_integral_value() and -(2**63) <= amount <= INT64_MAX


def compare_to(a: Any, b: Any) -> int:
    x, y = _q(a), _q(b)
    return (x > y) - (x < y)


def sum_list(values: Any) -> Any:
    if not isinstance(values, list):
        raise CelError("no such overload: sum")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sum(values)
    if all(isinstance(v, float) for v in values):
        return float(sum(values))
    raise CelError("sum of mixed types")


def index_of(target: Any, item: Any) -> int:
    """strings ext `indexOf` on a string; the Kubernetes lists library's on a list (first equal element)."""
    if isinstance(target, str) and isinstance(item, str):
        return target.find(item)
    if isinstance(target, list):
        return next((i for i, v in enumerate(target) if type(v) is type(item) and v == item), -1)
    raise CelError("no such overload: indexOf")


def last_index_of(target: Any, item: Any) -> int:
    if isinstance(target, str) and isinstance(item, str):
        return target.rfind(item)
    if isinstance(target, list):
        return max((i for i, v in enumerate(target) if type(v) is type(item) and v == item), default=-1)
    raise CelError("no such overload: lastIndexOf")


def substring(text: Any, start: Any, end: Any = None) -> str:
    if not isinstance(text, str):
        raise CelError("no such overload: substring")
    stop = len(text) if end is None else end
    if not 0 <= start <= stop <= len(text):
        raise CelError("index out of range")
    return text[start:stop]


def lower_ascii(text: Any) -> str:
    if not isinstance(text, str):
        raise CelError("no such overload: lowerAscii")
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def trim(text: Any) -> str:
    if not isinstance(text, str):
        raise CelError("no such overload: trim")
    # Go's strings.TrimSpace: Unicode White_Space (which is what Python's str.isspace follows).
    return text.strip()


def join(values: Any, separator: Any = "") -> str:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CelError("no such overload: join")
    return str(separator).join(values)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quantity": quantity,
    "isQuantity": is_quantity,
    "isInteger": is_integer,
    "asApproximateFloat": lambda q: float(_q(q)),
    "compareTo": compare_to,
    "isGreaterThan": lambda a, b: compare_to(a, b) == 1,
    "isLessThan": lambda a, b: compare_to(a, b) == -1,
    "sum": sum_list,
    "indexOf": index_of,
    "lastIndexOf": last_index_of,
    "substring": substring,
    "lowerAscii": lower_ascii,
    "trim": trim,
    "join": join,
}


@functools.lru_cache(maxsize=4096)
def compiled(expression: str) -> cel.Program:
    """The expression compiled (cel-rust parses it; a syntax error raises ValueError)."""
    return cel.compile(expression)


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    context = cel.Context(variables=dict(variables), functions=FUNCTIONS)
    return compiled(expression).execute(context)


@dataclass(frozen=True)
class Failure:
    policy: str
    index: int
    message: str
    error: bool = False  # the expression failed to evaluate (failurePolicy applies)


def run_policy(
    policy: Mapping[str, Any], obj: Mapping[str, Any], old: Mapping[str, Any] | None = None,
    operation: str = "CREATE",
) -> list[Failure] | None:  # fmt: skip
    """The failing validations of one policy for one request, or None when its match conditions skip it."""
    spec = policy["spec"]
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    request = {
        "operation": operation,
        "kind": {"group": group, "version": version, "kind": obj.get("kind", "")},
        "namespace": (obj.get("metadata") or {}).get("namespace", ""),
        "name": (obj.get("metadata") or {}).get("name", ""),
    }
    context = cel.Context(
        variables={"object": dict(obj), "oldObject": dict(old) if old is not None else None, "request": request},
        functions=FUNCTIONS,
    )
    for condition in spec.get("matchConditions", []):
        if compiled(condition["expression"]).execute(context) is not True:
            return None
    values: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        context.add_variable("variables", values)
        try:
            values[variable["name"]] = compiled(variable["expression"]).execute(context)
        except Exception:  # kube-apiserver evaluates variables lazily: only one in use may fail
            continue
    context.add_variable("variables", values)
    out = []
    for index, validation in enumerate(spec["validations"]):
        try:
            result = compiled(validation["expression"]).execute(context)
        except Exception as exc:
            out.append(Failure(policy["metadata"]["name"], index, f"expression failed: {exc}", error=True))
            continue
        if result is True:
            continue
        try:
            message = compiled(validation["messageExpression"]).execute(context)
        except Exception as exc:
            message = f"{validation.get('message')} (messageExpression failed: {exc})"
        out.append(Failure(policy["metadata"]["name"], index, str(message)))
    return out
