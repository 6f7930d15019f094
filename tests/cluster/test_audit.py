"""`karta-admission audit`, PolicyReports and the leader-elected periodic audit, against the API emulator."""

from __future__ import annotations

import copy
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.agents import AgentRun
from tests.cluster.emulator import (
    LEASES,
    POLICYREPORTS,
    RAY,
    RAYCLUSTERS,
    RAYSERVICES,
    EmulatedCluster,
    metric,
    raycluster,
    raycluster_karta,
    wait_until,
    worker_group,
)
from tests.corpus import ray_objects
from webhook.cli import main
from webhook.cli.audit import exit_status
from webhook.cli.render import Progress
from webhook.cluster import client as kube
from webhook.cluster.audit import run_audit
from webhook.cluster.leader import LeaseElector, LeaseTimings
from webhook.cluster.reports import MANAGED_BY, MANAGED_BY_LABEL, ObjectRef, PolicyReportWriter, report_name
from webhook.config import Config, build_evaluator, parse_config
from webhook.karta.registry import DefinitionSet

FAST_LEASE = LeaseTimings(lease_duration_seconds=2, renew_deadline_seconds=1.0, retry_period_seconds=0.1)
CORPUS_NAMESPACES = ("corpus-a", "corpus-b", "corpus-c")


def broken(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its first worker group asking for more replicas than its maximum (denied)."""
    obj = copy.deepcopy(obj)
    spec = obj["spec"]
    cluster_spec = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    cluster_spec["workerGroupSpecs"][0].update(replicas=10, minReplicas=0, maxReplicas=5)
    return obj


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def corpus_cluster() -> Iterator[tuple[EmulatedCluster, list[dict[str, Any]]]]:
    """KubeRay's samples spread over three namespaces, plus broken variants and owned clusters."""
    with EmulatedCluster() as cluster:
        stored = []
        for index, (_, sample) in enumerate(ray_objects()):
            obj = copy.deepcopy(sample)
            meta = obj["metadata"]
            meta["namespace"] = CORPUS_NAMESPACES[index % 3]
            if meta.get("name"):
                meta["name"] = f"{meta['name']}-{index}"
            stored.append(cluster.create(obj))
        samples = {o["kind"]: o for o in stored}
        for kind in ("RayService", "RayCluster"):
            obj = broken(samples[kind])
            obj["metadata"] = {"name": f"broken-{kind.lower()}", "namespace": "broken"}
            stored.append(cluster.create(obj))
        # A RayService with the RayCluster KubeRay made for it: checked once, through the service.
        service = cluster.create(
            {**copy.deepcopy(samples["RayService"]), "metadata": {"name": "svc", "namespace": "owned"}}
        )
        stored.append(service)
        stored.append(
            cluster.create(broken(raycluster("svc-x7k2p", worker_group("w", 1), namespace="owned", owner=service)))
        )
        yield cluster, stored


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_one_result_per_object_with_the_checks_verdict(
    corpus_cluster: tuple[EmulatedCluster, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, stored = corpus_cluster
    code, out, err = audit(capsys, "-o", "json", "--kubeconfig", str(cluster.kubeconfig(tmp_path)))
    results = json.loads(out)
    assert code == 1, err  # the broken variants would be denied
    evaluator = build_evaluator(Config(), DefinitionSet.builtin())
    expected = {}
    for obj in stored:
        if obj["metadata"]["name"] == "svc-x7k2p":
            continue  # owned by the RayService: not reported on its own
        verdict = evaluator.verdict(obj)
        assert verdict is not None
        expected[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = {
            "apiVersion": "ray.io/v1",
            "kind": obj["kind"],
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "allowed": verdict.allowed,
            "definition": verdict.definition,
            "violations": [v.as_dict() for v in verdict.violations],
        }
    assert {(r["kind"], r["namespace"], r["name"]): r for r in results} == expected
    assert len(results) == len(list(ray_objects())) + 3
    denied = sorted((r["kind"], r["namespace"], r["name"]) for r in results if not r["allowed"])
    assert denied == [("RayCluster", "broken", "broken-raycluster"), ("RayService", "broken", "broken-rayservice")]


def test_text_lists_the_problems_and_sums_up(
    corpus_cluster: tuple[EmulatedCluster, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, _ = corpus_cluster
    code, out, err = audit(capsys, "--kubeconfig", str(cluster.kubeconfig(tmp_path)), "-n", "broken", "-n", "owned")
    assert code == 1, err
    assert out == (
        "RayCluster broken/broken-raycluster: DENIED\n"
        "  deny  replicas-within-bounds  spec.workerGroupSpecs[0].replicas\n"
        f"        {denial_message(cluster, 'broken-raycluster')}\n"
        "RayService broken/broken-rayservice: DENIED\n"
        "  deny  replicas-within-bounds  spec.rayClusterConfig.workerGroupSpecs[0].replicas\n"
        f"        {denial_message(cluster, 'broken-rayservice')}\n"
        "3 objects checked: 2 denied, 0 allowed with warnings, 1 allowed; "
        "1 RayCluster owned by a RayService skipped (checked through the owner)\n"
    )
    assert "RayCluster owned/svc-x7k2p" not in out  # its problem is its owner's to report


def denial_message(cluster: EmulatedCluster, name: str) -> str:
    obj = next(o for kind in RAY for o in cluster.objects(kind) if o["metadata"]["name"] == name)
    verdict = build_evaluator(Config(), DefinitionSet.builtin()).verdict(obj)
    assert verdict is not None
    return verdict.violations[0].message


def test_exit_codes(
    corpus_cluster: tuple[EmulatedCluster, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, _ = corpus_cluster
    kubeconfig = str(cluster.kubeconfig(tmp_path))
    namespaces = [arg for ns in CORPUS_NAMESPACES for arg in ("-n", ns)]
    code, out, _ = audit(capsys, "--kubeconfig", kubeconfig, *namespaces)
    assert code == 0  # KubeRay's own samples: nothing would be denied
    assert out.splitlines()[-1].startswith(f"{len(list(ray_objects()))} objects checked: 0 denied, ")
    assert audit(capsys, "--kubeconfig", kubeconfig, "-n", "broken")[0] == 1
    assert audit(capsys, "--kubeconfig", kubeconfig, "-n", "broken", "--mode", "audit")[0] == 0  # nothing denied

    dead = f"http://127.0.0.1:{free_port()}"
    code, out, err = audit(
        capsys, "--kubeconfig", str(cluster.kubeconfig(tmp_path, extra_contexts={"dead": dead})), "--context", "dead"
    )
    assert code == 2
    assert out == ""
    assert err.startswith(f"karta-admission: cannot reach the Kubernetes API server at {dead}: ")
    # --context picks the cluster: the same file with the live context works.
    assert audit(capsys, "--kubeconfig", kubeconfig, "--context", "emulator", "-n", "broken")[0] == 1

    code, _, err = audit(capsys, "--kubeconfig", str(tmp_path / "missing"))
    assert code == 2
    assert err == f"karta-admission: kubeconfig {tmp_path / 'missing'} does not exist\n"


def test_no_cluster_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    with pytest.raises(kube.NoClusterConfigured, match="no Kubernetes cluster configured"):
        kube.load_api_client()
    code, _, err = audit(capsys)
    assert code == 2
    assert "no Kubernetes cluster configured" in err
    (tmp_path / "bad").write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(kube.ClusterConfigError):
        kube.load_api_client(tmp_path / "bad", "nowhere")


def test_paginated_listing_progress_and_kinds_not_served() -> None:
    with EmulatedCluster([RAYCLUSTERS, RAYSERVICES]) as cluster:  # no RayJob CRD
        for i in range(23):
            cluster.create(raycluster(f"rc{i:02}", worker_group("w", 1), namespace=f"ns{i % 2}"))
        evaluator = build_evaluator(Config(), DefinitionSet.builtin())
        stream = _TerminalStream()
        progress = Progress(stream, every=10)
        lists = cluster.requests("list", RAYCLUSTERS)
        report = run_audit(cluster.client(), evaluator, page_size=5, progress=progress)
        progress.done()
        assert cluster.requests("list", RAYCLUSTERS) - lists == 5  # 5 + 5 + 5 + 5 + 3
        assert len(report.checked) == 23
        assert [c.ref.name for c in report.checked] == sorted(f"rc{i:02}" for i in range(23) if i % 2 == 0) + sorted(
            f"rc{i:02}" for i in range(23) if i % 2 == 1
        )
        assert [str(k) for k in report.not_served] == ["ray.io/v1 RayJob"]
        assert exit_status(report) == 0
        assert stream.getvalue() == "\rchecked 10 objects...\rchecked 20 objects...\n"
        quiet = io.StringIO()  # not a terminal, small cluster: no progress at all
        run_audit(cluster.client(), evaluator, progress=Progress(quiet, every=10))
        assert quiet.getvalue() == ""


class _TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- PolicyReports ---


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


def reports(cluster: EmulatedCluster) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in cluster.objects(POLICYREPORTS)}


def writes(cluster: EmulatedCluster) -> int:
    return sum(cluster.requests(action, POLICYREPORTS) for action in ("create", "update", "delete"))


def test_policy_reports_are_written_updated_and_cleaned(
    cluster: EmulatedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = cluster.create(raycluster("clean", worker_group("w", 1), namespace="team"))
    bad = cluster.create(broken(raycluster("bad", worker_group("w", 1), namespace="team")))
    foreign = cluster.create({
        "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "someone-elses", "namespace": "team"}, "results": [],
    })  # fmt: skip
    kubeconfig = str(cluster.kubeconfig(tmp_path))

    code, _, err = audit(capsys, "--kubeconfig", kubeconfig, "--policy-reports")
    assert code == 1
    assert err.endswith("karta-admission: PolicyReports: 2 created, 0 updated, 0 unchanged, 0 stale deleted\n")
    written = reports(cluster)
    assert set(written) == {report_name(ObjectRef.of(clean)), report_name(ObjectRef.of(bad)), "someone-elses"}
    report = written[report_name(ObjectRef.of(bad))]
    assert report["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert report["metadata"]["ownerReferences"] == [
        {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "bad", "uid": bad["metadata"]["uid"]}
    ]
    assert report["scope"] == {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "namespace": "team", "name": "bad",
        "uid": bad["metadata"]["uid"],
    }  # fmt: skip
    (failed,) = [r for r in report["results"] if r["result"] == "fail"]
    assert failed["policy"] == "karta-admission"
    assert failed["rule"] == "replicas-within-bounds"
    assert failed["severity"] == "high"
    assert failed["properties"]["path"] == "spec.workerGroupSpecs[0].replicas"
    assert failed["message"].startswith('worker group "w": replicas 10 is above maxReplicas 5')
    assert set(failed["timestamp"]) == {"seconds", "nanos"}
    assert report["summary"]["fail"] == 1
    assert report["summary"]["pass"] == sum(1 for r in report["results"] if r["result"] == "pass") > 5
    clean_report = written[report_name(ObjectRef.of(clean))]
    assert {r["result"] for r in clean_report["results"]} == {"pass"}
    assert clean_report["summary"]["fail"] == clean_report["summary"]["warn"] == 0

    # Nothing changed: nothing is written.
    before = writes(cluster)
    assert audit(capsys, "--kubeconfig", kubeconfig, "--policy-reports")[0] == 1
    assert writes(cluster) == before

    # Fixed: its report is updated. Deleted: its report goes. The foreign report stays.
    cluster.patch(bad, {"spec": raycluster("bad", worker_group("w", 1))["spec"]})
    cluster.delete(clean)
    code, _, err = audit(capsys, "--kubeconfig", kubeconfig, "--policy-reports")
    assert code == 0
    assert err.endswith("PolicyReports: 0 created, 1 updated, 0 unchanged, 1 stale deleted\n")
    written = reports(cluster)
    assert set(written) == {report_name(ObjectRef.of(bad)), "someone-elses"}
    assert written[report_name(ObjectRef.of(bad))]["summary"]["fail"] == 0
    assert written["someone-elses"]["metadata"]["uid"] == foreign["metadata"]["uid"]


def test_policy_reports_without_their_crd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EmulatedCluster(RAY) as cluster:
        cluster.create(raycluster("rc", worker_group("w", 1)))
        code, out, err = audit(capsys, "--kubeconfig", str(cluster.kubeconfig(tmp_path)), "--policy-reports")
        assert code == 2
        assert out == ""
        assert "does not serve wgpolicyk8s.io/v1alpha2 PolicyReport (CRD not installed)" in err
        assert "run without --policy-reports" in err


def test_the_audit_uses_the_clusters_kartas(
    cluster: EmulatedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.create(raycluster("rc", worker_group("w", 1)))
    cluster.create(raycluster_karta("site-raycluster"))
    broken_karta = raycluster_karta("broken-karta")
    broken_karta["spec"]["structureDefinition"]["rootComponent"]["ownerRef"] = "head"
    cluster.create(broken_karta)
    code, out, err = audit(capsys, "-o", "json", "--kubeconfig", str(cluster.kubeconfig(tmp_path)))
    assert code == 0
    (result,) = json.loads(out)
    assert result["definition"] == "site-raycluster"
    assert "note: Karta 'broken-karta' refused: root component cannot have owner ref" in err


def test_report_writer_keeps_reports_of_kinds_whose_listing_failed(cluster: EmulatedCluster) -> None:
    rc = cluster.create(raycluster("rc", worker_group("w", 1)))
    config = Config()
    evaluator = build_evaluator(config, DefinitionSet.builtin())
    writer = PolicyReportWriter(cluster.client(), config)
    verdict = evaluator.verdict(rc)
    assert verdict is not None
    assert writer.sync([(ObjectRef.of(rc), verdict)]).created == 1
    cluster.fail_next("list", RAYCLUSTERS)
    report = run_audit(cluster.client(), evaluator)
    assert exit_status(report) == 2
    assert report.errors == ["ray.io/v1 RayCluster: cannot list: 500 Internal Server Error: injected 500"]
    stats = writer.sync(((a.ref, a.verdict) for a in report.checked), keep_kinds=report.failed_kinds)
    assert stats.deleted == 0
    assert len(reports(cluster)) == 1


# --- leader election and the periodic audit ---


def elector(
    cluster: EmulatedCluster, identity: str, events: list[str], timings: LeaseTimings = FAST_LEASE
) -> LeaseElector:
    return LeaseElector(
        cluster.client(), "karta-system", "karta-admission-audit", identity, timings=timings,
        on_started_leading=lambda: events.append(f"{identity} leads"),
        on_stopped_leading=lambda: events.append(f"{identity} stops"),
    )  # fmt: skip


def test_of_two_candidates_one_leads_and_hands_over_on_stop(cluster: EmulatedCluster) -> None:
    events: list[str] = []
    # A long lease: taking over well within it shows the stopping leader released it.
    timings = LeaseTimings(lease_duration_seconds=5, renew_deadline_seconds=3.0, retry_period_seconds=0.1)
    first, second = elector(cluster, "a", events, timings), elector(cluster, "b", events, timings)
    first.start()
    second.start()
    try:
        leader = wait_until(lambda: next((e for e in (first, second) if e.is_leader), None))
        follower = second if leader is first else first
        renewals = cluster.requests(None, LEASES, method="put")
        wait_until(lambda: cluster.requests(None, LEASES, method="put") >= renewals + 5, message="renewals")
        assert not follower.is_leader
        assert events == [f"{leader.identity} leads"]
        (lease,) = cluster.objects(LEASES)
        assert lease["spec"]["holderIdentity"] == leader.identity
        assert lease["metadata"]["namespace"] == "karta-system"

        leader.stop()  # releases the lease: the follower takes over well before it would expire
        wait_until(lambda: follower.is_leader, timeout=timings.lease_duration_seconds - 1)
        assert events == [f"{leader.identity} leads", f"{leader.identity} stops", f"{follower.identity} leads"]
        (lease,) = cluster.objects(LEASES)
        assert lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        first.stop()
        second.stop()


def test_a_silent_holder_is_replaced_after_the_lease_duration_and_a_leader_that_cannot_renew_steps_down(
    cluster: EmulatedCluster,
) -> None:
    # A lease held by a replica that died without releasing it.
    cluster.create({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "karta-admission-audit", "namespace": "karta-system"},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2, "leaseTransitions": 0,
                 "acquireTime": "2025-01-01T00:00:00.000000Z", "renewTime": "2025-01-01T00:00:00.000000Z"},
    })  # fmt: skip
    events: list[str] = []
    candidate = elector(cluster, "b", events)
    started = time.monotonic()
    candidate.start()
    try:
        wait_until(lambda: candidate.is_leader, timeout=5)
        # Its own clock decides: it waited a whole lease duration after first seeing the record.
        assert time.monotonic() - started >= FAST_LEASE.lease_duration_seconds
        (lease,) = cluster.objects(LEASES)
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1

        cluster.fail_next(None, LEASES, 500, times=10_000, method="put")  # renewals now fail
        wait_until(lambda: not candidate.is_leader, timeout=3, message="the leader to step down")
        assert events == ["b leads", "b stops"]
    finally:
        candidate.stop()


AUDIT_CONFIG = {"cluster": {"auditIntervalSeconds": 1, "policyReports": True}}


def test_only_the_leader_audits_and_writes_reports(cluster: EmulatedCluster, tmp_path: Path) -> None:
    """Two replicas' agents: the one holding the Lease audits; when it stops, the other takes over."""
    cluster.create(broken(raycluster("bad", worker_group("w", 1), namespace="team")))
    config = parse_config(AUDIT_CONFIG, "test")
    runs = metric("karta_admission_audit_runs_total", outcome="denied")
    with (
        AgentRun(cluster, config, tmp_path / "a", identity="a") as first,
        AgentRun(cluster, config, tmp_path / "b", identity="b") as second,
    ):
        agents = (first.agent, second.agent)
        leader = wait_until(lambda: next((a for a in agents if a.is_leader), None), message="a leader")
        other = agents[1] if leader is agents[0] else agents[0]
        assert leader.audit is not None and other.audit is not None
        wait_until(lambda: leader.audit.runs >= 2, message="two runs")
        assert other.audit.runs == 0 and not other.audit.running
        assert leader.audit.last_report is not None and leader.audit.last_report.denied == 1
        assert metric("karta_admission_audit_runs_total", outcome="denied") >= runs + 2
        assert [r["scope"]["name"] for r in cluster.objects(POLICYREPORTS)] == ["bad"]
        assert cluster.requests("create", POLICYREPORTS) == 1  # later runs found nothing to change
        leader.stop()  # releases the Lease
        wait_until(lambda: other.is_leader and other.audit is not None and other.audit.runs >= 1,
                   message="the other replica takes over")  # fmt: skip
