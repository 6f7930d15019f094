"""Native path evaluation and input pruning agree with libjq on every input."""

from __future__ import annotations

import json
from typing import Any

import jq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.gojq import GOJQ, as_float64, gojq
from webhook.karta import native
from webhook.karta.jqengine import PathBatch, document_json

KEYS = st.sampled_from(["a", "b", "spec", "ray.io/x", "k"])
LEAVES = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3)
DOCS = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
STEPS = st.sampled_from([".a", ".b", ".spec", '["ray.io/x"]', '.["k"]', "[0]", "[1]", "[-1]", "[]", "[]?", ".[]?"])
PATHS = st.lists(STEPS, min_size=1, max_size=4).map("".join)


def jq_reference(expression: str, document: Any) -> tuple[str, Any, Any]:
    """('ok', values, paths) or ('error', None, None) as libjq computes them (sorted keys as gojq)."""
    text = document_json(document)
    try:
        values = jq.compile(f"[{expression}]").input_text(text).first()
    except ValueError:
        return "error", None, None
    try:
        paths = jq.compile(f"[path({expression})]").input_text(text).first()
    except ValueError:
        paths = None
    return "ok", values, paths


def leading_dot(expression: str) -> str:
    return expression if expression.startswith(".") else "." + expression


@settings(max_examples=400, deadline=None)
@given(PATHS.map(leading_dot), DOCS)
def test_native_paths_match_libjq(expression: str, document: Any) -> None:
    simple = native.parse_simple(expression)
    assert simple is not None, expression
    status, values, paths = jq_reference(expression, document)
    try:
        got_values, got_paths = simple.evaluate(document)
    except native.NativeError:
        assert status == "error", (expression, document, values)
        return
    if status == "error":
        # libjq refuses to index a string by number; gojq, Karta's jq, gives its character.
        if GOJQ is None:
            pytest.skip("gojq judges this case: it is installed by `make tools`")
        assert gojq(expression, [document]) == [(True, as_float64(got_values))], (expression, document)
        return
    assert json.loads(json.dumps(got_values)) == values
    assert [list(p) for p in got_paths or []] == paths


@pytest.mark.parametrize(
    "expression",
    [
        "1",
        "-2.5",
        '"1"',
        "true",
        "null",
        ".",
        ".a",
        '.a["b c"]',
        ".a[0][-1]",
        ".a[]?.b",
        '.metadata.labels["ray.io/node-type"]',
    ],
)
def test_simple_forms_are_recognised(expression: str) -> None:
    assert native.parse_simple(expression) is not None


@pytest.mark.parametrize(
    "expression",
    [".a // 1", ".a | .b", ".a?", "[.a]", ".a[1:2]", '"\\(.a)"', ".a, .b", ".. ", "def f: .; f", ".a == 1", "$x"],
)
def test_other_forms_go_to_libjq(expression: str) -> None:
    assert native.parse_simple(expression) is None


@pytest.mark.parametrize(
    ("expression", "prefix"),
    [
        (".spec.groups[]? | (.replicas // 1)", ("spec", "groups")),
        ("def pods(n): n * 2; .spec.groups[]? | pods(.r)", ("spec", "groups")),
        (".spec.enable == true", ("spec", "enable")),
        (".spec.x | tostring", ("spec", "x")),
        (".spec.x[] | .y", ("spec", "x")),
    ],
)
def test_provable_prefixes(expression: str, prefix: tuple[str, ...]) -> None:
    found = native.reach(expression)
    assert found is not None
    assert found.prefix == prefix


@pytest.mark.parametrize(
    "expression",
    [".spec.a // .status.b", ".spec.a as $x | .status", ".spec.a, .status", "[.spec.a]", ".spec.a + .b",
     'getpath(["a"])', ".spec.a == .status.b", "if .spec.a then .b else .c end"],
)  # fmt: skip
def test_unprovable_prefixes(expression: str) -> None:
    assert native.reach(expression) is None


COMPLEX = [
    ".a[]? | (.b // 1)",
    ".a[]? | if (.b // 1) == 1 then .k else ([(.k // 0) * .b, 5] | min) end",
    ".a[]? | length",
    ".a[]? | keys",
    ".a[]? | tojson",
    ".b[] | (.a // .k)",
    "def twice(n): n * 2; .a[]? | twice(.b // 0)",
    ".spec == true",
    ".spec | tostring",
    ".a | length",
    '.spec | .["ray.io/x"] // "none"',
]


@settings(max_examples=300, deadline=None)
@given(DOCS)
def test_pruned_input_gives_the_same_results(document: Any) -> None:
    batch = PathBatch(COMPLEX)
    assert batch.needs_libjq
    pruned = batch.run(document)
    whole = [jq_reference_outcome(e, document) for e in COMPLEX]
    assert [(o.error is None, o.values if o.error is None else None) for o in pruned] == whole


def jq_reference_outcome(expression: str, document: Any) -> tuple[bool, Any]:
    status, values, _ = jq_reference(expression, document)
    return (status == "ok", tuple(values) if status == "ok" else None)


@pytest.mark.parametrize(
    ("expression", "fields"),
    [
        (".spec.groups[]? | (.replicas // 1)", {"replicas"}),
        ("def pods(n): if (.hosts // 1) == 1 then n else ([(n // 0) * .hosts, 9] | min) end; .spec.groups[]? | "
         "pods(.replicas // .min)", {"hosts", "replicas", "min"}),
        (".spec.groups[]? | length", None),
        (".spec.groups[]? | . == 1", None),
        (".spec.groups[]? | .a[]", None),
        (".spec.groups[]? | {replicas}", None),
        (".spec.groups[]? | tojson", None),
        (".spec.groups | .a", None),
    ],
)  # fmt: skip
def test_element_projection(expression: str, fields: set[str] | None) -> None:
    found = native.reach(expression)
    assert found is not None
    assert found.fields == (frozenset(fields) if fields is not None else None)


def test_prune_projects_iterated_elements() -> None:
    doc = {"spec": {"groups": [{"replicas": 1, "template": {"big": 1}}, 3], "flag": True}}
    reaches = [native.Reach(("spec", "groups"), frozenset({"replicas"})), native.Reach(("spec", "flag"))]
    assert native.prune(doc, reaches) == {"spec": {"groups": [{"replicas": 1}, 3], "flag": True}}
    # Another reach wanting the whole elements wins.
    assert native.prune(doc, [*reaches, native.Reach(("spec", "groups"))])["spec"]["groups"] == doc["spec"]["groups"]


def test_prune_keeps_only_the_prefixes() -> None:
    doc = {"spec": {"groups": [1], "big": "x" * 100, "flag": True}, "status": {"a": 1}, "metadata": {}}
    groups, flag, spec = native.Reach(("spec", "groups")), native.Reach(("spec", "flag")), native.Reach(("spec",))
    assert native.prune(doc, [groups, flag]) == {"spec": {"groups": [1], "flag": True}}
    assert native.prune(doc, [spec, groups]) == {"spec": doc["spec"]}
    assert native.prune(doc, [groups, spec]) == {"spec": doc["spec"]}
    assert native.prune(doc, [native.Reach(("nope", "x"))]) == {}
    assert native.prune({"spec": "text"}, [groups]) == {"spec": "text"}
