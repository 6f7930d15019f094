"""Self-managed certificates against the API emulator: creation, races, renewal, CA rotation."""

from __future__ import annotations

import base64
import datetime
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.cluster.emulator import EmulatedCluster
from tests.cluster.selfcerts_support import (
    MUTATING,
    SECRETS,
    VALIDATING,
    Clock,
    bundles,
    manager,
    stored,
    webhook_configurations,
)
from webhook import certs
from webhook.cluster.selfcerts import (
    NEXT_CA_SINCE,
    CertState,
    SelfManagedSettings,
    SettingsError,
)


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster([SECRETS, VALIDATING, MUTATING]) as emulated:
        yield emulated


def test_fresh_start_creates_the_secret_files_and_ca_bundles(cluster: EmulatedCluster, tmp_path: Path) -> None:
    webhook_configurations(cluster)
    state = manager(cluster, tmp_path, Clock()).ensure()
    secret = stored(cluster)
    assert secret.cert == state.cert and certs.signed_by(secret.cert, secret.ca_cert)
    info = certs.cert_info(secret.cert)
    assert "karta-admission.ops.svc" in info.dns_names
    assert bundles(cluster) == [secret.ca_cert] * 3
    served = tmp_path / "tls"
    assert (served / "tls.crt").read_bytes() == secret.cert
    assert (served / "tls.key").read_bytes() == secret.key
    assert (served / "tls.key").stat().st_mode & 0o777 == 0o600
    (raw,) = cluster.objects(SECRETS)
    assert raw["type"] == "kubernetes.io/tls"


def test_second_pass_changes_nothing(cluster: EmulatedCluster, tmp_path: Path) -> None:
    webhook_configurations(cluster)
    first = manager(cluster, tmp_path, Clock())
    first.ensure()
    version = cluster.objects(SECRETS)[0]["metadata"]["resourceVersion"]
    first.ensure()
    assert cluster.objects(SECRETS)[0]["metadata"]["resourceVersion"] == version


def test_replicas_starting_together_agree(cluster: EmulatedCluster, tmp_path: Path) -> None:
    webhook_configurations(cluster)
    replicas = [manager(cluster, tmp_path / str(i), Clock()) for i in range(4)]
    results: list[CertState] = []
    threads = [threading.Thread(target=lambda m=m: results.append(m.ensure())) for m in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    secret = stored(cluster)
    assert len(results) == 4
    assert {r.cert for r in results} == {secret.cert}
    assert {(tmp_path / str(i) / "tls" / "tls.crt").read_bytes() for i in range(4)} == {secret.cert}


def test_serving_cert_renewed_before_expiry_under_the_same_ca(cluster: EmulatedCluster, tmp_path: Path) -> None:
    webhook_configurations(cluster)
    clock = Clock()
    certificates = manager(cluster, tmp_path, clock, validityDays=30, renewBeforeDays=10)
    first = certificates.ensure()
    clock.advance(days=15)
    assert certificates.ensure().cert == first.cert  # not due yet
    clock.advance(days=6)  # 9 days left: inside renewBeforeDays
    renewed = certificates.ensure()
    assert renewed.cert != first.cert and renewed.ca_cert == first.ca_cert
    assert certs.cert_info(renewed.cert).not_after > clock.now + datetime.timedelta(days=29)
    assert bundles(cluster) == [first.ca_cert] * 3  # caBundle untouched: no request can fail


def test_ca_rotation_publishes_before_it_signs(cluster: EmulatedCluster, tmp_path: Path) -> None:
    webhook_configurations(cluster)
    clock = Clock()
    certificates = manager(cluster, tmp_path, clock, validityDays=30, renewBeforeDays=10, caValidityDays=100,
                           caPropagationSeconds=600)  # fmt: skip
    first = certificates.ensure()
    old_ca = first.ca_cert
    clock.advance(days=85)  # within 2 x renewBeforeDays of the CA's end
    step1 = certificates.ensure()
    assert step1.next_ca_cert and step1.ca_cert == old_ca
    assert NEXT_CA_SINCE in step1.annotations
    assert certs.signed_by(step1.cert, old_ca)  # still served under the old CA
    assert bundles(cluster) == [old_ca + step1.next_ca_cert] * 3  # both trusted now
    clock.advance(seconds=300)
    assert certificates.ensure().ca_cert == old_ca  # not propagated long enough yet
    clock.advance(seconds=400)
    step2 = certificates.ensure()
    assert step2.ca_cert == step1.next_ca_cert and step2.previous_ca_cert == old_ca
    assert certs.signed_by(step2.cert, step2.ca_cert)
    assert bundles(cluster) == [step2.ca_cert + old_ca] * 3  # the old one stays a while
    clock.advance(seconds=700)
    step3 = certificates.ensure()
    assert not step3.previous_ca_cert
    assert bundles(cluster) == [step2.ca_cert] * 3


def test_missing_webhook_configurations_do_not_crash(cluster: EmulatedCluster, tmp_path: Path) -> None:
    certificates = manager(cluster, tmp_path, Clock())
    state = certificates.ensure()
    assert bundles(cluster) == []
    webhook_configurations(cluster)
    certificates.ensure()
    assert bundles(cluster) == [state.ca_cert] * 3


def test_a_broken_secret_is_replaced(cluster: EmulatedCluster, tmp_path: Path) -> None:
    core: Any = k8s.CoreV1Api(cluster.client())
    core.create_namespaced_secret("ops", {"metadata": {"name": "karta-admission-tls"}, "type": "kubernetes.io/tls",
                                          "data": {"tls.crt": base64.b64encode(b"junk").decode()}})  # fmt: skip
    state = manager(cluster, tmp_path, Clock()).ensure()
    assert certs.signed_by(state.cert, state.ca_cert)
    assert stored(cluster).cert == state.cert


def test_a_renamed_service_gets_a_new_serving_cert(cluster: EmulatedCluster, tmp_path: Path) -> None:
    first = manager(cluster, tmp_path, Clock()).ensure()
    second = manager(cluster, tmp_path, Clock(), serviceName="renamed").ensure()
    assert second.cert != first.cert and second.ca_cert == first.ca_cert
    assert "renamed.ops.svc" in certs.cert_info(second.cert).dns_names


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"serviceName": "s", "namespace": "n"}, "secretName and serviceName are required"),
        ({"secretName": "x", "serviceName": "s"}, "POD_NAMESPACE"),
        ({"secretName": "x", "serviceName": "s", "namespace": "n", "validityDays": 10, "renewBeforeDays": 10},
         "renewBeforeDays must be less than validityDays"),
        ({"secretName": "x", "serviceName": "s", "namespace": "n", "surprise": 1}, "unknown keys surprise"),
        ({"secretName": "x", "serviceName": "s", "namespace": "n", "validityDays": "long"}, "validityDays: must be"),
    ],
)  # fmt: skip
def test_settings_refusals(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        SelfManagedSettings.from_mapping(raw, environ={})


def test_namespace_from_the_pod(tmp_path: Path) -> None:
    parsed = SelfManagedSettings.from_mapping({"secretName": "x", "serviceName": "s"}, environ={"POD_NAMESPACE": "ops"})
    assert parsed.namespace == "ops" and parsed.webhook_configurations == []
