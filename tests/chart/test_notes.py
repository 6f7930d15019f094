"""NOTES.txt tells the user how to check the install; what it promises is what the server answers."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest
import yaml

from tests.reviews import review
from webhook.admission import Admission, parse_review
from webhook.config import load_definitions, parse_config
from webhook.evaluation import Mode

from .cases import VALUE_SETS, config_of
from .helm import NAMESPACE, Helm


def example_object(notes: str) -> dict[str, Any]:
    """The manifest between `cat <<'EOF' | kubectl apply --dry-run=server ...` and `EOF`."""
    match = re.search(r"cat <<'EOF' \| kubectl apply --dry-run=server -n \"\$NS\" -f -\n(.*?)\n\s*EOF\n", notes, re.S)
    assert match, notes
    obj = yaml.safe_load(textwrap.dedent(match.group(1)))
    assert isinstance(obj, dict)
    return obj


def line_after(notes: str, marker: str) -> str:
    lines = notes.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.rstrip().endswith(marker)]
    return lines[index + 1].strip()


def server_answer(helm: Helm, values: dict[str, Any], obj: dict[str, Any], mode: Mode | None) -> dict[str, Any]:
    """What the server, configured by this chart, answers for the object (dry run, as in the notes)."""
    config = parse_config(config_of(helm.render(values)), "chart")
    admission = Admission.for_config(config, load_definitions(config))
    response = admission.validate(parse_review(review(obj, dry_run=True, namespace="default")), mode).response
    result = response["response"]
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(("name", "path_mode"), [("defaults", None), ("off", Mode.ENFORCE)])
def test_notes_predict_the_denial(helm: Helm, name: str, path_mode: Mode | None) -> None:
    values = VALUE_SETS[name]
    notes = helm.notes(values)
    obj = example_object(notes)
    assert obj["kind"] == "RayService"
    answer = server_answer(helm, values, obj, path_mode)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    assert answer["status"]["reason"] == "Invalid"
    promised = line_after(notes, "and says:")
    assert promised in answer["status"]["message"]
    (cause,) = answer["status"]["details"]["causes"]
    assert promised == cause["message"]
    assert f"names the field {cause['field']}" in notes.replace("\n   ", " ")
    # The entry the notes name is the one that serves this namespace.
    webhook = "validate-enforce.karta-admission.io" if name == "off" else "validate.karta-admission.io"
    assert f'"{webhook}"' in notes
    if name == "off":
        assert 'kubectl label namespace "$NS" karta-admission.io/mode=enforce' in notes


def test_notes_predict_the_audit_warning(helm: Helm) -> None:
    values = VALUE_SETS["audit"]
    notes = helm.notes(values)
    answer = server_answer(helm, values, example_object(notes), None)
    assert answer["allowed"] is True
    promised = line_after(notes, "with this warning:")
    assert promised.startswith("Warning: ")
    assert promised.removeprefix("Warning: ") in answer["warnings"]


def test_notes_avoid_the_excluded_release_namespace(helm: Helm) -> None:
    assert "NS=default\n" in helm.notes()
    notes = helm.notes(namespace="default")
    assert "NS=default\n" not in notes
    assert 'NS=karta-admission-check; kubectl create namespace "$NS"' in notes


@pytest.mark.parametrize("name", ["defaults", "cert-manager", "provided-pem"])
def test_notes_show_how_to_see_the_certificate(helm: Helm, name: str) -> None:
    notes = helm.notes(VALUE_SETS[name])
    assert f"kubectl -n {NAMESPACE} rollout status deployment/karta-admission" in notes
    if name == "defaults":
        assert "jsonpath='{.webhooks[0].clientConfig.caBundle}'" in notes
    elif name == "cert-manager":
        assert f"kubectl -n {NAMESPACE} get certificate karta-admission-tls" in notes
    else:
        assert "caBundle" not in notes
        assert "certificate " not in notes
