"""The cluster edge against a real API server: Karta watch, self-managed certificates, leader
election between two server processes, `karta-admission audit` and PolicyReports.

The product runs as `karta-admission serve` / `audit` subprocesses with KUBECONFIG pointing at the
test API server; the tests look at what lands there (Secrets, caBundles, Leases, PolicyReports) and
at what the API server answers when it calls the webhook. (The emulator tests in tests/cluster
cover what a real server cannot be made to do: injected faults, expired watches, API errors.)
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook import certs

from . import chart, objects
from .cluster import MATCH_CONDITIONS_SINCE, ROOT, APIError, LocalAPIServer, wait_until
from .conftest import WebhookConfigurations, chart_identity, deploy_chart
from .product import WebhookServer, run_cli

# One server set per session, in one xdist worker (-n 2 --dist loadgroup).
pytestmark = [pytest.mark.apiserver, pytest.mark.xdist_group("apiserver")]

SAMPLES = ROOT / "docs" / "samples"
RELEASE_NAMESPACE = chart.NAMESPACE


def _get(apiserver: LocalAPIServer, *args: str) -> dict[str, Any]:
    result = apiserver.kubectl("get", *args, "-o", "json")
    assert result.returncode == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


# --- Karta definitions from the cluster ---


def _karta_max_one(name: str) -> dict[str, Any]:
    """The built-in RayCluster definition, except that every worker group's maximum reads 1."""
    karta: dict[str, Any] = yaml.safe_load((SAMPLES / "raycluster.yaml").read_text())
    karta["metadata"]["name"] = name
    [worker] = [c for c in karta["spec"]["structureDefinition"]["childComponents"] if c["name"] == "worker"]
    worker["scaleDefinition"]["maxReplicasPath"] = ".spec.workerGroupSpecs[]? | 1"
    return karta


def test_a_karta_in_the_cluster_replaces_the_built_in_definition(
    apiserver: LocalAPIServer, tls_dir: Path, tmp_path: Path, namespace: Callable[..., str]
) -> None:
    ns = namespace()
    name = f"raycluster-max-one-{ns}"
    with deploy_chart(apiserver, tls_dir, tmp_path, cluster=True) as deployed:
        cluster = objects.raycluster("two", ns, replicas=2, max_replicas=5)

        def verdict() -> tuple[int, str]:
            result = apiserver.kubectl("apply", "--dry-run=server", "-f", "-", stdin=objects.to_yaml(cluster))
            return result.returncode, result.output

        assert verdict()[0] == 0  # built-in definition: 2 is within [0, 5]
        karta = _karta_max_one(name)
        code, output = apiserver.apply(karta).outcome
        assert code == 0, output
        try:

            def denied() -> str:
                code, output = verdict()
                return output if code == 1 else ""

            output = wait_until(denied, timeout=20, message="the watched Karta to take effect")
            assert "replicas 2 is above maxReplicas 1" in output
            # An invalid version is refused and the last good one keeps serving.
            broken = copy.deepcopy(karta)
            [worker] = [c for c in broken["spec"]["structureDefinition"]["childComponents"] if c["name"] == "worker"]
            worker["scaleDefinition"]["replicasPath"] = "$ENV.HOME"
            code, output = apiserver.apply(broken).outcome
            assert code == 0, output  # the CRD's schema accepts any string; the webhook refuses it
            wait_until(lambda: f"Karta '{name}' refused; its last good version keeps serving"
                       in deployed.server.log_text(), timeout=20, message="the refusal in the log")  # fmt: skip
            assert "replicas 2 is above maxReplicas 1" in verdict()[1]
        finally:
            apiserver.kubectl("delete", "karta", name)
        # Deleted: back to the built-in definition.
        wait_until(lambda: verdict()[0] == 0, timeout=20, message="the built-in definition back")


# --- self-managed certificates ---


def _secret(apiserver: LocalAPIServer) -> dict[str, Any]:
    return _get(apiserver, "secret", "-n", RELEASE_NAMESPACE, "karta-admission-tls")


def _pem(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def _bundles(apiserver: LocalAPIServer) -> set[bytes]:
    """Every caBundle of the chart's two webhook configurations in the API server."""
    found = set()
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        for webhook in _get(apiserver, kind, "karta-admission")["webhooks"]:
            found.add(base64.b64decode(webhook["clientConfig"].get("caBundle") or ""))
    return found


def _served_serial(port: int) -> int:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return int(x509.load_pem_x509_certificate(pem.encode()).serial_number)


def _serial(pem: bytes) -> int:
    return int(x509.load_pem_x509_certificate(pem).serial_number)


def _replace_secret_data(
    apiserver: LocalAPIServer, data: dict[str, bytes], annotations: dict[str, str] | None = None
) -> None:
    secret = _secret(apiserver)
    secret["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    if annotations is not None:
        secret["metadata"]["annotations"] = annotations
    result = apiserver.kubectl("replace", "-f", "-", stdin=json.dumps(secret))
    assert result.returncode == 0, result.output


def test_self_managed_certificates_through_the_api_server(
    apiserver: LocalAPIServer, tmp_path: Path, namespace: Callable[..., str]
) -> None:
    """The chart's selfManaged mode: the server creates the Secret, writes caBundle into the real
    webhook configurations, and the API server then trusts it; renewal and a CA rotation (over
    server restarts, each start being one pass) keep the API server calling it without a failure."""
    apiserver.create_namespace(RELEASE_NAMESPACE)
    apiserver.kubectl("delete", "secret", "-n", RELEASE_NAMESPACE, "karta-admission-tls", "--ignore-not-found")
    rendered = chart.render(tmp_path / "helm")  # default values: certificates.mode selfManaged
    config = chart.server_config(rendered)
    self_managed = config["certificates"]["selfManaged"]
    assert (
        self_managed["validatingWebhookConfiguration"]
        == self_managed["mutatingWebhookConfiguration"]
        == "karta-admission"
    )
    # The two changes for this machine: files in a scratch directory, and the certificate's first
    # name `localhost` (the name the API server calls the URL by) instead of the Service's.
    self_managed.update(dir=str(tmp_path / "tls"), serviceName="localhost", caPropagationSeconds=2)
    kubeconfig = chart_identity(apiserver, rendered, tmp_path)  # the chart's ServiceAccount and RBAC
    server = WebhookServer(apiserver, tmp_path, "self-managed", config=config, args=["--log-level", "debug"],
                           env={"KUBECONFIG": str(kubeconfig)})  # fmt: skip
    configurations, _ = chart.for_local_server(
        chart.webhook_configurations(rendered), server.base_url, None, apiserver.minor < MATCH_CONDITIONS_SINCE
    )
    installed = WebhookConfigurations(apiserver)
    ns = namespace()
    counter = iter(range(1000))

    def called_and_trusted() -> bool:
        """A broken RayService is denied by our webhook: the API server reached it over verified TLS."""
        code, output = apiserver.apply(objects.rayservice(f"b-{next(counter)}", ns, replicas=5, max_replicas=2)).outcome
        return code == 1 and "[replicas-within-bounds]" in output

    try:
        installed.apply(configurations, witness=None)  # no caBundle yet: the server writes it
        assert _bundles(apiserver) == {b""}
        server.start()
        secret = _secret(apiserver)
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "karta-admission"
        ca = _pem(secret, "ca.crt")
        assert _bundles(apiserver) == {ca}
        assert certs.signed_by(_pem(secret, "tls.crt"), ca)
        assert _served_serial(server.port) == _serial(_pem(secret, "tls.crt"))
        wait_until(called_and_trusted, timeout=20, message="the API server to call the webhook with the new caBundle")
        server.stop()

        # Serving certificate near its end: renewed under the same CA, caBundle unchanged.
        ca_key = _pem(secret, "ca.key")
        names = certs.service_dns_names("localhost", RELEASE_NAMESPACE)
        old_cert, old_key = certs.make_serving_cert(ca, ca_key, names, days=10)
        _replace_secret_data(apiserver, {"ca.crt": ca, "ca.key": ca_key, "tls.crt": old_cert, "tls.key": old_key})
        server.start()
        renewed = _secret(apiserver)
        assert _serial(_pem(renewed, "tls.crt")) != _serial(old_cert)
        assert certs.cert_info(_pem(renewed, "tls.crt")).not_after - certs.cert_info(
            old_cert
        ).not_after > datetime.timedelta(days=300)
        assert _pem(renewed, "ca.crt") == ca and _bundles(apiserver) == {ca}
        assert _served_serial(server.port) == _serial(_pem(renewed, "tls.crt"))
        wait_until(called_and_trusted, timeout=20, message="the webhook trusted after renewal")
        server.stop()

        # CA near its end: its successor is published in caBundle first, ...
        ending_ca, ending_key = certs.make_ca(days=100)
        cert, key = certs.make_serving_cert(ending_ca, ending_key, names, days=90)
        _replace_secret_data(
            apiserver, {"ca.crt": ending_ca, "ca.key": ending_key, "tls.crt": cert, "tls.key": key}, {}
        )
        server.start()
        step1 = _secret(apiserver)
        next_ca = _pem(step1, "ca-next.crt")
        assert _bundles(apiserver) == {_pem(step1, "ca.crt") + next_ca}
        assert _pem(step1, "ca.crt") == ending_ca
        assert certs.signed_by(_pem(step1, "tls.crt"), ending_ca)
        wait_until(called_and_trusted, timeout=20, message="trusted with two CAs in caBundle")
        server.stop()
        time.sleep(2.5)  # caPropagationSeconds
        # ... then signs the serving certificate, the old CA staying in caBundle for a while, ...
        server.start()
        step2 = _secret(apiserver)
        assert _pem(step2, "ca.crt") == next_ca and _pem(step2, "ca-previous.crt") == ending_ca
        assert certs.signed_by(_pem(step2, "tls.crt"), next_ca)
        assert _bundles(apiserver) == {next_ca + ending_ca}
        wait_until(called_and_trusted, timeout=20, message="trusted after the switch to the new CA")
        server.stop()
        time.sleep(2.5)
        # ... and leaves it.
        server.start()
        step3 = _secret(apiserver)
        assert "ca-previous.crt" not in step3["data"]
        assert _bundles(apiserver) == {next_ca}
        wait_until(called_and_trusted, timeout=20, message="trusted with the new CA alone")
    finally:
        installed.remove()
        server.stop()


# --- periodic audit: leader election between two servers, PolicyReports ---


def _lease_holder(apiserver: LocalAPIServer, ns: str) -> str:
    """The Lease's holder, read with the kubernetes Python client's typed API."""
    try:
        lease = k8s.CoordinationV1Api(apiserver.client()).read_namespaced_lease("karta-admission-leader", ns)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str((lease.spec and lease.spec.holder_identity) or "")


def _holder_pid(holder: str) -> int:
    return int(holder.rsplit("-", 1)[1]) if holder else 0


def _reports(apiserver: LocalAPIServer, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _get(apiserver, "policyreports.wgpolicyk8s.io", "-n", ns)["items"]
    return items


def test_two_servers_elect_one_auditor_and_hand_over_on_stop(
    apiserver: LocalAPIServer, tls_dir: Path, tmp_path: Path, namespace: Callable[..., str]
) -> None:
    # The chart's Role allows the Lease in the release namespace only.
    lease_ns, ns = RELEASE_NAMESPACE, namespace()
    code, output = apiserver.apply(objects.raycluster("audited", ns, replicas=5, max_replicas=2)).outcome
    assert code == 0, output  # no webhook configuration in this test: stored as is
    provided = {"secretName": "x", "caBundle": (tls_dir / "ca.crt").read_text()}
    rendered = chart.render(tmp_path / "helm", {
        "certificates": {"mode": "provided", "provided": provided},
        "cluster": {"auditIntervalSeconds": 2, "auditNamespaces": [ns], "policyReports": True},
    })  # fmt: skip
    config = chart.server_config(rendered)
    kubeconfig = chart_identity(apiserver, rendered, tmp_path)
    with contextlib.suppress(APIError):
        apiserver.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{lease_ns}/leases/karta-admission-leader")
    servers = [
        WebhookServer(
            apiserver,
            tmp_path,
            name,
            config=config,
            tls_dir=tls_dir,
            env={"POD_NAMESPACE": lease_ns, "KUBECONFIG": str(kubeconfig)},
        )
        for name in ("a", "b")
    ]
    try:
        first, second = servers
        first.start()
        holder = wait_until(lambda: _lease_holder(apiserver, lease_ns), timeout=30, message="a lease holder")
        assert _holder_pid(holder) in first.pids()
        second.start()
        # The leader's audit writes the report of the broken object.
        [report] = wait_until(lambda: _reports(apiserver, ns), timeout=30, message="the PolicyReport")
        assert report["scope"]["name"] == "audited"
        time.sleep(3)  # more than a retry period: the second server does not take over
        assert _lease_holder(apiserver, lease_ns) == holder
        # The leader stops: it releases the lease and the other server takes over at once.
        stopped_at = time.monotonic()
        first.stop()

        def other_holder() -> str:
            current = _lease_holder(apiserver, lease_ns)
            return current if current != holder else ""

        new_holder = wait_until(other_holder, timeout=20, message="the second server to take the lease")
        takeover = time.monotonic() - stopped_at
        assert _holder_pid(new_holder) in second.pids()
        assert takeover < 10, takeover  # well inside the 15 s lease: released, not expired
        # The new leader audits: fixing the object turns its report to pass.
        code, output = apiserver.apply(objects.raycluster("audited", ns, replicas=2, max_replicas=2)).outcome
        assert code == 0, output
        wait_until(lambda: _reports(apiserver, ns)[0]["summary"]["fail"] == 0, timeout=30,
                   message="the report updated by the new leader")  # fmt: skip
    finally:
        for server in servers:
            server.stop()


def test_audit_command_and_policy_reports(apiserver: LocalAPIServer, namespace: Callable[..., str]) -> None:
    ns = namespace()
    broken = objects.rayservice("broken", ns, replicas=5, max_replicas=2)
    warned = objects.raycluster("gpu-head", ns, head_gpus=1)
    fine = objects.rayjob("fine", ns)
    code, output = apiserver.apply(broken, warned, fine).outcome
    assert code == 0, output
    service = _get(apiserver, "rayservice", "-n", ns, "broken")
    # A RayCluster controlled by the RayService (as KubeRay creates it) is checked through its owner.
    child = objects.raycluster("broken-child", ns, replicas=5, max_replicas=2)
    child["metadata"]["ownerReferences"] = [{"apiVersion": "ray.io/v1", "kind": "RayService", "name": "broken",
                                             "uid": service["metadata"]["uid"], "controller": True}]  # fmt: skip
    code, output = apiserver.apply(child).outcome
    assert code == 0, output

    text = run_cli(apiserver, "audit", "-n", ns)
    assert text.returncode == 1, text.output
    assert f"RayService {ns}/broken: DENIED" in text.stdout
    assert text.stdout.rstrip().endswith(
        "3 objects checked: 1 denied, 1 allowed with warnings, 1 allowed; "
        "1 RayCluster owned by a RayService skipped (checked through the owner)"
    ), text.stdout
    as_json = run_cli(apiserver, "audit", "-n", ns, "-o", "json")
    results = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert set(results) == {"broken", "gpu-head", "fine"}
    assert not results["broken"]["allowed"] and results["gpu-head"]["allowed"] and results["fine"]["allowed"]
    assert [v["rule"] for v in results["gpu-head"]["violations"]] == ["gpu-on-head", "gpu-toleration"]

    written = run_cli(apiserver, "audit", "-n", ns, "--policy-reports")
    assert written.returncode == 1
    assert "PolicyReports: 3 created, 0 updated, 0 unchanged, 0 stale deleted" in written.stderr
    reports = {r["scope"]["name"]: r for r in _reports(apiserver, ns)}
    assert set(reports) == {"broken", "gpu-head", "fine"}
    report = reports["broken"]
    assert report["metadata"]["name"] == f"karta-admission-{service['metadata']['uid']}"
    assert report["metadata"]["ownerReferences"][0]["uid"] == service["metadata"]["uid"]
    [failed] = [r for r in report["results"] if r["result"] == "fail"]
    # Every field survived the CRD's pruning: what Policy Reporter reads is what we wrote.
    assert failed["rule"] == "replicas-within-bounds" and failed["severity"] == "high" and failed["scored"] is True
    assert failed["source"] == failed["policy"] == "karta-admission" and failed["category"] == "Replicas"
    assert failed["properties"]["path"] == "spec.rayClusterConfig.workerGroupSpecs[0].replicas"
    assert set(failed["timestamp"]) == {"seconds", "nanos"}
    assert report["summary"]["fail"] == 1 and report["summary"]["pass"] > 0
    assert {r["result"] for r in reports["gpu-head"]["results"]} == {"warn", "pass"}

    # A second run changes nothing; fixing and deleting objects update and remove their reports.
    again = run_cli(apiserver, "audit", "-n", ns, "--policy-reports")
    assert "PolicyReports: 0 created, 0 updated, 3 unchanged, 0 stale deleted" in again.stderr
    code, output = apiserver.apply(objects.rayservice("broken", ns, replicas=2, max_replicas=2)).outcome
    assert code == 0, output
    assert apiserver.kubectl("delete", "rayjob", "-n", ns, "fine").returncode == 0
    last = run_cli(apiserver, "audit", "-n", ns, "--policy-reports")
    assert last.returncode == 0, last.output
    assert "PolicyReports: 0 created, 1 updated, 1 unchanged, 1 stale deleted" in last.stderr
    reports = {r["scope"]["name"]: r for r in _reports(apiserver, ns)}
    assert set(reports) == {"broken", "gpu-head"}
    assert reports["broken"]["summary"]["fail"] == 0


# --- the chart's RBAC, checked by the real authorizer ---


def test_the_charts_service_account_may_do_what_the_server_needs_and_nothing_else(
    apiserver: LocalAPIServer, tmp_path: Path
) -> None:
    """Every feature on (self-managed certificates, periodic audit with PolicyReports): what the
    server's code does is allowed (the tests above run with this identity), the rest is not."""
    rendered = chart.render(tmp_path / "helm", {"cluster": {"auditIntervalSeconds": 60, "policyReports": True}})
    kubeconfig = chart_identity(apiserver, rendered, tmp_path)

    def can(*args: str) -> bool:
        result = apiserver.kubectl("--kubeconfig", str(kubeconfig), "auth", "can-i", *args)
        assert result.stdout.strip() in {"yes", "no"}, result.output
        return result.stdout.strip() == "yes"

    ns = RELEASE_NAMESPACE
    allowed = [
        ("watch", "kartas.run.ai"), ("list", "rayclusters.ray.io", "-A"), ("watch", "rayservices.ray.io", "-A"),
        ("create", "secrets", "-n", ns), ("update", "secret/karta-admission-tls", "-n", ns),
        ("update", "validatingwebhookconfigurations/karta-admission"),
        ("patch", "mutatingwebhookconfigurations/karta-admission"),
        ("create", "leases.coordination.k8s.io", "-n", ns), ("update", "leases/karta-admission-leader", "-n", ns),
        ("create", "policyreports.wgpolicyk8s.io", "-n", "team-a"), ("delete", "policyreports.wgpolicyk8s.io", "-A"),
    ]  # fmt: skip
    refused = [
        ("get", "secret/other", "-n", ns), ("list", "secrets", "-n", ns), ("get", "secrets", "-n", "default"),
        ("update", "validatingwebhookconfigurations/someone-elses"), ("create", "validatingwebhookconfigurations"),
        ("create", "rayclusters.ray.io", "-n", "default"), ("update", "leases/other", "-n", ns),
        ("create", "leases.coordination.k8s.io", "-n", "default"), ("create", "pods", "-n", "default"),
        ("update", "kartas.run.ai"),
    ]  # fmt: skip
    assert [a for a in allowed if not can(*a)] == []
    assert [r for r in refused if can(*r)] == []
