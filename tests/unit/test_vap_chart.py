"""The chart's compiled policies (charts/karta-admission/files/validating-admission-policies.json) are what
the compiler makes today: regenerate them with `make chart-vap` when this fails."""

from __future__ import annotations

import json
from pathlib import Path

from webhook.vap.chart import compile_for_chart, render

ARTIFACT = (
    Path(__file__).resolve().parents[2] / "charts" / "karta-admission" / "files" / "validating-admission-policies.json"
)


def test_the_committed_policies_are_up_to_date() -> None:
    committed, current = ARTIFACT.read_text(encoding="utf-8"), render()
    # Compared as a whole, not through pytest's diff: that takes minutes on a file this size.
    if committed != current:
        first = next((i for i, (a, b) in enumerate(zip(committed, current, strict=False)) if a != b), None)
        raise AssertionError(f"the committed policies differ from the compiler's (first at character {first}): "
                             "run `make chart-vap` and commit the result")  # fmt: skip


def test_the_artifact_records_the_settings_it_was_compiled_for() -> None:
    data = compile_for_chart()
    values = json.loads((ARTIFACT.parents[1] / "values.schema.json").read_text())["properties"]
    assert set(data["values"]) <= set(values)
    assert data["policies"] and {d["name"] for d in data["definitions"]} == {
        "ray-io-raycluster-v1", "ray-io-rayjob-v1", "ray-io-rayservice-v1"
    }  # fmt: skip
