"""Self-managed certificates on the API emulator: its kinds, a clock the tests move, and builders."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from tests.cluster.emulator import EmulatedCluster, Kind
from webhook.cluster.selfcerts import CertState, SelfManagedCertificates, SelfManagedSettings

SECRETS = Kind("", "v1", "secrets", "Secret", True)


VALIDATING = Kind("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                  "ValidatingWebhookConfiguration", False)  # fmt: skip


MUTATING = Kind("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
                "MutatingWebhookConfiguration", False)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


def settings(tmp_path: Path, **overrides: Any) -> SelfManagedSettings:
    raw = {"secretName": "karta-admission-tls", "serviceName": "karta-admission", "namespace": "ops",
           "validatingWebhookConfiguration": "karta-admission", "mutatingWebhookConfiguration": "karta-admission",
           "dir": str(tmp_path / "tls"), **overrides}  # fmt: skip
    return SelfManagedSettings.from_mapping(raw)


def webhook_configurations(cluster: EmulatedCluster) -> None:
    api: Any = k8s.AdmissionregistrationV1Api(cluster.client())
    service = {"namespace": "ops", "name": "karta-admission", "path": "/validate"}
    webhook = {"name": "validate.karta-admission.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": service}}  # fmt: skip
    api.create_validating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "karta-admission"},
            "webhooks": [webhook, {**webhook, "name": "validate-audit.karta-admission.io"}],
        }
    )
    api.create_mutating_webhook_configuration(
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "karta-admission"}, "webhooks": [{**webhook, "name": "mutate-pods.karta-admission.io"}]}
    )  # fmt: skip


def bundles(cluster: EmulatedCluster) -> list[bytes]:
    found: list[bytes] = []
    for kind in (VALIDATING, MUTATING):
        for obj in cluster.objects(kind):
            found.extend(base64.b64decode(w["clientConfig"].get("caBundle", "")) for w in obj["webhooks"])
    return found


def stored(cluster: EmulatedCluster) -> CertState:
    (secret,) = cluster.objects(SECRETS)
    return CertState.from_secret(secret)


def manager(cluster: EmulatedCluster, tmp_path: Path, clock: Clock, **overrides: Any) -> SelfManagedCertificates:
    return SelfManagedCertificates(cluster.client(), settings(tmp_path, **overrides), clock)
