"""The chart renders, lints and produces objects the Kubernetes API would accept."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from .cases import VALUE_SETS, chart_file
from .helm import Helm

# The oldest version the chart supports (Chart.yaml kubeVersion) and the newest schema shipped.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# Kinds from CRDs, which kubernetes-validate has no schema for; test_certificates.py and
# test_workload.py check them field by field.
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}

ALL_SETS = sorted(VALUE_SETS)


def test_newest_shipped_schema_is_at_least_1_37() -> None:
    assert tuple(int(p) for p in KUBERNETES_VERSIONS[1].split(".")) >= (1, 37, 0)


@pytest.mark.parametrize("name", ALL_SETS)
def test_helm_lint_strict(helm: Helm, name: str) -> None:
    result = helm.lint(VALUE_SETS[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", ALL_SETS)
def test_objects_valid_against_kubernetes_schemas(render_set, name: str, version: str) -> None:
    checked: set[str] = set()
    for obj in render_set(name):
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        # strict: unknown fields are errors, as they would be with kubectl's field validation.
        kubernetes_validate.validate(obj, version, strict=True)
        checked.add(obj["kind"])
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap", "ValidatingWebhookConfiguration"} <= checked


@pytest.mark.parametrize("name", ALL_SETS)
def test_every_namespaced_object_is_in_the_release_namespace(render_set, name: str) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                      "MutatingWebhookConfiguration"}  # fmt: skip
    for obj in render_set(name):
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == "karta-admission", obj["metadata"]


@pytest.mark.parametrize("name", ALL_SETS)
def test_no_key_material_and_no_secret_rendered(helm: Helm, name: str) -> None:
    """Certificates come from the server, cert-manager or the user, never from the templates."""
    output = helm.template(VALUE_SETS[name]).stdout
    assert "PRIVATE KEY" not in output
    assert "kind: Secret" not in output


def test_templates_do_not_generate_certificates_or_look_up_the_cluster() -> None:
    """genCA and friends re-roll on every render (GitOps drift); lookup is empty under helm template."""
    forbidden = re.compile(
        r"\b(genCA|genCAWithKey|genSelfSignedCert|genSignedCert|genPrivateKey|lookup|randAlphaNum)\b"
    )
    for template in chart_file("templates").iterdir():
        assert not forbidden.search(template.read_text()), template.name


def test_rendering_is_deterministic(helm: Helm) -> None:
    first = helm.template(VALUE_SETS["everything"]).stdout
    second = helm.template(VALUE_SETS["everything"]).stdout
    assert first == second


def test_refuses_kubernetes_older_than_1_30(helm: Helm) -> None:
    result = helm.template(extra=["--kube-version", "1.29.9"])
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr
    assert ">=1.30.0-0" in result.stderr


def test_long_release_name_keeps_the_service_name_a_dns_label(helm: Helm) -> None:
    release = "platform-admission-webhooks-production-eu-west-1-xyzw"  # helm's maximum: 53 characters
    assert len(release) == 53
    rendered = helm.render(release=release)
    service = rendered.one("Service")
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", service["metadata"]["name"])
    for config_kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for entry in rendered.one(config_kind)["webhooks"]:
            assert entry["clientConfig"]["service"]["name"] == service["metadata"]["name"]
