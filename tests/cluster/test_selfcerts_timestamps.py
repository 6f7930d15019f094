"""Issue 13: rotation annotations written without a timezone must not stop the server at start.

`datetime.fromisoformat("2026-03-27T00:00:00")` is naive, and comparing it with the aware clock
raised TypeError out of ensure(), which `serve` runs before it serves (checked on the previous
commit: both tests below failed with that TypeError).
"""

from __future__ import annotations

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
    manager,
    stored,
    webhook_configurations,
)
from webhook.cluster.selfcerts import NEXT_CA_SINCE, PREVIOUS_CA_UNTIL


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster([SECRETS, VALIDATING, MUTATING]) as emulated:
        yield emulated


def set_annotation(cluster: EmulatedCluster, key: str, value: str) -> None:
    core: Any = k8s.CoreV1Api(cluster.client())
    core.patch_namespaced_secret("karta-admission-tls", "ops", {"metadata": {"annotations": {key: value}}})


def rotating(cluster: EmulatedCluster, tmp_path: Path, clock: Clock) -> Any:
    webhook_configurations(cluster)
    certificates = manager(cluster, tmp_path, clock, validityDays=30, renewBeforeDays=10, caValidityDays=100,
                           caPropagationSeconds=600)  # fmt: skip
    certificates.ensure()
    clock.advance(days=85)  # the next CA is published
    assert certificates.ensure().next_ca_cert
    return certificates


def test_a_naive_next_ca_timestamp_is_read_as_utc(cluster: EmulatedCluster, tmp_path: Path) -> None:
    clock = Clock()
    certificates = rotating(cluster, tmp_path, clock)
    published = stored(cluster)
    naive = clock.now.replace(tzinfo=None).isoformat()
    set_annotation(cluster, NEXT_CA_SINCE, naive)
    assert certificates.ensure().ca_cert == published.ca_cert  # not propagated yet, and no TypeError
    clock.advance(seconds=700)
    assert certificates.ensure().ca_cert == published.next_ca_cert


def test_a_naive_or_unreadable_previous_ca_deadline(cluster: EmulatedCluster, tmp_path: Path) -> None:
    clock = Clock()
    certificates = rotating(cluster, tmp_path, clock)
    clock.advance(seconds=700)
    switched = certificates.ensure()
    assert switched.previous_ca_cert
    set_annotation(cluster, PREVIOUS_CA_UNTIL, (clock.now.replace(tzinfo=None)).isoformat())
    clock.advance(seconds=10)
    assert not certificates.ensure().previous_ca_cert  # past the (UTC) deadline: retired


def test_an_unreadable_next_ca_timestamp_restarts_the_propagation(cluster: EmulatedCluster, tmp_path: Path) -> None:
    clock = Clock()
    certificates = rotating(cluster, tmp_path, clock)
    published = stored(cluster)
    set_annotation(cluster, NEXT_CA_SINCE, "last tuesday")
    assert certificates.ensure().ca_cert == published.ca_cert
    assert stored(cluster).annotations[NEXT_CA_SINCE] == clock.now.isoformat()
    clock.advance(seconds=700)
    assert certificates.ensure().ca_cert == published.next_ca_cert
