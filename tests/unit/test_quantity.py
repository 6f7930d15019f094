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
