"""Certificate modes: where the serving certificate comes from and how the CA reaches the API server."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from .cases import CA_PEM, config_of, container, volume
from .helm import NAMESPACE, Helm
from .test_webhooks import entries

WEBHOOK_CONFIGS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
TLS_DIR = "/run/karta-admission/tls"
DURATION = re.compile(r"(\d+)h")


def hours(duration: str) -> int:
    match = DURATION.fullmatch(duration)
    assert match, duration
    return int(match.group(1))


def tls_mount(deployment: dict[str, Any]) -> dict[str, Any]:
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == TLS_DIR]
    assert isinstance(mount, dict)
    return mount


@pytest.mark.parametrize("name", ["defaults", "cert-manager", "provided-pem"])
def test_server_reads_its_certificate_from_the_tls_directory_without_subpath(render_set, name: str) -> None:
    deployment = render_set(name).one("Deployment")
    args = container(deployment)["args"]
    assert f"--certfile={TLS_DIR}/tls.crt" in args
    assert f"--keyfile={TLS_DIR}/tls.key" in args
    mount = tls_mount(deployment)
    # A subPath mount never sees a rotated Secret.
    assert "subPath" not in mount
    assert mount["readOnly"] is (name != "defaults")


def test_self_managed_renders_no_certificate_and_hands_the_server_its_targets(render_set) -> None:
    rendered = render_set("defaults")
    assert not rendered.of_kind("Certificate")
    assert not rendered.of_kind("Issuer")
    for kind in WEBHOOK_CONFIGS:
        assert "annotations" not in rendered.one(kind)["metadata"]
    for entry in entries(rendered):
        assert "caBundle" not in entry["clientConfig"]
    # The server writes the files into a memory-backed emptyDir.
    deployment = rendered.one("Deployment")
    assert volume(deployment, tls_mount(deployment)["name"])["emptyDir"]["medium"] == "Memory"
    settings = config_of(rendered)["certificates"]["selfManaged"]
    assert settings == {
        "secretName": f"{rendered.one('Service')['metadata']['name']}-tls",
        "serviceName": rendered.one("Service")["metadata"]["name"],
        "namespace": NAMESPACE,
        "validatingWebhookConfiguration": rendered.one("ValidatingWebhookConfiguration")["metadata"]["name"],
        "mutatingWebhookConfiguration": rendered.one("MutatingWebhookConfiguration")["metadata"]["name"],
        "dir": TLS_DIR,
        "validityDays": 365,
        "renewBeforeDays": 120,
    }
    # What the server may touch is exactly what it was told about.
    (named_secret_rule,) = [
        r for r in rendered.one("Role")["rules"] if r.get("resourceNames") and r["resources"] == ["secrets"]
    ]
    assert named_secret_rule["resources"] == ["secrets"]
    assert named_secret_rule["resourceNames"] == [settings["secretName"]]
    cluster_role = rendered.one("ClusterRole")
    by_resource = {
        r["resources"][0]: r for r in cluster_role["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]
    }
    assert by_resource["validatingwebhookconfigurations"]["resourceNames"] == [
        settings["validatingWebhookConfiguration"]
    ]
    assert by_resource["mutatingwebhookconfigurations"]["resourceNames"] == [settings["mutatingWebhookConfiguration"]]


def test_self_managed_without_mutation_names_no_mutating_configuration(helm: Helm) -> None:
    rendered = helm.render({"mutation": {"enabled": False}})
    assert rendered.maybe("MutatingWebhookConfiguration") is None
    assert "mutatingWebhookConfiguration" not in config_of(rendered)["certificates"]["selfManaged"]
    resources = [r["resources"] for r in rendered.one("ClusterRole")["rules"]]
    assert ["validatingwebhookconfigurations"] in resources
    assert ["mutatingwebhookconfigurations"] not in resources


def test_self_managed_validity_is_configurable(helm: Helm) -> None:
    rendered = helm.render({"certificates": {"selfManaged": {"validityDays": 90, "renewBeforeDays": 30}}})
    settings = config_of(rendered)["certificates"]["selfManaged"]
    assert (settings["validityDays"], settings["renewBeforeDays"]) == (90, 30)


def test_cert_manager_chain_and_injection(render_set) -> None:
    rendered = render_set("cert-manager")
    fullname = rendered.one("Service")["metadata"]["name"]
    issuers = {i["metadata"]["name"]: i["spec"] for i in rendered.of_kind("Issuer")}
    certificates = {c["metadata"]["name"]: c["spec"] for c in rendered.of_kind("Certificate")}
    assert set(issuers) == {f"{fullname}-selfsigned", f"{fullname}-ca"}
    assert issuers[f"{fullname}-selfsigned"] == {"selfSigned": {}}
    ca = certificates[f"{fullname}-ca"]
    assert ca["isCA"] is True
    assert ca["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": f"{fullname}-selfsigned"}
    # The CA keeps its key across renewals, so the injected caBundle still verifies older serving certs.
    assert ca["privateKey"]["rotationPolicy"] == "Never"
    assert issuers[f"{fullname}-ca"] == {"ca": {"secretName": ca["secretName"]}}

    serving = certificates[f"{fullname}-tls"]
    assert serving["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": f"{fullname}-ca"}
    assert serving["dnsNames"] == [f"{fullname}.{NAMESPACE}.svc", f"{fullname}.{NAMESPACE}.svc.cluster.local"]
    assert "server auth" in serving["usages"]
    assert 0 < hours(serving["renewBefore"]) < hours(serving["duration"])
    assert 0 < hours(ca["renewBefore"]) < hours(ca["duration"])
    # The serving certificate outlives its renewal window comfortably inside the CA's lifetime.
    assert hours(serving["duration"]) < hours(ca["duration"]) - hours(ca["renewBefore"])

    deployment = rendered.one("Deployment")
    assert volume(deployment, tls_mount(deployment)["name"])["secret"]["secretName"] == serving["secretName"]
    for kind in WEBHOOK_CONFIGS:
        annotations = rendered.one(kind)["metadata"]["annotations"]
        assert annotations == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{fullname}-tls"}
    for entry in entries(rendered):
        assert "caBundle" not in entry["clientConfig"]
    assert "certificates" not in config_of(rendered)
    # cert-manager writes the Secret: the server needs no access to it (the Lease is all its Role has).
    assert secret_rules(rendered) == []


def test_cert_manager_with_a_given_issuer_creates_no_ca(render_set) -> None:
    rendered = render_set("cert-manager-issuer")
    assert rendered.of_kind("Issuer") == []
    (serving,) = rendered.of_kind("Certificate")
    assert serving["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"}
    for kind in WEBHOOK_CONFIGS:
        assert rendered.one(kind)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{serving['metadata']['name']}"
        )


@pytest.mark.parametrize("name", ["provided-pem", "provided-base64"])
def test_provided_certificate_and_ca_bundle(render_set, name: str) -> None:
    rendered = render_set(name)
    for entry in entries(rendered):
        assert base64.b64decode(entry["clientConfig"]["caBundle"]).decode() == CA_PEM
    for kind in WEBHOOK_CONFIGS:
        assert "annotations" not in rendered.one(kind)["metadata"]
    deployment = rendered.one("Deployment")
    assert volume(deployment, tls_mount(deployment)["name"])["secret"]["secretName"] == "corp-tls"
    assert not rendered.of_kind("Certificate")
    assert secret_rules(rendered) == []
    assert "certificates" not in config_of(rendered)


def secret_rules(rendered: Any) -> list[dict[str, Any]]:
    role = rendered.maybe("Role")
    return [r for r in (role["rules"] if role else []) if "secrets" in r["resources"]]
