"""`karta-admission serve` with its cluster agent, over real TLS, against the API emulator.

One model for all background work (docs/architecture.md): the master spawns one agent before its
workers, the workers make no API call and read what the agent publishes, every worker answers
/readyz from the same state, the master restarts an agent that dies and stops it with the server.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jsonpatch
import pytest

from tests.cluster.emulator import RAYCLUSTERS, EmulatedCluster, pod_of, raycluster, wait_until, worker_group
from tests.e2e.server import RunningServer, agent_pids, serving
from tests.reviews import review

pytestmark = pytest.mark.e2e
KUEUE = {"gang": {"scheduler": "kueue"}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest.fixture(scope="module")
def server(cluster: EmulatedCluster) -> Iterator[RunningServer]:
    with (
        tempfile.TemporaryDirectory(prefix="karta-agent-") as directory,
        serving(KUEUE, kubeconfig=cluster.kubeconfig(Path(directory))) as running,
    ):
        yield running


def mutated(server: RunningServer, pod: dict[str, object]) -> dict[str, object]:
    answer = server.post("/mutate", review(pod)).json()["response"]
    if "patch" not in answer:
        return pod
    patched: dict[str, object] = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"])))
    return patched


def count_of(pod: dict[str, object]) -> str | None:
    annotations = pod["metadata"].get("annotations") or {}  # type: ignore[attr-defined]
    value: str | None = annotations.get("kueue.x-k8s.io/pod-group-total-count")
    return value


def test_the_agent_runs_beside_the_workers_and_readiness_is_its(server: RunningServer) -> None:
    (agent,) = wait_until(lambda: agent_pids(server.process.pid), message="the agent")
    assert len(server.worker_pids()) == 2
    for _ in range(6):  # whichever worker answers
        body = server.get("/readyz").json()
        assert body == {"status": "ready", "reason": "ready"} or body.get("details") is not None
    assert agent not in server.worker_pids()


def test_pods_get_their_gang_from_what_the_agent_published(cluster: EmulatedCluster, server: RunningServer) -> None:
    stored = cluster.create(raycluster("rc", worker_group("small-group", 2), namespace="team"))
    lists = cluster.requests("list", RAYCLUSTERS)
    watches = cluster.requests("watch", RAYCLUSTERS)
    wait_until(lambda: count_of(mutated(server, pod_of(stored))) == "3", message="the published owner")
    for _ in range(10):  # both workers, no API request per pod
        assert count_of(mutated(server, pod_of(stored, "worker", "small-group"))) == "3"
    assert cluster.requests("list", RAYCLUSTERS) == lists and cluster.requests("watch", RAYCLUSTERS) == watches
    # One agent watches the RayClusters, however many workers the server has.
    assert cluster.watchers(RAYCLUSTERS) == 1


def test_a_dead_agent_is_restarted_and_its_state_comes_back(cluster: EmulatedCluster, server: RunningServer) -> None:
    (agent,) = wait_until(lambda: agent_pids(server.process.pid), message="the agent")
    os.kill(agent, signal.SIGKILL)
    restarted = wait_until(lambda: [p for p in agent_pids(server.process.pid) if p != agent], timeout=15,
                           message="a new agent")  # fmt: skip
    assert restarted and agent not in restarted
    stored = cluster.create(raycluster("after", worker_group("small-group", 4), namespace="team"))
    wait_until(lambda: count_of(mutated(server, pod_of(stored))) == "5", timeout=15, message="the new agent's state")
    assert server.get("/readyz").status_code == 200


def test_metrics_include_the_agents(server: RunningServer) -> None:
    text = server.get("/metrics").text
    assert 'karta_admission_cluster_synced{resource="RayCluster.ray.io"} 1.0' in text


def test_stopping_the_server_stops_the_agent(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with serving(KUEUE, kubeconfig=cluster.kubeconfig(tmp_path), workers=1) as running:
        (agent,) = wait_until(lambda: agent_pids(running.process.pid), message="the agent")
    wait_until(lambda: not Path(f"/proc/{agent}").exists() or "Z" in _state(agent), message="the agent gone")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
