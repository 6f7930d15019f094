"""Validation through a real kube-apiserver: what `kubectl` shows when the webhook denies, warns or
audits, server-side dry runs, updates of objects admitted before the webhook, and deletes.

The webhook configurations are the chart's own (`helm template`, default values, global mode
enforce), served by `karta-admission serve` with the configuration the chart renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import ray_objects

from . import objects
from .cluster import CEL_IN_CRDS_SINCE, NO_CRD_CEL, APIError, LocalAPIServer, wait_until
from .conftest import ChartDeployment, deploy_chart, wait_validated
from .objects import MODE_LABEL
from .product import run_cli

# One server set per session, in one xdist worker (-n 2 --dist loadgroup).
pytestmark = [pytest.mark.apiserver, pytest.mark.xdist_group("apiserver")]

# One HTTP Warning header per webhook warning: 299 - "[rule-id] path: message"
WARNING_RULE = re.compile(r'299 - "\[([a-z0-9-]+)\]')


@pytest.fixture(scope="module")
def deployment(
    apiserver: LocalAPIServer, tls_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartDeployment]:
    with deploy_chart(apiserver, tls_dir, tmp_path_factory.mktemp("validating")) as deployed:
        yield deployed


def _apply(apiserver: LocalAPIServer, *documents: dict[str, Any], extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    result = apiserver.apply(*documents, extra=extra)
    return result.returncode, result.stdout, result.stderr


def _exists(apiserver: LocalAPIServer, kind: str, namespace: str, name: str) -> bool:
    return apiserver.kubectl("get", kind.lower(), "-n", namespace, name).returncode == 0


@pytest.mark.parametrize("kind", ["RayService", "RayCluster", "RayJob"])
def test_a_broken_ray_object_is_denied_with_kubectls_message_and_exit_code(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str], kind: str, tmp_path: Path
) -> None:
    ns = namespace()
    broken = objects.BUILDERS[kind]("too-many", ns, replicas=5, min_replicas=1, max_replicas=2)
    code, out, err = _apply(apiserver, broken)
    path = objects.WORKER_PATH[kind]
    expected = (
        f'The {kind} "too-many" is invalid: {path}.replicas: worker group "small-group": replicas 5 is '
        "above maxReplicas 2; KubeRay would run 2 [replicas-within-bounds]"
    )
    assert code == 1, out + err
    assert expected in err
    assert not _exists(apiserver, kind, ns, "too-many")
    # The offline check gives the same verdict and message for the same file.
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(objects.to_yaml(broken))
    check = run_cli(apiserver, "check", "-o", "json", str(manifest))
    assert check.returncode == 1, check.output
    [result] = json.loads(check.stdout)
    [violation] = [v for v in result["violations"] if v["severity"] == "deny"]
    assert f"{violation['path']}: {violation['message']} [{violation['rule']}]" in err


def test_warnings_reach_kubectl_and_the_object_is_created(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace()
    code, out, err = _apply(apiserver, objects.rayservice("gpu-head", ns, head_gpus=1))
    assert code == 0, err
    assert "rayservice.ray.io/gpu-head created" in out
    assert "Warning: [gpu-on-head] spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].resources:" in err
    assert _exists(apiserver, "RayService", ns, "gpu-head")


def test_server_side_dry_run_is_judged_and_nothing_is_stored(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace()
    code, _, err = _apply(apiserver, objects.raycluster("dry-bad", ns, replicas=5, max_replicas=2),
                          extra=("--dry-run=server",))  # fmt: skip
    assert code == 1
    assert 'The RayCluster "dry-bad" is invalid: spec.workerGroupSpecs[0].replicas:' in err
    code, out, _ = _apply(apiserver, objects.raycluster("dry-good", ns), extra=("--dry-run=server",))
    assert code == 0
    assert "raycluster.ray.io/dry-good created (server dry run)" in out
    assert not _exists(apiserver, "RayCluster", ns, "dry-good")
    # The API server told the webhook it was a dry run (sideEffects: None makes that allowed).
    lines = [json.loads(line) for line in deployment.server.reviews() if '"dry-bad"' in line or '"dry-good"' in line]
    assert lines and all(line["dry_run"] is True for line in lines)


def test_the_api_server_applies_crd_defaults_before_the_webhook_sees_the_object(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """No minReplicas/maxReplicas in the object: KubeRay's CRD defaults them (0 and 2147483647)
    and the webhook judges the defaulted object, so replicas 3 is within bounds. (The CRD also
    lists them as required, which the API server checks after defaulting; kubectl's client-side
    schema check does not default and would refuse the file, hence --validate=false.)"""
    ns = namespace()
    cluster = objects.raycluster("defaulted", ns, replicas=3)
    del cluster["spec"]["workerGroupSpecs"][0]["minReplicas"]
    del cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    code, _, err = _apply(apiserver, cluster, extra=("--validate=false",))
    assert code == 0, err
    review = [json.loads(x) for x in deployment.server.reviews() if '"name":"defaulted"' in x]
    assert review and review[-1]["verdict"] == "allowed"
    stored = json.loads(apiserver.kubectl("get", "raycluster", "-n", ns, "defaulted", "-o", "json").stdout)
    group = stored["spec"]["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["maxReplicas"]) == (0, 2147483647)


def test_update_of_an_object_admitted_before_the_webhook(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    # The namespace is `off` while the broken object is created: no webhook entry matches it, so
    # it is stored as it would have been before the webhook was installed.
    ns = namespace(labels={MODE_LABEL: "off"})
    legacy = objects.raycluster("legacy", ns, replicas=5, max_replicas=2)
    code, _, err = _apply(apiserver, legacy)
    assert code == 0, err
    apiserver.label_namespace(ns, {MODE_LABEL: None})  # back to the global mode: enforce
    wait_validated(apiserver, ns)

    # An edit that leaves the old violation as it is: allowed, and the violation comes back as a warning.
    legacy["metadata"]["labels"] = {"team": "a"}
    code, out, err = _apply(apiserver, legacy)
    assert code == 0, err
    assert "raycluster.ray.io/legacy configured" in out
    assert "Warning: [replicas-within-bounds] spec.workerGroupSpecs[0].replicas:" in err
    # Making it worse is denied.
    legacy["spec"]["workerGroupSpecs"][0]["replicas"] = 6
    code, _, err = _apply(apiserver, legacy)
    assert code == 1
    assert "replicas 6 is above maxReplicas 2" in err
    # Fixing it is allowed without a warning.
    legacy["spec"]["workerGroupSpecs"][0]["replicas"] = 2
    code, _, err = _apply(apiserver, legacy)
    assert code == 0
    assert "Warning" not in err


def test_delete_is_never_blocked(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace(labels={MODE_LABEL: "off"})
    code, _, err = _apply(apiserver, objects.rayservice("doomed", ns, replicas=5, max_replicas=2))
    assert code == 0, err
    apiserver.label_namespace(ns, {MODE_LABEL: None})
    wait_validated(apiserver, ns)
    # The chart sends CREATE and UPDATE only, so the API server does not even ask about DELETE.
    result = apiserver.kubectl("delete", "rayservice", "-n", ns, "doomed", "--wait=false")
    assert result.returncode == 0, result.output
    assert not _exists(apiserver, "RayService", ns, "doomed")
    assert not [line for line in deployment.server.reviews() if '"operation":"DELETE"' in line and ns in line]


def test_delete_sent_to_the_webhook_is_allowed(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """Even a configuration that does send DELETE (not the chart's) cannot block one."""
    ns = namespace(labels={MODE_LABEL: "off"})
    code, _, err = _apply(apiserver, objects.raycluster("doomed", ns, replicas=5, max_replicas=2))
    assert code == 0, err
    url = deployment.server.base_url + "/validate/enforce"
    ca = deployment.configurations[0]["webhooks"][0]["clientConfig"]["caBundle"]
    extra = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "karta-admission-test-delete"},
        "webhooks": [{
            "name": "delete.karta-admission.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "clientConfig": {"url": url, "caBundle": ca},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "rules": [{"operations": ["DELETE"], "apiGroups": ["ray.io"], "apiVersions": ["v1"],
                       "resources": ["rayclusters"]}],
        }],
    }  # fmt: skip
    apiserver.apply_objects([extra])
    try:

        def deleted() -> bool:
            result = apiserver.kubectl("delete", "raycluster", "-n", ns, "doomed", "--wait=false")
            return result.returncode == 0 and any(
                '"operation":"DELETE"' in line and '"doomed"' in line for line in deployment.server.reviews()
            )

        # Retried until the API server has the new configuration and the webhook saw the DELETE.
        wait_until(deleted, timeout=20, interval=0.3, message="a DELETE reviewed by the webhook")
    finally:
        apiserver.request("DELETE", apiserver.object_path(extra))
    [line] = [json.loads(x) for x in deployment.server.reviews() if '"operation":"DELETE"' in x and '"doomed"' in x]
    assert line["verdict"] in {"allowed", "skipped"}


def test_status_updates_are_not_sent(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """The chart's rules name the resources only, so the status subresource is never intercepted."""
    ns = namespace(labels={MODE_LABEL: "off"})
    code, _, err = _apply(apiserver, objects.raycluster("stat", ns, replicas=5, max_replicas=2))
    assert code == 0, err
    apiserver.label_namespace(ns, {MODE_LABEL: None})
    wait_validated(apiserver, ns)
    path = f"/apis/ray.io/v1/namespaces/{ns}/rayclusters/stat/status"
    response = apiserver.request_patch(path, {"status": {"state": "ready"}})
    assert response["status"]["state"] == "ready"


def test_audit_mode_allows_warns_and_annotates(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    ns = namespace(labels={MODE_LABEL: "audit"})
    code, out, err = _apply(apiserver, objects.rayjob("audited", ns, replicas=5, max_replicas=2))
    assert code == 0, err
    assert "rayjob.ray.io/audited created" in out
    assert "Warning: [replicas-within-bounds] spec.rayClusterSpec.workerGroupSpecs[0].replicas:" in err
    assert _exists(apiserver, "RayJob", ns, "audited")

    # The API server records the webhook's audit annotations, prefixed with the webhook's name.
    def create_event() -> dict[str, Any] | None:
        for event in apiserver.audit_events():
            ref = event.get("objectRef") or {}
            if (ref.get("namespace"), ref.get("name"), event.get("verb")) == (ns, "audited", "create") and (
                event.get("stage") == "ResponseComplete"
            ):
                return event
        return None

    event = wait_until(create_event, timeout=10, message="the audit event of the create")
    assert event is not None
    annotations = event["annotations"]
    prefix = "validate-audit.karta-admission.io/"
    assert annotations[prefix + "mode"] == "audit"
    [entry] = json.loads(annotations[prefix + "replicas-within-bounds"])
    assert entry["path"] == "spec.rayClusterSpec.workerGroupSpecs[0].replicas"
    assert entry["severity"] == "deny"
    assert "replicas 5 is above maxReplicas 2" in entry["message"]


def test_the_kuberay_samples_get_the_verdict_karta_admission_check_gives(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str], tmp_path: Path
) -> None:
    """Every Ray object of KubeRay's samples, server-side dry run through the real API server (CRD
    defaulting and pruning included), against `karta-admission check` on the same object."""
    ns = namespace()
    documents = []
    for _source, sample in ray_objects():
        obj = json.loads(json.dumps(sample))
        obj["metadata"]["namespace"] = ns
        documents.append(obj)
    manifest = tmp_path / "corpus.yaml"
    manifest.write_text(objects.to_yaml(*documents))
    check = run_cli(apiserver, "check", "-o", "json", str(manifest))
    assert check.returncode in (0, 1), check.output
    offline = json.loads(check.stdout)
    assert len(offline) == len(documents)
    mismatches = []
    for obj, verdict in zip(documents, offline, strict=True):
        plural = obj["kind"].lower() + "s"
        path = f"/apis/ray.io/v1/namespaces/{ns}/{plural}"
        denied_rules = sorted({v["rule"] for v in verdict["violations"] if v["severity"] == "deny"})
        warned_rules = sorted({v["rule"] for v in verdict["violations"] if v["severity"] == "warn"})
        try:
            response = apiserver.call("POST", path, obj, query=[("dryRun", "All")])
            got_denied: list[str] = []
            got_warned = sorted(set(WARNING_RULE.findall(response.headers.get("Warning", ""))))
        except APIError as exc:
            causes = (exc.body.get("details") or {}).get("causes") or []
            got_denied = sorted({c.get("message", "").rsplit("[", 1)[-1].rstrip("]") for c in causes})
            got_warned = warned_rules  # a denial carries no warnings
            if not got_denied:
                got_denied = [f"? {exc.body.get('message')}"]
        if (got_denied, got_warned) != (denied_rules, warned_rules):
            mismatches.append(
                (obj["kind"], obj["metadata"]["name"], (denied_rules, warned_rules), (got_denied, got_warned))
            )
    assert not mismatches, "\n".join(map(str, mismatches))
    assert len(documents) >= 80  # KubeRay's samples hold 82 Ray objects


def test_kuberays_own_crd_rules_are_enforced_before_the_webhook(
    apiserver: LocalAPIServer, deployment: ChartDeployment, namespace: Callable[..., str]
) -> None:
    """KubeRay's CEL rule on managedBy refuses the object in the API server itself (skipped on 1.20,
    where the rule is removed from the CRD)."""
    if apiserver.minor < CEL_IN_CRDS_SINCE:
        pytest.skip(NO_CRD_CEL)
    ns = namespace()
    cluster = objects.raycluster("managed", ns)
    cluster["spec"]["managedBy"] = "someone-else"
    code, _, err = _apply(apiserver, cluster)
    assert code == 1
    assert "the managedBy field value must be either" in err
    assert not [line for line in deployment.server.reviews() if '"name":"managed"' in line]
