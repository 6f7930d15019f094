"""The CEL a jq path translates to means what the webhook computes for it (webhook.karta.jqcompile)."""

from __future__ import annotations

from typing import Any

import cel
import pytest

from webhook.karta.jqcompile import compile_native
from webhook.karta.native import NativeError
from webhook.vap import jq

EXPRESSIONS = [
    ".a // 1",
    ".a.b // 1",  # `.b` of a number fails: the error is the whole path's, not a reason to take 1
    "(.a.b // .c) // 2",
    ".c // .a.b",
    "if (.n // 1) == 1 then .a else ([(.a // 0) * .n, 2147483647] | min) end",
    ".a == 1 and (.c // false)",
]
DOCUMENTS: list[Any] = [
    {},
    {"a": 5},
    {"a": {"b": 3}},
    {"a": {"b": None}, "c": 7},
    {"a": False, "c": "x"},
    {"a": 2, "n": 4},
    {"a": None, "n": 3},
    {"a": 1, "c": True},
    {"a": [1], "c": None},
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_meaning_agrees_with_the_native_evaluation(expression: str) -> None:
    meaning = jq.translate(jq.parse(expression), "doc")
    evaluate = compile_native(expression)
    assert evaluate is not None
    for document in DOCUMENTS:
        try:
            expected: list[Any] | None = list(evaluate(document))
        except NativeError:
            expected = None
        ok = cel.evaluate(meaning.ok, {"doc": document})
        assert ok is (expected is not None), (expression, document, expected)
        if expected is not None:
            assert [cel.evaluate(meaning.value, {"doc": document})] == expected, (expression, document)
