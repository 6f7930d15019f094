"""Kubernetes resource quantities ("2", "500m", "1.5", "1Ki", "1e3") as exact decimals.

Read the way apimachinery's ParseQuantity reads them (k8s.io/apimachinery/pkg/api/resource/
quantity.go, parseQuantityString and ParseQuantity): an optional sign, digits with at most one
point, then one suffix (binary Ki..Ei, decimal n..E, or e/E with an integer exponent). As there, a
value with digits below 1n is rounded up to the next nano ("3.0000000000000000000000000001" is
3.000000001, not a whole 3) and a binary value is capped at 2^63-1.

The scanner makes one pass with no regular expression that could backtrack, and what it accepts is
bounded: a string longer than MAX_LENGTH characters, or a value whose magnitude is above 2^63-1 (the
int64 every scheduler and kubelet reads a quantity into), is refused with QuantityError instead of
being carried into arithmetic.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from functools import lru_cache

# Far beyond any quantity written by hand ("9223372036854775807" is 19 characters); KubeRay's CRD
# pattern lets a 20,000-digit number through.
MAX_LENGTH = 64
MAX_MAGNITUDE = Decimal(2**63 - 1)
_MAX_DIGITS = len(str(MAX_MAGNITUDE))
_NANO = Decimal("1e-9")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DIGITS = frozenset("0123456789")
# Room for every operation below on a number of at most MAX_LENGTH digits, so none of them rounds:
# the default context's 28 digits made "3.0000000000000000000000000001" exactly 3.
_CONTEXT = decimal.Context(prec=4 * MAX_LENGTH, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                           traps=[decimal.InvalidOperation, decimal.Overflow])  # fmt: skip


class QuantityError(ValueError):
    """Not a quantity this webhook reads; the message says why."""


def parse_quantity(value: object) -> Decimal:
    """The exact value of a quantity; QuantityError (a ValueError) when it is not one we accept."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(f"{shown(value)} is not a quantity")
    return _parse(value)


@lru_cache(maxsize=4096)  # pod templates repeat the same few values
def _parse(value: str | int | float) -> Decimal:
    if isinstance(value, int):
        if abs(value) > MAX_MAGNITUDE:
            raise QuantityError(f"{shown(value)} is above {MAX_MAGNITUDE}")
        return Decimal(value)
    text = repr(value) if isinstance(value, float) else value.strip()
    if len(text) > MAX_LENGTH:
        raise QuantityError(f"{shown(text)} is not a quantity: longer than {MAX_LENGTH} characters")
    negative, whole, fraction, suffix = _split(text)
    number = Decimal(f"{whole}.{fraction}")
    if suffix in _BINARY:
        amount = min(_CONTEXT.multiply(number, Decimal(2 ** _BINARY[suffix])), MAX_MAGNITUDE)
    else:
        exponent = _exponent(text, suffix)
        # Digits before the point, after the exponent: a cheap bound before any arithmetic, so that
        # "1e1000000000" never becomes a billion-digit number.
        significant = whole.lstrip("0")
        magnitude = len(significant) if significant else -(len(fraction) - len(fraction.lstrip("0")))
        if number and magnitude + exponent > _MAX_DIGITS:
            raise QuantityError(f"{shown(text)} is above {MAX_MAGNITUDE}")
        amount = number.scaleb(exponent, _CONTEXT)
    if amount and amount.as_tuple().exponent < -9:  # type: ignore[operator]
        # apimachinery rounds up to the nano: "if you want some resources, you should get some".
        amount = amount.quantize(_NANO, rounding=decimal.ROUND_UP, context=_CONTEXT) if amount >= _NANO else _NANO
    if amount > MAX_MAGNITUDE:
        raise QuantityError(f"{shown(text)} is above {MAX_MAGNITUDE}")
    return -amount if negative else amount


def _split(text: str) -> tuple[bool, str, str, str]:
    """(negative, whole digits, fraction digits, suffix) in one pass over the text."""
    position, end = 0, len(text)
    negative = False
    if position < end and text[position] in "+-":
        negative = text[position] == "-"
        position += 1
    start = position
    while position < end and text[position] in _DIGITS:
        position += 1
    whole = text[start:position]
    fraction = ""
    if position < end and text[position] == ".":
        position += 1
        start = position
        while position < end and text[position] in _DIGITS:
            position += 1
        fraction = text[start:position]
    if not whole and not fraction:
        raise QuantityError(f"{shown(text)} is not a quantity: it has no digits")
    return negative, whole or "0", fraction or "0", text[position:]


def _exponent(text: str, suffix: str) -> int:
    if suffix in _DECIMAL:
        return _DECIMAL[suffix]
    digits = suffix[2:] if suffix[1:2] in {"+", "-"} else suffix[1:]
    if suffix[:1] in {"e", "E"} and digits and all(c in _DIGITS for c in digits):
        exponent = int(suffix[1:])
        # apimachinery reads the exponent into an int32.
        if -(2**31) <= exponent < 2**31:
            return exponent
    raise QuantityError(f"{shown(text)} is not a quantity: unknown suffix {shown(suffix)}")


def shown(value: object) -> str:
    """A value for a message, clipped: a hostile one can be megabytes long."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def format_quantity(value: object) -> str:
    return value if isinstance(value, str) else repr(value)
