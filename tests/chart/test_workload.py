"""The Deployment, its configuration, RBAC and the optional objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webhook.cli import build_parser
from webhook.cluster.selfcerts import SelfManagedSettings
from webhook.config import parse_config
from webhook.karta.load import load_directory
from webhook.policy.model import DEFAULT_GPU_NODE_LABEL_KEYS, DEFAULT_GPU_PATTERNS, DEFAULT_GPU_TAINT_KEYS

from .cases import DEFAULT_VALUES, SCHEDULERS, VALUE_SETS, config_map, config_of, container, effective_values, volume
from .helm import NAMESPACE, Helm, Rendered

ALL_SETS = sorted(VALUE_SETS)
READ = ["get", "list", "watch"]


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


# -- Deployment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SETS)
def test_pod_is_locked_down(render_set, name: str) -> None:
    rendered = render_set(name)
    spec = pod_spec(rendered)
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    security = container(rendered.one("Deployment"))["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["serviceAccountName"] == rendered.one("ServiceAccount")["metadata"]["name"]
    resources = container(rendered.one("Deployment"))["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("name", ["defaults", "everything"])
def test_container_command_line_parses_with_the_real_cli(render_set, name: str) -> None:
    main = container(render_set(name).one("Deployment"))
    assert "command" not in main  # the image's entrypoint is karta-admission
    args = build_parser().parse_args(main["args"])
    assert args.command == "serve"
    assert args.bind == "0.0.0.0:8443"
    assert str(args.config) == "/etc/karta-admission/config.yaml"
    assert (args.workers, args.threads, args.log_level) == (2, 4, "info")
    has_definitions = name == "everything"
    assert [str(d) for d in args.definitions] == (["/etc/karta-admission/definitions"] if has_definitions else [])
    assert args.no_cluster is False


def test_probes_ports_and_environment(render_set) -> None:
    main = container(render_set("defaults").one("Deployment"))
    assert main["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert main[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
        assert main[probe]["timeoutSeconds"] < main[probe]["periodSeconds"] or probe == "startupProbe"
    # The startup probe gives a slow first start a minute before liveness takes over.
    assert main["startupProbe"]["periodSeconds"] * main["startupProbe"]["failureThreshold"] >= 60
    env = {e["name"]: e for e in main["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"] == "/tmp/metrics"


def test_writable_paths_are_only_emptydirs(render_set) -> None:
    deployment = render_set("defaults").one("Deployment")
    mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
    assert "emptyDir" in volume(deployment, mounts["/tmp"]["name"])
    writable = [path for path, m in mounts.items() if not m.get("readOnly")]
    assert sorted(writable) == ["/run/karta-admission/tls", "/tmp"]
    for path in writable:
        assert "emptyDir" in volume(deployment, mounts[path]["name"])


def test_replicas_spread_and_rollout_keeps_capacity(render_set) -> None:
    deployment = render_set("defaults").one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    selector = deployment["spec"]["selector"]["matchLabels"]
    (term,) = pod_spec(render_set("defaults"))["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"] == {
        "labelSelector": {"matchLabels": selector},
        "topologyKey": "kubernetes.io/hostname",
    }
    hard = pod_spec(render_set("everything"))["affinity"]["podAntiAffinity"]
    assert list(hard) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    assert render_set("everything").one("Deployment")["spec"]["replicas"] == 3


def test_service_selects_the_pods(render_set) -> None:
    rendered = render_set("defaults")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = rendered.one("Service")["spec"]["selector"]
    assert selector.items() <= pod_labels.items()


def test_image_reference(render_set, helm: Helm) -> None:
    assert container(render_set("defaults").one("Deployment"))["image"] == "karta-admission:0.1.0"
    assert container(render_set("everything").one("Deployment"))["image"] == "karta-admission@sha256:" + "ab" * 32
    tagged = helm.render({"image": {"repository": "registry.example.com/karta-admission", "tag": "1.2.3"}})
    assert container(tagged.one("Deployment"))["image"] == "registry.example.com/karta-admission:1.2.3"


# -- PodDisruptionBudget ---------------------------------------------------------------------------


def test_pdb_keeps_one_replica_serving(render_set) -> None:
    rendered = render_set("defaults")
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    other = render_set("everything").one("PodDisruptionBudget")["spec"]
    assert other["maxUnavailable"] == 1
    assert "minAvailable" not in other


def test_no_pdb_for_a_single_replica(render_set) -> None:
    """With one replica a PDB would block every node drain."""
    assert render_set("minimal").maybe("PodDisruptionBudget") is None


# -- Configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SETS)
def test_configuration_is_accepted_by_the_server(render_set, name: str) -> None:
    rendered = render_set(name)
    config = parse_config(config_of(rendered), f"chart[{name}]")
    values = effective_values(name)
    assert config.mode.value == values["mode"]
    assert config.failure_policy == values["webhook"]["failurePolicy"]["enforce"]
    # Without the mutating webhook no pod gets gang keys, so the server plans no gangs either.
    assert config.gang.scheduler == (values["gang"]["scheduler"] if values["mutation"]["enabled"] else "none")
    assert dict(config.policy.severities) == values["rules"]
    assert config.cluster.audit_interval_seconds == values["cluster"]["auditIntervalSeconds"]
    assert config.cluster.audit_namespaces == tuple(values["cluster"]["auditNamespaces"])
    assert (config.self_managed_certificates is not None) == (values["certificates"]["mode"] == "selfManaged")
    deployment = rendered.one("Deployment")
    if config.self_managed_certificates is not None:
        # The server's own reading of the block, and the files it will write are the ones served.
        settings = SelfManagedSettings.from_mapping(config.self_managed_certificates, environ={})
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--certfile={settings.dir}/tls.crt" in args and f"--keyfile={settings.dir}/tls.key" in args
    assert volume(deployment, "config")["configMap"]["name"] == config_map(rendered)["metadata"]["name"]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_each_scheduler_convention_reaches_the_server(render_set, scheduler: str) -> None:
    config = config_of(render_set(f"scheduler-{scheduler}"))
    assert config["gang"]["scheduler"] == scheduler
    assert ("custom" in config["gang"]) == (scheduler == "custom")
    parsed = parse_config(config, "chart")
    if scheduler == "custom":
        assert dict(parsed.gang.custom_labels) == {"example.com/pod-group": "{group}"}


def test_gpu_defaults_match_the_server_defaults() -> None:
    """values.yaml spells out the server's defaults so users can extend them; they must not drift."""
    gpu = DEFAULT_VALUES["gpu"]
    assert tuple(gpu["resourcePatterns"]) == DEFAULT_GPU_PATTERNS
    assert tuple(gpu["taintKeys"]) == DEFAULT_GPU_TAINT_KEYS
    assert tuple(gpu["nodeLabelKeys"]) == DEFAULT_GPU_NODE_LABEL_KEYS


def test_extra_definitions_load_in_the_server(render_set, tmp_path: Path) -> None:
    rendered = render_set("everything")
    configmap = rendered.one("ConfigMap", f"{rendered.one('Service')['metadata']['name']}-definitions")
    for file_name, text in configmap["data"].items():
        (tmp_path / file_name).write_text(text)
    (definition,) = load_directory(tmp_path)
    assert definition.name == "ray-io-rayservice-v1"
    projected = volume(rendered.one("Deployment"), "definitions")["projected"]["sources"]
    assert [s["configMap"]["name"] for s in projected] == [configmap["metadata"]["name"], "more-kartas"]


def _checksums(rendered: Rendered) -> dict[str, str]:
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    return {k: v for k, v in annotations.items() if k.startswith("checksum/")}


def test_pods_roll_when_configuration_changes_and_only_then(helm: Helm) -> None:
    base = _checksums(helm.render())
    assert _checksums(helm.render({"mode": "audit"}))["checksum/config"] != base["checksum/config"]
    assert _checksums(helm.render({"rules": {"gpu-on-head": "off"}}))["checksum/config"] != base["checksum/config"]
    assert _checksums(helm.render({"replicaCount": 4})) == base
    with_definitions = _checksums(
        helm.render(
            {"definitions": {"extra": {"a.yaml": VALUE_SETS["everything"]["definitions"]["extra"]["rayservice.yaml"]}}}
        )
    )
    assert with_definitions["checksum/definitions"] != base["checksum/definitions"]
    assert with_definitions["checksum/config"] == base["checksum/config"]


# -- RBAC ------------------------------------------------------------------------------------------


def _rules(rendered: Rendered, kind: str) -> list[dict[str, Any]]:
    role = rendered.maybe(kind)
    return [] if role is None else list(role["rules"])


def test_rbac_defaults_exactly(render_set) -> None:
    rendered = render_set("defaults")
    assert _rules(rendered, "ClusterRole") == [
        {"apiGroups": ["run.ai"], "resources": ["kartas"], "verbs": READ},
        {"apiGroups": ["ray.io"], "resources": ["rayclusters", "rayservices", "rayjobs"], "verbs": READ},
        # The default gang scheduler is coscheduling: one PodGroup per RayCluster (docs/gang.md).
        {"apiGroups": ["scheduling.x-k8s.io"], "resources": ["podgroups"], "verbs": [*READ, "create", "update"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
         "resourceNames": ["karta-admission"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": ["karta-admission"], "verbs": ["get", "update", "patch"]},
    ]  # fmt: skip
    assert _rules(rendered, "Role") == [
        # create cannot be narrowed by name; everything else can.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["karta-admission-tls"],
         "verbs": ["get", "update", "patch"]},
        # The group-object controller runs on the replica that holds the Lease.
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["karta-admission-leader"],
         "verbs": ["get", "update"]},
    ]  # fmt: skip


def test_rbac_with_audit_reports_and_extra_kinds_exactly(render_set) -> None:
    rendered = render_set("everything")
    assert _rules(rendered, "ClusterRole") == [
        {"apiGroups": ["run.ai"], "resources": ["kartas"], "verbs": READ},
        {"apiGroups": ["ray.io"], "resources": ["rayclusters", "rayservices", "rayjobs"], "verbs": READ},
        {"apiGroups": ["example.com"], "resources": ["trainingjobs"], "verbs": READ},
        {"apiGroups": ["scheduling.x-k8s.io"], "resources": ["podgroups"], "verbs": [*READ, "create", "update"]},
        {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"],
         "verbs": ["list", "create", "patch", "delete"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
         "resourceNames": ["karta-admission"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": ["karta-admission"], "verbs": ["get", "update", "patch"]},
    ]  # fmt: skip
    # The group-object controller and the background audit run on the replica that holds the Lease.
    assert _rules(rendered, "Role")[2:] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["karta-admission-leader"],
         "verbs": ["get", "update"]},
    ]  # fmt: skip


def test_rbac_without_cluster_features_grants_nothing(render_set) -> None:
    rendered = render_set("minimal")
    assert rendered.maybe("ClusterRole") is None
    assert rendered.maybe("ClusterRoleBinding") is None
    assert rendered.maybe("Role") is None
    assert rendered.maybe("RoleBinding") is None


@pytest.mark.parametrize("name", ALL_SETS)
def test_rbac_is_bounded(render_set, name: str) -> None:
    rendered = render_set(name)
    account = {"kind": "ServiceAccount", "name": pod_spec(rendered)["serviceAccountName"], "namespace": NAMESPACE}
    for kind in ("ClusterRole", "Role"):
        for rule in _rules(rendered, kind):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if kind == "ClusterRole":
                assert "secrets" not in rule["resources"]
                writes = set(rule["verbs"]) - set(READ)
                # Unnamed writes: PolicyReports, and the gang scheduler's PodGroups (create and update only).
                assert (not writes or rule.get("resourceNames") or rule["resources"] == ["policyreports"]
                        or (rule["resources"] == ["podgroups"] and writes == {"create", "update"}))  # fmt: skip
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = rendered.maybe(kind)
        if binding is not None:
            assert binding["subjects"] == [account]
            assert binding["roleRef"]["name"] == rendered.one(role_kind)["metadata"]["name"]


GROUP_OBJECT_GROUPS = {"coscheduling": "scheduling.x-k8s.io", "volcano": "scheduling.volcano.sh",
                       "kai": "scheduling.run.ai"}  # fmt: skip


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_podgroups_only_for_the_configured_scheduler(render_set, helm: Helm, scheduler: str) -> None:
    """Write access to one scheduler's podgroups, the one configured, and only if it needs group objects."""
    rules = [r for r in _rules(render_set(f"scheduler-{scheduler}"), "ClusterRole") if r["resources"] == ["podgroups"]]
    if scheduler in GROUP_OBJECT_GROUPS:
        assert rules == [{"apiGroups": [GROUP_OBJECT_GROUPS[scheduler]], "resources": ["podgroups"],
                          "verbs": [*READ, "create", "update"]}]  # fmt: skip
    else:
        assert rules == []
    # Without the cluster watches there are no plans, and without mutation no keys: no PodGroups either.
    for values in ({"cluster": {"ownerCache": False}}, {"mutation": {"enabled": False}}):
        off = helm.render({"gang": {"scheduler": "volcano"}, **values})
        assert all(r["resources"] != ["podgroups"] for r in _rules(off, "ClusterRole"))


def test_scheduler_name_and_timeout_reach_the_server(helm: Helm) -> None:
    default = parse_config(config_of(helm.render()), "chart")
    assert default.gang.scheduler_name is None and default.gang.schedule_timeout_seconds is None
    rendered = helm.render({"gang": {"schedulerName": "", "scheduleTimeoutSeconds": 120}})
    parsed = parse_config(config_of(rendered), "chart")
    assert parsed.gang.scheduler_name == "" and parsed.gang.schedule_timeout_seconds == 120
    named = parse_config(config_of(helm.render({"gang": {"schedulerName": "my-coscheduler"}})), "chart")
    assert named.gang.scheduler_name == "my-coscheduler"


def test_policy_reports_need_the_audit_to_be_granted(helm: Helm) -> None:
    rendered = helm.render({"cluster": {"policyReports": True}})
    assert all(r["apiGroups"] != ["wgpolicyk8s.io"] for r in _rules(rendered, "ClusterRole"))


def test_rbac_can_be_left_to_the_user(helm: Helm) -> None:
    rendered = helm.render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "platform-sa"}})
    assert not rendered.kinds() & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"}
    assert pod_spec(rendered)["serviceAccountName"] == "platform-sa"


# -- Optional objects ------------------------------------------------------------------------------


def test_network_policy(render_set) -> None:
    assert render_set("defaults").maybe("NetworkPolicy") is None
    rendered = render_set("everything")
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {"ports": [{"port": "https", "protocol": "TCP"}], "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}
    ]
    assert policy["egress"] == VALUE_SETS["everything"]["networkPolicy"]["egress"]


def test_service_monitor_scrapes_metrics_over_tls(render_set, helm: Helm) -> None:
    assert render_set("defaults").maybe("ServiceMonitor") is None
    rendered = render_set("everything")
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= rendered.one("Service")["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == ("https", "/metrics", "https")
    service = rendered.one("Service")["metadata"]["name"]
    assert endpoint["tlsConfig"] == {
        "serverName": f"{service}.{NAMESPACE}.svc",
        "ca": {"secret": {"name": f"{service}-tls", "key": "ca.crt"}},
    }
    provided = helm.render({**VALUE_SETS["provided-pem"], "metrics": {"serviceMonitor": {"enabled": True}}})
    assert provided.one("ServiceMonitor")["spec"]["endpoints"][0]["tlsConfig"] == {"insecureSkipVerify": True}
