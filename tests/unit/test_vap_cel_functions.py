"""The Python stand-ins for Kubernetes' CEL libraries (tests/vapcel.py) against Kubernetes' documented
examples (k8s.io/apiserver/pkg/cel/library/quantity.go and lists.go doc comments, cel-go ext/strings.go)."""

from __future__ import annotations

import pytest

from tests.vapcel import evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # quantity.go
        ("isQuantity('1.3G')", True),
        ("isQuantity('1.3Gi')", True),
        ("isQuantity('1,3G')", False),
        ("isQuantity('10000k')", True),
        ("isQuantity('200K')", False),
        ("isQuantity('Three')", False),
        ("isQuantity('Mi')", False),
        ('quantity("50000000G").isInteger()', True),
        ('quantity("50k").isInteger()', True),
        ('quantity("9999999999999999999999999999999999999G").isInteger()', False),
        ('quantity("200M").compareTo(quantity("0.2G"))', 0),
        ('quantity("50M").compareTo(quantity("50Mi"))', -1),
        ('quantity("50Mi").compareTo(quantity("50M"))', 1),
        ('quantity("150Mi").isGreaterThan(quantity("100Mi"))', True),
        ('quantity("50Mi").isGreaterThan(quantity("100Mi"))', False),
        ('quantity("50M").isLessThan(quantity("100M"))', True),
        ('quantity("100M").isLessThan(quantity("50M"))', False),
        # AsInt64 semantics: fractions and milli-units that are not whole are not integers
        ('quantity("1.5").isInteger()', False),
        ('quantity("1500m").isInteger()', False),
        ('quantity("2000m").isInteger()', True),
        ('quantity("-1").isInteger()', True),
        ('quantity("1e3").asApproximateFloat()', 1000.0),
        # lists.go
        ("[1, 2, 3].sum()", 6),
        ("[1.0, 2.5].sum()", 3.5),
        ("[1, 2, 3].indexOf(2)", 1),
        ("['a', 'b', 'a'].indexOf('a')", 0),
        ("[1, 2].indexOf(3)", -1),
        # ext/strings.go
        ("'hello mellow'.indexOf('ello')", 1),
        ("'hello mellow'.indexOf('jello')", -1),
        ("'hello mellow'.lastIndexOf('ello')", 7),
        ("'hello mellow'.lastIndexOf('jello')", -1),
        ("[1, 2, 1].lastIndexOf(1)", 2),
        ("'tacocat'.substring(4)", "cat"),
        ("'tacocat'.substring(0, 4)", "taco"),
        ("'TacoCat'.lowerAscii()", "tacocat"),
        ("'TacoCÆt Xii'.lowerAscii()", "tacocÆt xii"),
        ("'  \\ttrim\\n    '.trim()", "trim"),
        ("['hello', 'mellow'].join()", "hellomellow"),
        ("['hello', 'mellow'].join(' ')", "hello mellow"),
        ("[].join('/')", ""),
    ],
)
def test_documented_examples(expression: str, expected: object) -> None:
    assert evaluate(expression, {}) == expected


@pytest.mark.parametrize("expression", ["quantity('200K')", "quantity('Three')", "'abc'.substring(2, 1)"])
def test_documented_errors(expression: str) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - cel-rust wraps the function's exception
        evaluate(expression, {})
