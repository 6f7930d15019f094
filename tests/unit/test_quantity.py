"""Kubernetes quantities."""

from __future__ import annotations

from decimal import Decimal

import pytest

from webhook.kube.quantity import parse_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", "1"), (2, "2"), ("500m", "0.5"), ("1.5", "1.5"), ("1Ki", "1024"), ("2Gi", str(2 * 2**30)), ("1e3", "1000"),
     ("1k", "1000"), (" 3 ", "3"), (0.25, "0.25"), ("+1", "1"), ("-1", "-1")],
)  # fmt: skip
def test_quantities(value: object, expected: str) -> None:
    assert parse_quantity(value) == Decimal(expected)


@pytest.mark.parametrize("value", ["lots", "1.2.3", "", "1Zi", None, True, [1], {"a": 1}, float("nan"), float("inf")])
def test_not_quantities(value: object) -> None:
    with pytest.raises(ValueError, match="is not a quantity"):
        parse_quantity(value)


def test_a_28_digit_rounding_does_not_make_a_whole_number() -> None:
    """apimachinery rounds a value below 1n up to the next nano: 3.000000001, never 3."""
    amount = parse_quantity("3.0000000000000000000000000001")
    assert amount != amount.to_integral_value()
    assert amount == Decimal("3.000000001")
    assert parse_quantity("0.0000000001") == Decimal("1e-9")
    assert parse_quantity("1e-1000000000") == Decimal("1e-9")


@pytest.mark.parametrize("value", ["1e1000000000", "1E+30", "9223372036854775808", 2**70, 1e300, "1e2147483648"])
def test_values_beyond_int64_are_refused_not_internal_errors(value: object) -> None:
    """Before: Decimal(10) ** 1000000000 raised decimal.Overflow, which the rules did not expect."""
    with pytest.raises(ValueError, match=r"above|not a quantity"):
        parse_quantity(value)


def test_binary_quantities_are_capped_like_apimachinery() -> None:
    assert parse_quantity("8Ei") == Decimal(2**63 - 1)
    assert parse_quantity("1.5Ki") == Decimal(1536)


def test_a_long_number_is_refused_without_backtracking() -> None:
    """KubeRay's CRD pattern accepts "1" * 20000 + "e1.5"; the old regular expression took tens of seconds.

    The scanner refuses anything longer than MAX_LENGTH before looking at it, so the time spent does not
    depend on the attacker's length (5,000 digits took 3 s before).
    """
    hostile = "1" * 5000 + "e1.5"
    with pytest.raises(ValueError, match="longer than 64 characters"):
        parse_quantity(hostile)
    with pytest.raises(ValueError, match=r"\(5006 characters\)"):
        parse_quantity(hostile)  # the message is clipped, not the whole value


@pytest.mark.parametrize("value", ["1" * 60 + "e1.5", "9" * 63 + "x", "1" * 30 + "." + "1" * 30 + "Zi"])
def test_malformed_within_the_length_bound(value: str) -> None:
    with pytest.raises(ValueError, match=r"not a quantity|above"):
        parse_quantity(value)
