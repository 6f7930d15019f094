"""Compiled jq (webhook.karta.jqcompile) gives what libjq, the oracle, gives on the subset it accepts."""

from __future__ import annotations

import json
import re
from typing import Any

import jq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.corpus import ray_objects
from tests.gojq import GOJQ, as_float64, gojq
from webhook.karta import jqcompile, native
from webhook.karta.jqengine import PathBatch, document_json
from webhook.karta.load import builtin_definitions
from webhook.karta.registry import DefinitionSet
from webhook.karta.validate import jq_fields

# Scaled from the active profile (tests/conftest.py): 20 under "fast" gives 60, the default 100 gives 300.
EXAMPLES = 3 * (settings.default.max_examples if settings.default is not None else 100)

KEYS = st.sampled_from(["a", "b", "k", "replicas", "numOfHosts"])
NUMBERS = (
    st.integers(-5, 5)
    | st.sampled_from([0.5, -2.5, 1.0, 3.0, 2147483647, 2**53 + 1, -(2**60), 1e20, 0.1])
    | st.floats(-1e6, 1e6, allow_nan=False)
)
LEAVES = st.none() | st.booleans() | NUMBERS | st.sampled_from(["", "a", "b", "ab", "a,b"])
DOCS = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)

STEPS = st.sampled_from(
    [".a", ".b", ".replicas", ".numOfHosts", '.["k"]', '."a"', ".[0]", ".[-1]", ".[]", ".[]?", ".a?", ".[0]?"]
)
ATOMS = (
    st.lists(STEPS, min_size=1, max_size=3).map("".join)
    | st.just(".")
    | st.sampled_from(["1", "0", "2", "-1", "1.5", "2147483647", "null", "true", "false", '"a"', '","', "[]", "empty"])
)
OPERATORS = st.sampled_from(["|", ",", "//", "and", "or", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%"])
FUNCTIONS = st.sampled_from(["length", "min", "max", "add", "not", "type", "keys", "tostring", "tonumber"])


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, OPERATORS, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"[{e}]"),
        inner.map(lambda e: f"({e})?"),
        inner.map(lambda e: f"-({e})"),
        st.tuples(inner, FUNCTIONS).map(lambda t: f"({t[0]} | {t[1]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"(if {t[0]} then {t[1]} else {t[2]} end)"),
        st.tuples(inner, inner).map(lambda t: f"(if {t[0]} then {t[1]} end)"),
        inner.map(lambda e: f"select({e})"),
        # A filter parameter is evaluated where it is used, on the input there.
        st.tuples(inner, inner).map(lambda t: f"(def f(x): [x, ({t[0]} | x)]; f({t[1]}))"),
    )


EXPRESSIONS = st.recursive(ATOMS, _combine, max_leaves=6)


def libjq(expression: str, document: Any) -> tuple[bool, Any]:
    """(True, outputs) or (False, None) when libjq raises, on the sorted-key input PathBatch gives it."""
    try:
        return True, jq.compile(f"[{expression}]").input_text(document_json(document)).first()
    except ValueError:
        return False, None


def compiled_result(outputs: jqcompile.Compiled, document: Any) -> tuple[bool, Any] | None:
    """As libjq above, or None where the compiled path leaves the value to libjq."""
    try:
        return True, json.loads(json.dumps(list(outputs(document))))
    except native.NativeError:
        return False, None
    except jqcompile.NotNative:
        return None


def compiled_prefix(outputs: jqcompile.Compiled, document: Any) -> list[Any] | None:
    """The outputs before the first error, as `[(expr)?]` collects them."""
    found: list[Any] = []
    try:
        for value in outputs(document):
            found.append(value)
    except native.NativeError:
        pass
    except jqcompile.NotNative:
        return None
    decoded: list[Any] = json.loads(json.dumps(found))
    return decoded


def judged_by_gojq(expression: str, document: Any, got: tuple[bool, Any]) -> None:
    """Where libjq and the compiled path differ, gojq, Karta's jq, decides (tests/gojq.py says where
    libjq does otherwise: a string indexed by number, numbers written by `tostring`)."""
    if GOJQ is None:
        pytest.skip("gojq judges this case: it is installed by `make tools`")
    (answer,) = gojq(expression, [document])
    assert (got[0], as_float64(got[1])) == answer, (expression, document)


def assert_agrees(expression: str, document: Any) -> None:
    outputs = jqcompile.compile_native(expression)
    assert outputs is not None, expression
    got = compiled_result(outputs, document)
    if got is None:
        return
    if got != libjq(expression, document):
        judged_by_gojq(expression, document, got)
        return
    if not got[0]:
        ok, before = libjq(f"({expression})?", document)
        assert ok
        assert compiled_prefix(outputs, document) == before, (expression, document)


@settings(max_examples=EXAMPLES, deadline=None)
@given(EXPRESSIONS, DOCS)
def test_generated_expressions_match_libjq(expression: str, document: Any) -> None:
    assert_agrees(expression, document)


@pytest.mark.parametrize(
    "expression",
    [
        "[(1,2) + (10,20)]",  # the right operand's outputs outside
        "[(1,2) == (1,2)]",
        "[(false,true) and (true,false)]",
        "[(null,true) or (true,false)]",
        "[(1, .a, 2)?]",  # a try ends at the first error
        "[.[]?.a?]",  # an optional step drops its errors per value
        "[(.[]).a?]",
        "(1, .a) // 3",  # `//` passes the left side's errors on
        "[if (1,null) then (3,4) elif (false,true) then 5 end]",
        "3 * 2147483647",
        "[.[] | tostring]",
        "[.[] | length]",
        '"a,b" / ",", "" / ",", "abc" / ""',
        '"ab" * 2, "ab" * 0, "ab" * -1, 2 * "ab"',
        "5 % -3, -5 % 3, 5.5 % 2.7",
        "[1, [2]] | min, max",
        "[[1,2],[1]] | max",
        "[.[] | keys]",
        'def f(g): g + 1; def h: f(. * 2); [.[] | select(type == "number") // 0 | h]',
        'try error("x"), 1',
        '[.[] | select(type == "number")] | add',
        ".a.[0]",
        "-1 - -2 * 3",
    ],
)
def test_chosen_expressions_match_libjq(expression: str) -> None:
    for document in ({"a": [1]}, [1, {"a": 2}, "x", None, [3], 1.5], [2, 3], 5, None, {"a": 5}):
        assert_agrees(expression, document)


@pytest.mark.parametrize(
    ("expression", "document", "message"),
    [
        (".a.b", {"a": 5}, 'Cannot index number with "b"'),
        (".a[]", {}, "Cannot iterate over null"),
        ('1 * "a" | . * [1]', None, 'string ("a") and array ([1]) cannot be multiplied'),
        ("1 / 0", None, "number (1) and number (0) cannot be divided because the divisor is zero"),
        ('error("custom")', None, "custom"),
        ("true | length", None, "boolean (true) has no length"),
    ],
)
def test_errors_are_worded_like_jq(expression: str, document: Any, message: str) -> None:
    outputs = jqcompile.compile_native(expression)
    assert outputs is not None
    with pytest.raises(native.NativeError, match=f"^{re.escape(message)}$"):
        list(outputs(document))


def builtin_computed_paths() -> list[str]:
    expressions = {e for d in builtin_definitions() for _, e in jq_fields(d)}
    return sorted(e for e in expressions if native.parse_simple(e) is None)


BUILTIN_COMPUTED = builtin_computed_paths()


def test_builtin_definitions_have_computed_paths() -> None:
    # pods(...) for the scale paths, `// 1` for hosts, `== true` for the hints: at least these.
    assert len(BUILTIN_COMPUTED) >= 6


@pytest.mark.parametrize("expression", BUILTIN_COMPUTED)
def test_builtin_paths_compile_and_match_libjq_on_the_corpus(expression: str) -> None:
    assert jqcompile.compile_native(expression) is not None
    for _, document in ray_objects():
        assert_agrees(expression, document)


GROUP_VALUES = st.none() | st.booleans() | NUMBERS | st.sampled_from(["2", "x"]) | st.just([1])
GROUPS = st.lists(
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ["replicas", "minReplicas", "maxReplicas", "numOfHosts", "suspend", "groupName"], GROUP_VALUES
        ),
    )
    | LEAVES,
    max_size=4,
)
CLUSTERS = st.fixed_dictionaries({}, optional={"workerGroupSpecs": GROUPS | LEAVES, "enableInTreeAutoscaling": LEAVES})
WORKLOADS = st.fixed_dictionaries(
    {},
    optional={
        "spec": st.fixed_dictionaries(
            {}, optional={"workerGroupSpecs": GROUPS, "rayClusterConfig": CLUSTERS, "rayClusterSpec": CLUSTERS}
        )
        | LEAVES
    },
)


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(WORKLOADS)
def test_builtin_paths_match_libjq_on_generated_worker_groups(document: Any) -> None:
    for expression in BUILTIN_COMPUTED:
        assert_agrees(expression, document)


UNSUPPORTED = [
    ".a as $x | $x",
    "reduce .[] as $x (0; . + $x)",
    '"\\(.a)"',
    "path(.a)",
    "..",
    "limit(1; .a)",
    "now",
    "def f: f; f",
    "{a: .a}",
    ".a[1:2]",
    ".[.a]",
    "try .a catch .",
    ".a |= 1",
    "$__loc__",
    "@base64",
    ".a as [$x] ?// $x | $x",
    "floor",
]


@pytest.mark.parametrize("expression", UNSUPPORTED)
def test_constructs_outside_the_subset_stay_on_libjq(expression: str) -> None:
    assert jqcompile.compile_native(expression) is None


@pytest.mark.parametrize("expression", [e for e in UNSUPPORTED if "f; f" not in e and "|=" not in e and "now" not in e])
def test_batches_answer_those_through_libjq(expression: str) -> None:
    document = {"a": [3, 4], "b": "x"}
    (outcome,) = PathBatch([expression]).run(document)
    assert PathBatch([expression]).needs_libjq
    ok, expected = libjq(expression, document)
    assert (outcome.ok, list(outcome.values) if ok else None) == (ok, expected)


def test_values_outside_the_subset_go_to_libjq() -> None:
    # Integers beyond 2^53 in arithmetic and comparisons: libjq's answer depends on the literal.
    document = {"a": 2**60 + 1}
    expressions = [".a + 1", ".a < 1.5"]
    batch = PathBatch(expressions)
    assert not batch.needs_libjq
    for expression, outcome in zip(expressions, batch.run(document), strict=True):
        assert outcome.values == tuple(libjq(expression, document)[1]), expression


@pytest.mark.parametrize(
    ("expression", "text"),
    [
        # Karta holds every number as a float64 and gojq writes it as Go does (encoder.go
        # encodeFloat64): libjq would print the literal's own text, "1.0".
        (".b | tostring", "1"),
        ("[.c, .b, .big] | tostring", "[1.5,1,100000000000000000000]"),
        (".tiny | tostring", "1.5e-7"),
        (".huge | tostring", "1e+21"),
        ("[{z: .b}] | tostring", '[{"z":1.0}]'),  # object construction is libjq's: it keeps its own text
    ],
)
def test_tostring_writes_numbers_as_gojq_does(expression: str, text: str) -> None:
    document = {"b": 1.0, "c": 1.5, "big": 1e20, "tiny": 1.5e-7, "huge": 1e21}
    (outcome,) = PathBatch([expression]).run(document)
    assert outcome.values == (text,)


@pytest.mark.parametrize(
    ("expression", "document", "values"),
    [(".[0]", "héllo", ["h"]), (".[-1]", "héllo", ["o"]), (".[1]", "é", [None]), (".a[0]", {"a": ""}, [None])],
)
def test_a_string_is_indexed_by_character_as_gojq_does(expression: str, document: Any, values: list[Any]) -> None:
    # gojq func.go indexString; libjq refuses ("Cannot index string with number").
    (outcome,) = PathBatch([expression]).run(document)
    assert list(outcome.values) == values
    (compiled,) = PathBatch([f"{expression} | ."]).run(document)
    assert list(compiled.values) == values


def test_builtin_definitions_need_no_libjq() -> None:
    for compiled in DefinitionSet.builtin():
        assert not compiled.resolver._batch.needs_libjq, compiled.definition.root_kind
        assert not compiled.classifier._batch.needs_libjq, compiled.definition.root_kind


def test_compiled_paths_report_errors_and_the_cap_like_the_others() -> None:
    document = {"spec": {"groups": [{"replicas": "2", "numOfHosts": 2}], "many": list(range(1200))}}
    pods, many = PathBatch([".spec.groups[]? | .replicas + .numOfHosts", "[.spec.many[] | . + 1][] | . * 1"]).run(
        document
    )
    assert pods.error == (
        "JQ execution error for expression '.spec.groups[]? | .replicas + .numOfHosts': "
        'string ("2") and number (2) cannot be added'
    )
    assert many.error == "query results exceed the allowed number 1000"


def test_a_batch_refuses_what_libjq_refuses() -> None:
    with pytest.raises(ValueError, match="syntax error"):
        PathBatch([".a + (1"])
