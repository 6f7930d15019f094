"""`validation: policy | both`: the chart installs the compiler's ValidatingAdmissionPolicies, with bindings
that select namespaces as the webhook entries do, and refuses settings the compiled policies do not hold."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from webhook.config import parse_config
from webhook.karta.registry import DefinitionSet
from webhook.vap.policy import Namespaces, export

from .helm import NAMESPACE, Helm

KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CHART_LABELS = ("helm.sh/chart", "app.kubernetes.io/instance")


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the chart's labels (the compiler's own objects do not carry them)."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "labels"}
    return {**obj, "metadata": meta}


@pytest.mark.parametrize("mode", ["enforce", "audit", "off"])
@pytest.mark.parametrize("validation", ["policy", "both"])
def test_rendered_policies_and_bindings_are_the_compilers(helm: Helm, validation: str, mode: str) -> None:
    rendered = helm.render({"validation": validation, "mode": mode, "webhook": {"excludeNamespaces": ["legacy"]}})
    namespaces = Namespaces(mode, "karta-admission.io/mode", ("kube-system", NAMESPACE, "legacy"))
    exported = export([d.definition for d in DefinitionSet.builtin()], parse_config({}, "t").policy, namespaces)
    want = sorted((_strip(o) for o in exported.objects), key=lambda o: (o["kind"], o["metadata"]["name"]))
    got = sorted(
        (_strip(o) for o in rendered if o["kind"].startswith("ValidatingAdmissionPolicy")),
        key=lambda o: (o["kind"], o["metadata"]["name"]),
    )
    assert got == want
    assert (rendered.maybe("ValidatingWebhookConfiguration") is not None) == (validation == "both")
    for obj in rendered:
        if obj["kind"].startswith("ValidatingAdmissionPolicy"):
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)


def test_policy_mode_drops_what_only_the_validating_webhook_needed(helm: Helm) -> None:
    rendered = helm.render({"validation": "policy"})
    config = rendered.one("ConfigMap")["data"]["config.yaml"]
    assert "validatingWebhookConfiguration" not in config
    assert "mutatingWebhookConfiguration" in config
    rules = rendered.one("ClusterRole")["rules"]
    assert not any("validatingwebhookconfigurations" in r.get("resources", []) for r in rules)


def test_webhook_mode_installs_no_policy(helm: Helm) -> None:
    assert not [o for o in helm.render({}) if o["kind"].startswith("ValidatingAdmissionPolicy")]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"rules": {"gpu-on-head": "deny"}}, "rules.gpu-on-head is deny"),
        ({"gpu": {"taintKeys": ["example.com/gpu"]}}, "default gpu settings"),
        ({"kuberay": {"featureGates": {"RayClusterMTLS": True}}}, "feature gates"),
        ({"webhook": {"extraRules": [{"apiGroups": ["x"], "apiVersions": ["v1"], "resources": ["y"]}]}},
         "extra definitions"),
    ],
)  # fmt: skip
def test_settings_the_compiled_policies_do_not_hold_are_refused(helm: Helm, values: dict[str, Any], named: str) -> None:
    result = helm.template({"validation": "policy", **values})
    assert result.returncode != 0
    assert named in result.stderr and "karta-admission export vap" in result.stderr


def test_default_severities_spelt_out_are_accepted(helm: Helm) -> None:
    rendered = helm.render({"validation": "both", "rules": {"gpu-on-head": "warn", "replicas-within-bounds": "deny"}})
    assert rendered.of_kind("ValidatingAdmissionPolicy")


@pytest.mark.parametrize("validation", ["policy", "both"])
def test_helm_lint_strict(helm: Helm, validation: str) -> None:
    result = helm.lint({"validation": validation})
    assert result.returncode == 0, result.stdout + result.stderr


def test_policies_and_bindings_are_cluster_scoped(helm: Helm) -> None:
    for obj in helm.render({"validation": "both"}):
        if obj["kind"].startswith("ValidatingAdmissionPolicy"):
            assert "namespace" not in obj["metadata"]
