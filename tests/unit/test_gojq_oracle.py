"""Karta runs its paths with gojq; the paths here run natively, compiled, or through libjq. gojq itself
(tests/gojq.py) is the oracle: every path of a batch gives what gojq gives, outputs and errors alike,
on the same documents.

Debian ships gojq 0.12.11; Karta pins v0.12.18. Between the two, gojq's changelog changes these
operators (v0.12.14: a string times a number in [0, 1) gives "" instead of null, 0 / 0 is an error
instead of nan, `%` with nan gives nan, `error(null)` throws; v0.12.18: a repetition too large is an
error). Where 0.12.11 disagrees on an expression using them, the answer must be libjq's, which follows
the newer rules; test_karta_gojq_operator_rules pins those rules as v0.12.18's source states them.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from tests.corpus import ray_objects
from tests.gojq import GOJQ, as_float64, gojq
from tests.unit.test_jqcompile import BUILTIN_COMPUTED, DOCS, EXAMPLES, EXPRESSIONS, WORKLOADS, libjq
from webhook.karta.jqengine import PathBatch
from webhook.karta.load import builtin_definitions
from webhook.karta.validate import jq_fields

pytestmark = pytest.mark.skipif(GOJQ is None, reason="gojq (Karta's jq) is installed by `make tools` (Debian)")


def ours(expression: str, document: Any) -> tuple[bool, Any]:
    (outcome,) = PathBatch([expression]).run(document)
    if outcome.error is not None:
        return False, None
    return True, as_float64(list(outcome.values))


# What gojq changed after 0.12.11 in the subset the paths use (see the module docstring).
CHANGED_SINCE_DEBIAN = ("*", "/", "%", "error")


def libjq_float64(expression: str, document: Any) -> tuple[bool, Any]:
    ok, values = libjq(expression, document)
    return ok, as_float64(values) if ok else None


def assert_agrees_with_gojq(expression: str, documents: list[Any]) -> None:
    expected = gojq(expression, documents)
    assert len(expected) == len(documents), expression
    for document, debian_answer in zip(documents, expected, strict=True):
        got = ours(expression, document)
        answer = debian_answer
        if got != answer and any(op in expression for op in CHANGED_SINCE_DEBIAN):
            answer = libjq_float64(expression, document)  # a rule gojq changed after 0.12.11; libjq has the new one
        assert got == answer, (expression, document)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # gojq v0.12.18 operator.go repeatString: n < 0 gives null, "" stays "", the count is int(n).
        ('"ab" * 0', ""),
        ('"ab" * 0.5', ""),
        ('"ab" * 1.5', "ab"),
        ('"ab" * 2.7', "abab"),
        ('"ab" * -1', None),
        ('0 * "ab"', ""),
        ('"" * 5', ""),
        ('"" * -1', None),
    ],
)
def test_karta_gojq_operator_rules(expression: str, expected: Any) -> None:
    assert ours(expression, None) == (True, [expected])


@pytest.mark.parametrize("expression", ["0 / 0", '"ab" * 1e10'])
def test_karta_gojq_operator_errors(expression: str) -> None:
    # v0.12.14: zero divided by zero is an error; v0.12.18: a repetition past MaxInt32 characters is one.
    assert ours(expression, None) == (False, None)


def test_gojq_is_the_oracle_it_claims_to_be() -> None:
    # Sorted keys for .[] (libjq would follow insertion order), float64 numbers, errors caught per document.
    assert gojq(".[]", [{"b": 1, "a": 2}]) == [(True, [2, 1])]
    assert gojq(". + 1", [2**60]) == [(True, [float(2**60)])]  # 2^60 + 1 is not a float64
    assert gojq(".a[]", [{}, {"a": [1]}]) == [(False, None), (True, [1])]


BUILTIN_PATHS = sorted({e for d in builtin_definitions() for _, e in jq_fields(d)})


@pytest.mark.parametrize("expression", BUILTIN_PATHS)
def test_builtin_paths_match_gojq_on_the_corpus(expression: str) -> None:
    assert_agrees_with_gojq(expression, [document for _, document in ray_objects()])


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(WORKLOADS)
def test_builtin_computed_paths_match_gojq_on_generated_worker_groups(document: Any) -> None:
    for expression in BUILTIN_COMPUTED:
        assert_agrees_with_gojq(expression, [document])


@settings(max_examples=EXAMPLES, deadline=None)
@given(EXPRESSIONS, DOCS)
def test_generated_expressions_match_gojq(expression: str, document: Any) -> None:
    assert_agrees_with_gojq(expression, [document])
