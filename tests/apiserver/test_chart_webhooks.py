"""The chart's webhook configurations in a real API server: their selectors, rules, failure
policies and timeouts decide who is sent to the webhook and what happens when it is down or slow.

The configurations are the chart's (`helm template`), with only the changes tests/apiserver/chart.py
lists; test_the_only_changes_to_the_chart_are_the_counted_ones pins them down.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import chart, objects
from .cluster import METADATA_NAME_LABEL, LocalAPIServer, wait_until
from .conftest import ChartDeployment, deploy_chart
from .objects import GROUP_LABEL, MODE_LABEL

# One server set per session, in one xdist worker (-n 2 --dist loadgroup).
pytestmark = [pytest.mark.apiserver, pytest.mark.xdist_group("apiserver")]


def _broken(ns: str, name: str = "broken") -> dict[str, Any]:
    return objects.rayservice(name, ns, replicas=5, max_replicas=2)


def test_the_only_changes_to_the_chart_are_the_counted_ones(tmp_path: Path) -> None:
    """Default values: 3 validating entries and 1 mutating entry made URLs, the mutating entry's
    one matchConditions list dropped, and nothing else differs from what helm renders."""
    rendered = chart.render(tmp_path / "helm")
    original = chart.webhook_configurations(rendered)
    local, changes = chart.for_local_server(original, "https://localhost:1234", b"CA")
    assert dict(changes) == {chart.URL_FROM_SERVICE: 4, chart.MATCH_CONDITIONS_DROPPED: 1, chart.CA_BUNDLE_SET: 4}
    before, after = chart.entries(original), chart.entries(local)
    assert set(before) == set(after) == {
        "validate.karta-admission.io", "validate-enforce.karta-admission.io", "validate-audit.karta-admission.io",
        "mutate-pods.karta-admission.io",
    }  # fmt: skip
    for name, entry in before.items():
        changed = after[name]
        service = entry["clientConfig"]["service"]
        assert changed["clientConfig"] == {"url": f"https://localhost:1234{service['path']}",
                                           "caBundle": base64.b64encode(b"CA").decode()}  # fmt: skip
        rest = {k: v for k, v in entry.items() if k not in {"clientConfig", "matchConditions"}}
        assert {k: v for k, v in changed.items() if k != "clientConfig"} == rest
    assert [o["metadata"] for o in original] == [o["metadata"] for o in local]


# --- selectors ---


@pytest.fixture(scope="module")
def deployment(
    apiserver: LocalAPIServer, tls_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDeployment]:
    with deploy_chart(apiserver, tls_dir, tmp_path_factory.mktemp("chart-webhooks")) as deployed:
        yield deployed


@pytest.mark.parametrize("excluded", ["kube-system", "karta-admission"])
def test_kube_system_and_the_webhooks_own_namespace_are_never_intercepted(
    apiserver: LocalAPIServer, deployment: ChartDeployment, excluded: str, namespace: Callable[..., str]
) -> None:
    apiserver.create_namespace("karta-admission")
    name = f"broken-{int(time.monotonic() * 1000) % 100000}"
    code, output = apiserver.apply(_broken(excluded, name)).outcome
    assert code == 0, output
    cluster = objects.raycluster(f"{name}-c", excluded, replicas=1)
    code, output = apiserver.apply(cluster).outcome
    assert code == 0, output
    uid = json.loads(apiserver.kubectl("get", "raycluster", "-n", excluded, f"{name}-c", "-o", "json").stdout)[
        "metadata"]["uid"]  # fmt: skip
    pod = objects.ray_pod(f"{name}-pod", excluded, f"{name}-c", uid)
    result = apiserver.kubectl("create", "-f", "-", "-o", "json", stdin=objects.to_yaml(pod))
    assert result.returncode == 0, result.output
    assert GROUP_LABEL not in json.loads(result.stdout)["metadata"]["labels"]
    assert not [line for line in deployment.server.reviews() if f'"namespace":"{excluded}"' in line]
    # The same object anywhere else is denied.
    code, output = apiserver.apply(_broken(namespace(), name)).outcome
    assert code == 1
    assert "[replicas-within-bounds]" in output


def test_an_off_namespace_is_neither_validated_nor_mutated(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace(labels={MODE_LABEL: "off"})
    code, output = apiserver.apply(_broken(ns)).outcome
    assert code == 0, output
    pod = objects.ray_pod("p", ns, "c", "22222222-0000-4000-8000-000000000000")
    result = apiserver.kubectl("create", "-f", "-", "-o", "json", stdin=objects.to_yaml(pod))
    assert result.returncode == 0
    assert GROUP_LABEL not in json.loads(result.stdout)["metadata"]["labels"]
    assert not [line for line in deployment.server.reviews() if f'"namespace":"{ns}"' in line]


def test_each_mode_label_reaches_its_own_path(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    paths = {}
    for mode in ("enforce", "audit", None):
        ns = namespace(labels={MODE_LABEL: mode} if mode else None)
        apiserver.apply(_broken(ns))
        [line] = [json.loads(x) for x in deployment.server.reviews() if f'"namespace":"{ns}"' in x]
        paths[mode] = (line["path"], line["verdict"])
    assert paths == {"enforce": ("/validate/enforce", "denied"), "audit": ("/validate/audit", "warned"),
                     None: ("/validate", "denied")}  # fmt: skip


def test_kinds_outside_the_rules_are_not_sent(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """A scheduler's PodGroup (one of the CRDs the harness installs) is not a Ray kind."""
    ns = namespace()
    podgroup = {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                "metadata": {"name": "pg", "namespace": ns}, "spec": {"minMember": 3}}  # fmt: skip
    code, output = apiserver.apply(podgroup).outcome
    assert code == 0, output
    assert not [line for line in deployment.server.reviews() if f'"namespace":"{ns}"' in line]


def test_the_namespace_exclusion_needs_the_metadata_name_label(
    apiserver: LocalAPIServer, deployment: ChartDeployment
) -> None:
    """Kubernetes 1.21+ labels every namespace with its name; 1.20 does not, and without the label
    `kubernetes.io/metadata.name NotIn [kube-system, ...]` matches kube-system too. The harness
    labels namespaces as 1.21+ does; taking the label off kube-system shows the exclusion is the
    label's doing (one reason the chart needs a newer cluster)."""
    names = iter(range(1000))

    def denied_in_kube_system() -> str:
        code, output = apiserver.apply(_broken("kube-system", f"needs-label-{next(names)}")).outcome
        return output if code == 1 else ""

    def admitted_in_kube_system() -> bool:
        return apiserver.apply(_broken("kube-system", f"needs-label-{next(names)}")).returncode == 0

    apiserver.label_namespace("kube-system", {METADATA_NAME_LABEL: None})
    try:
        # The API server reads namespace labels from its informer: the change shows within moments.
        output = wait_until(denied_in_kube_system, timeout=15, interval=0.3, message="kube-system intercepted")
    finally:
        apiserver.label_namespace("kube-system", {METADATA_NAME_LABEL: "kube-system"})
        wait_until(admitted_in_kube_system, timeout=15, interval=0.3, message="kube-system excluded again")
    assert "[replicas-within-bounds]" in output
