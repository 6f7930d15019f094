"""The harness itself: which server it runs, what it installed, and that the schedulers' group-object
CRDs are served with their own schemas (ready for tests of the gang group-object controller)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from . import objects
from .cluster import CEL_IN_CRDS_SINCE, SERVER_VERSION, LocalAPIServer
from .test_crd120 import EXPECTED

# One server set per session, in one xdist worker (-n 2 --dist loadgroup).
pytestmark = [pytest.mark.apiserver, pytest.mark.xdist_group("apiserver")]


def test_the_server_is_kube_apiserver_1_20_on_loopback(apiserver: LocalAPIServer) -> None:
    assert apiserver.version == SERVER_VERSION
    assert apiserver.url.startswith("https://127.0.0.1:")
    result = apiserver.kubectl("version", "-o", "json")
    assert json.loads(result.stdout)["serverVersion"]["gitVersion"] == SERVER_VERSION


def test_the_crds_installed_are_the_counted_rewrites(apiserver: LocalAPIServer) -> None:
    installed = {k: v for k, v in apiserver.crd_changes.items() if not k.startswith("karta")}
    assert installed == (EXPECTED if apiserver.minor < CEL_IN_CRDS_SINCE else {key: {} for key in EXPECTED})
    names = {
        i["metadata"]["name"]
        for i in apiserver.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
    }
    assert {"rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "kartas.run.ai",
            "policyreports.wgpolicyk8s.io", "podgroups.scheduling.x-k8s.io", "podgroups.scheduling.volcano.sh",
            "podgroups.scheduling.run.ai"} <= names  # fmt: skip


@pytest.mark.parametrize(
    ("api_version", "spec", "bad_spec"),
    [
        ("scheduling.x-k8s.io/v1alpha1", {"minMember": 3}, {"minMember": "three"}),
        ("scheduling.volcano.sh/v1beta1", {"minMember": 3}, {"minMember": "three"}),
        ("scheduling.run.ai/v2alpha2", {"minMember": 3, "queue": "default"}, {"minMember": "three"}),
    ],
)
def test_the_schedulers_podgroups_are_served_with_their_schemas(
    apiserver: LocalAPIServer,
    namespace: Callable[..., str],
    api_version: str,
    spec: dict[str, Any],
    bad_spec: dict[str, Any],
) -> None:
    ns = namespace()
    good = {"apiVersion": api_version, "kind": "PodGroup", "metadata": {"name": "pg", "namespace": ns}, "spec": spec}
    result = apiserver.kubectl("create", "-f", "-", stdin=objects.to_yaml(good))
    assert result.returncode == 0, result.output
    bad = {**good, "metadata": {"name": "bad", "namespace": ns}, "spec": bad_spec}
    result = apiserver.kubectl("create", "--validate=false", "-f", "-", stdin=objects.to_yaml(bad))
    assert result.returncode == 1
    assert "spec.minMember" in result.stderr
