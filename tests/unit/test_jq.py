"""jq safety check and Karta's evaluation semantics on libjq."""

from __future__ import annotations

import jq
import pytest

from webhook.karta import jqcheck, jqengine
from webhook.karta.jqengine import ConversionError, PathBatch


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        (".a = 1", "modifying operator '='"),
        (".a |= 1", "modifying operator '|='"),
        (".a += 1", "modifying operator '+='"),
        (".a //= 1", "modifying operator '//='"),
        ("del(.a)", "del function"),
        ("[range(10)]", "function 'range'"),
        ("[paths]", "function 'paths'"),
        ("[recurse]", "function 'recurse'"),
        ("walk(.)", "function 'walk'"),
        ("[limit(3; repeat(1))]", "function 'repeat'"),
        ("[..]", "recursive descent operator"),
        ("env.HOME", "function 'env'"),
        ("$ENV.HOME", "variable '$ENV'"),
        ("[.[] | while(. < 10; . + 1)]", "function 'while'"),
        ("input", "function 'input'"),
        ("debug", "function 'debug'"),
        ('import "x" as x; .', "'import' of modules"),
        ("def f: f; f", "function 'f' calls itself"),
        ("def f(x): [x, f(x)]; f(.)", "function 'f' calls itself"),
        # Hidden inside a helper, a string interpolation or an object value: still found.
        ("def evil: del(.x); evil", "del function"),
        ('"\\(range(3))"', "function 'range'"),
        ("{a: [..]}", "recursive descent operator"),
    ],
)
def test_refused_constructs(expression: str, reason: str) -> None:
    problems = jqcheck.check_expression(expression)
    assert any(reason in p for p in problems), problems


@pytest.mark.parametrize(
    "expression",
    [
        '.metadata.labels["ray.io/node-type"]',
        ".spec.workerGroupSpecs[]?.groupName",
        ".spec.x[]? | (.replicas // 1)",
        "def pods(n): if (.h // 1) == 1 then n else (n * .h) end; .a[]? | pods(.r)",
        ".a == .b and .c != 1 and .d <= 2 and .e >= 3",
        "{del: 1, range: 2, env}",  # object keys, not calls
        ".del, .range, .env, (.x as $range | $range)",  # fields and variables named like refused builtins
        '"del(.x) and .. in a string"',
        "limit(2; .a[])",
        '.status.conditions[]? | select(.type == "Ready") | .status',
        "1",
        '"gpu"',
        ".a as [$x, $y] ?// $x | $x",
        "reduce .a[] as $x (0; . + $x)",
        ".a | to_entries[] | .key",
    ],
)
def test_accepted_expressions(expression: str) -> None:
    assert jqcheck.check_expression(expression) == []
    assert jqengine.compile_error(expression) is None


def test_compile_error_comes_from_libjq() -> None:
    assert jqengine.compile_error("gpu") is not None  # bare word: an undefined function, as in gojq
    assert jqengine.compile_error(".a[") is not None


def test_batch_returns_every_output_with_locations() -> None:
    doc = {"spec": {"groups": [{"name": "a", "r": 2}, {"name": "b"}, {"name": "c", "r": 0}]}}
    batch = PathBatch([".spec.groups[]?.name", ".spec.groups[]? | (.r // 1)", ".spec.groups[].r // 1", '"1"'])
    names, per_element, stream, constant = batch.run(doc)
    assert names.values == ("a", "b", "c")
    assert names.locations == (
        ("spec", "groups", 0, "name"),
        ("spec", "groups", 1, "name"),
        ("spec", "groups", 2, "name"),
    )
    # Per-element default keeps one output per group; 0 is truthy in jq.
    assert per_element.values == (2, 1, 0)
    # The stream form drops the group without r: Karta's pitfall, reproduced, not fixed.
    assert stream.values == (2, 0)
    assert constant.values == ("1",)
    assert constant.locations is None


def test_one_failing_path_does_not_hide_the_others() -> None:
    doc = {"spec": {"x": "text"}}
    ok, failing = PathBatch([".spec.x", ".spec.x[]"]).run(doc)
    assert ok.values == ("text",)
    assert failing.error is not None and "Cannot iterate over string" in failing.error
    assert failing.error.startswith("JQ execution error for expression '.spec.x[]'")


def test_missing_field_iterated_without_question_mark_is_an_error() -> None:
    (outcome,) = PathBatch([".spec.missing[].x"]).run({"spec": {}})
    assert outcome.error is not None
    (optional,) = PathBatch([".spec.missing[]?.x"]).run({"spec": {}})
    assert optional.values == ()


def test_result_cap_is_karta_s() -> None:
    under, at = PathBatch([".a[:999][]", ".a[:1000][]"]).run({"a": list(range(1200))})
    assert len(under.values) == 999
    assert at.error == "query results exceed the allowed number 1000"


def test_keys_are_seen_sorted_like_gojq() -> None:
    doc = {"services": {"zeta": 1, "alpha": 2, "mid": 3}}
    (outcome,) = PathBatch([".services | to_entries[] | .key"]).run(doc)
    assert outcome.values == ("alpha", "mid", "zeta")


def test_sandbox_hides_the_environment_even_without_the_check() -> None:
    (outcome,) = PathBatch(["[env, $ENV]"]).run({})
    assert outcome.values == ([{}, {}],)


def test_computed_outputs_are_remembered_by_projected_input() -> None:
    # floor is outside jqcompile's subset: the path stays on libjq and its output cache.
    batch = PathBatch([".spec.groups[]? | (.r // 1 | floor)"])
    first = {"spec": {"groups": [{"r": 2, "name": "a"}, {"name": "b"}]}}
    same_projection = {"spec": {"groups": [{"r": 2, "name": "x", "big": "y" * 500}, {"name": "z"}]}}
    assert batch.run(first)[0].values == (2, 1)
    assert batch._cache is not None and len(batch._cache._entries) == 1
    assert batch.run(same_projection)[0].values == (2, 1)
    assert len(batch._cache._entries) == 1  # the names are not read, so the input text is the same
    assert batch.run({"spec": {"groups": [{"r": 3}]}})[0].values == (3,)
    assert len(batch._cache._entries) == 2


def test_remembered_outputs_are_fresh_values_each_time() -> None:
    batch = PathBatch(["{a: .spec.a, n: 123456789012345678901234567890}"])
    (first,) = batch.run({"spec": {"a": [1]}})
    first.values[0]["a"].append("changed")
    (second,) = batch.run({"spec": {"a": [1]}})
    # Decoded as the jq binding decodes its own output: integers beyond 2^53 as libjq rounds them.
    direct = jq.compile("{a: .spec.a, n: 123456789012345678901234567890}").input_value({"spec": {"a": [1]}}).first()
    assert second.values == (direct,) == ({"a": [1], "n": 123456789012345677877719597056},)


def test_paths_that_read_the_clock_are_not_remembered() -> None:
    assert PathBatch(["now | floor"])._cache is None
    assert PathBatch([".spec.a // 1"])._cache is not None


def test_output_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jqengine, "OUTPUT_CACHE_ENTRIES", 2)
    cache = jqengine.OutputCache()
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"  # now the most recent
    cache.put("c", "3")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("1", None, "3")
    cache.put("x" * (jqengine.OUTPUT_CACHE_MAX_TEXT + 1), "4")
    cache.put("d", "y" * (jqengine.OUTPUT_CACHE_MAX_TEXT + 1))
    assert cache.get("d") is None and len(cache._entries) == 2


@pytest.mark.parametrize(("value", "expected"), [(None, None), (2, 2), (2.0, 2), (0, 0), (-3, -3)])
def test_int32_conversion(value: object, expected: int | None) -> None:
    assert jqengine.to_int32(value) == expected


@pytest.mark.parametrize("value", ["2", 2.5, True, [1], {"a": 1}, 2**31, -(2**31) - 1, float("nan")])
def test_int32_conversion_refuses(value: object) -> None:
    with pytest.raises(ConversionError):
        jqengine.to_int32(value)


def test_string_conversion() -> None:
    assert jqengine.to_string(None) == ""
    assert jqengine.to_string("a") == "a"
    with pytest.raises(ConversionError):
        jqengine.to_string(3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, "3"), (3.0, "3"), (3.5, "3.5"), (100000, "100000"), (1e6, "1e+06"), (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"), (0.00001, "1e-05"), (-2.5, "-2.5"), (True, "true"), (False, "false"), ("x", "x"),
        (None, "<nil>"), ([1, "a"], "[1 a]"), ({"b": 1, "a": 2}, "map[a:2 b:1]"), (2147483647, "2.147483647e+09"),
    ],
)  # fmt: skip
def test_go_format_matches_percent_v(value: object, expected: str) -> None:
    assert jqengine.go_format(value) == expected


def test_tokenizer_handles_nested_interpolation_and_comments() -> None:
    tokens = jqcheck.tokenize('"a\\("b\\(.c)")" # range(1)\n| .d')
    kinds = [(t.kind, t.text) for t in tokens]
    assert ("field", "c") in kinds and ("field", "d") in kinds
    assert ("ident", "range") not in kinds
