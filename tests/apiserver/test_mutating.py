"""Pod mutation through a real kube-apiserver: the API server applies our JSON patch to Ray pods.

The chart's MutatingWebhookConfiguration (objectSelector on KubeRay's pod labels) calls
`karta-admission serve` running with cluster access, so its cluster agent watches the RayClusters
in this API server, publishes them for the workers and (holding the Lease) creates their
PodGroups. Pods are created as KubeRay creates them (labels,
controller reference to the RayCluster) and read back from the API server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import objects
from .cluster import MATCH_CONDITIONS_SINCE, NO_MATCH_CONDITIONS, LocalAPIServer, wait_until
from .conftest import ChartDeployment, deploy_chart
from .objects import GROUP_LABEL

# One server set per session, in one xdist worker (-n 2 --dist loadgroup).
pytestmark = [pytest.mark.apiserver, pytest.mark.xdist_group("apiserver")]

SIZE_ANNOTATION = "karta-admission.io/pod-group-size"


@pytest.fixture(scope="module")
def deployment(
    apiserver: LocalAPIServer, tls_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDeployment]:
    with deploy_chart(apiserver, tls_dir, tmp_path_factory.mktemp("mutating"), cluster=True) as deployed:
        yield deployed


def _create(apiserver: LocalAPIServer, obj: dict[str, Any]) -> dict[str, Any]:
    """Create through the API server and return the stored object."""
    result = apiserver.kubectl("create", "-f", "-", "-o", "json", stdin=objects.to_yaml(obj))
    assert result.returncode == 0, result.output
    stored: dict[str, Any] = json.loads(result.stdout)
    return stored


def _raycluster(apiserver: LocalAPIServer, name: str, ns: str, replicas: int) -> dict[str, Any]:
    return _create(apiserver, objects.raycluster(name, ns, replicas=replicas, max_replicas=10))


def _size_known(apiserver: LocalAPIServer, cluster: dict[str, Any], size: str) -> Callable[[], bool]:
    """Create throwaway probe pods (dry run) until the webhook's owner cache knows the cluster's size."""
    meta = cluster["metadata"]
    counter = iter(range(10_000))

    def probe() -> bool:
        pod = objects.ray_pod(f"probe-{next(counter)}", meta["namespace"], meta["name"], meta["uid"])
        result = apiserver.kubectl("create", "--dry-run=server", "-f", "-", "-o", "json", stdin=objects.to_yaml(pod))
        annotations = json.loads(result.stdout)["metadata"].get("annotations") or {}
        return annotations.get(SIZE_ANNOTATION) == size

    return probe


def test_a_ray_pod_comes_back_with_the_gang_metadata(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace()
    cluster = _raycluster(apiserver, "gang", ns, replicas=2)
    # head + 2 workers; the owner cache learns the RayCluster from its watch.
    wait_until(_size_known(apiserver, cluster, "3"), timeout=20, message="the owner cache to see the RayCluster")
    pod = _create(apiserver, objects.ray_pod("gang-worker-1", ns, "gang", cluster["metadata"]["uid"]))
    labels, annotations = pod["metadata"]["labels"], pod["metadata"].get("annotations") or {}
    assert labels[GROUP_LABEL] == "gang"
    assert annotations[SIZE_ANNOTATION] == "3"
    # What the API server stored is what it returned.
    stored = json.loads(apiserver.kubectl("get", "pod", "-n", ns, "gang-worker-1", "-o", "json").stdout)
    assert stored["metadata"]["labels"][GROUP_LABEL] == "gang"
    assert stored["metadata"]["annotations"][SIZE_ANNOTATION] == "3"
    # The head pod joins the same gang.
    head = _create(apiserver, objects.ray_pod("gang-head", ns, "gang", cluster["metadata"]["uid"], node_type="head"))
    assert head["metadata"]["labels"][GROUP_LABEL] == "gang"


def test_the_agent_creates_the_podgroup_the_pods_name(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """The leader's group-object controller writes scheduler-plugins' PodGroup through the API server,
    which checks it against the scheduler's own CRD schema; it is owned by the RayCluster."""
    ns = namespace()
    cluster = _raycluster(apiserver, "grouped", ns, replicas=3)

    def podgroup() -> dict[str, Any] | None:
        result = apiserver.kubectl("get", "podgroups.scheduling.x-k8s.io", "-n", ns, "grouped", "-o", "json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    found = wait_until(podgroup, timeout=30, message="the PodGroup")
    assert found is not None
    group: dict[str, Any] = found
    assert group["spec"]["minMember"] == 4  # head + 3 workers
    (owner,) = group["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("RayCluster", "grouped", cluster["metadata"]["uid"])
    assert group["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "karta-admission"
    wait_until(_size_known(apiserver, cluster, "4"), timeout=20, message="the agent's published owner")
    pod = _create(apiserver, objects.ray_pod("grouped-worker", ns, "grouped", cluster["metadata"]["uid"]))
    assert pod["metadata"]["labels"][GROUP_LABEL] == group["metadata"]["name"]
    assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"


def test_the_size_follows_the_raycluster_through_the_watch(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace()
    cluster = _raycluster(apiserver, "scaling", ns, replicas=1)
    wait_until(_size_known(apiserver, cluster, "2"), timeout=20, message="size 2")
    patch = json.dumps({"spec": {"workerGroupSpecs": [{**cluster["spec"]["workerGroupSpecs"][0], "replicas": 4}]}})
    result = apiserver.kubectl("patch", "raycluster", "-n", ns, "scaling", "--type=merge", "-p", patch)
    assert result.returncode == 0, result.output
    wait_until(_size_known(apiserver, cluster, "5"), timeout=20, message="size 5 after scaling to 4 workers")


def test_a_pod_of_another_raycluster_with_the_same_name_gets_no_size(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """The owner is matched by uid: a stale reference gets no gang keys at all (a key for a gang that
    is not known could name a group that never appears)."""
    ns = namespace()
    cluster = _raycluster(apiserver, "recreated", ns, replicas=1)
    wait_until(_size_known(apiserver, cluster, "2"), timeout=20, message="size 2")
    pod = _create(apiserver, objects.ray_pod("old-pod", ns, "recreated", "00000000-0000-4000-8000-000000000000"))
    assert GROUP_LABEL not in pod["metadata"]["labels"]
    assert SIZE_ANNOTATION not in (pod["metadata"].get("annotations") or {})


def test_keys_already_set_are_kept(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace()
    cluster = _raycluster(apiserver, "mine", ns, replicas=1)
    pod = objects.ray_pod("own-group", ns, "mine", cluster["metadata"]["uid"], labels={GROUP_LABEL: "my-own-group"})
    created = _create(apiserver, pod)
    assert created["metadata"]["labels"][GROUP_LABEL] == "my-own-group"


def test_a_pod_that_is_not_a_ray_pod_is_untouched_and_never_sent(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace()
    sent = objects.plain_pod("web", ns)
    created = _create(apiserver, sent)
    assert created["metadata"]["labels"] == sent["metadata"]["labels"]
    assert "annotations" not in created["metadata"]
    # The chart's objectSelector keeps it away from the webhook altogether.
    assert not [line for line in deployment.server.reviews() if '"name":"web"' in line and ns in line]


def test_a_ray_labelled_pod_not_controlled_by_a_raycluster_is_left_alone(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """From 1.30 the chart's matchCondition keeps such pods away from the webhook; 1.20 has no
    matchConditions (tests/apiserver/chart.py strips them), so here the pod reaches the server and
    its own check (the controller's kind has no definition with pod groups) leaves it alone."""
    ns = namespace()
    pod = objects.ray_pod("stray", ns, "stray", "11111111-0000-4000-8000-000000000000", owner_kind="ReplicaSet")
    pod["metadata"]["ownerReferences"][0]["apiVersion"] = "apps/v1"
    created = _create(apiserver, pod)
    assert GROUP_LABEL not in created["metadata"]["labels"]
    assert not created["metadata"].get("annotations")


def test_the_charts_match_condition_keeps_pods_of_other_controllers_away(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """With matchConditions in force, a Ray-labelled pod not controlled by a RayCluster is not even
    sent to the webhook (skipped on 1.20, which cannot express it)."""
    if apiserver.minor < MATCH_CONDITIONS_SINCE:
        pytest.skip(NO_MATCH_CONDITIONS)
    ns = namespace()
    pod = objects.ray_pod("stray", ns, "stray", "11111111-0000-4000-8000-000000000000", owner_kind="ReplicaSet")
    pod["metadata"]["ownerReferences"][0]["apiVersion"] = "apps/v1"
    _create(apiserver, pod)
    assert not [line for line in deployment.server.reviews() if '"name":"stray"' in line and ns in line]
