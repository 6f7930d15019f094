"""Value sets the chart is rendered with, and small readers of what it renders."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from webhook.certs import make_ca

from .helm import ROOT, Rendered

# A throwaway CA certificate, for the `provided` mode's caBundle.
CA_PEM = make_ca(common_name="chart-test-ca", days=1)[0].decode()
CA_BASE64 = base64.b64encode(CA_PEM.encode()).decode()

RAYSERVICE_DEFINITION = yaml.safe_load((ROOT / "docs" / "samples" / "rayservice.yaml").read_text())

SCHEDULERS = ("coscheduling", "volcano", "kueue", "kai", "yunikorn", "none", "custom")


def _scheduler(name: str) -> dict[str, Any]:
    gang: dict[str, Any] = {"scheduler": name}
    if name == "custom":
        gang["custom"] = {"labels": {"example.com/pod-group": "{group}"},
                          "annotations": {"example.com/min-member": "{size}"}}  # fmt: skip
    return {"gang": gang}


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "audit": {"mode": "audit"},
    "off": {"mode": "off"},
    "cert-manager": {"certificates": {"mode": "certManager"}},
    "cert-manager-issuer": {
        "certificates": {
            "mode": "certManager",
            "certManager": {"issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"}},
        }
    },
    "provided-pem": {"certificates": {"mode": "provided", "provided": {"secretName": "corp-tls", "caBundle": CA_PEM}}},
    "provided-base64": {
        "certificates": {"mode": "provided", "provided": {"secretName": "corp-tls", "caBundle": CA_BASE64}}
    },
    **{f"scheduler-{name}": _scheduler(name) for name in SCHEDULERS},
    "everything": {
        "mode": "audit",
        "rules": {"gpu-on-head": "off", "gpu-toleration": "deny"},
        "definitions": {"extra": {"rayservice.yaml": RAYSERVICE_DEFINITION}, "existingConfigMap": "more-kartas"},
        "cluster": {"auditIntervalSeconds": 600, "policyReports": True, "auditNamespaces": ["team-a"]},
        "webhook": {
            "excludeNamespaces": ["legacy", "kube-system"],
            "timeoutSeconds": {"validate": 10, "mutate": 2},
            "extraRules": [{"apiGroups": ["example.com"], "apiVersions": ["v1"], "resources": ["trainingjobs"]}],
            "matchConditions": [
                {
                    "name": "not-kuberay-operator",
                    "expression": "request.userInfo.username != 'system:serviceaccount:ray-system:kuberay-operator'",
                }
            ],
        },
        "replicaCount": 3,
        "podAntiAffinity": "hard",
        "podDisruptionBudget": {"maxUnavailable": 1},
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 443, "protocol": "TCP"}]}],
        },
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "image": {"digest": "sha256:" + "ab" * 32},
        "priorityClassName": "system-cluster-critical",
    },
    "minimal": {
        "replicaCount": 1,
        "mutation": {"enabled": False},
        # Arming needs the Lease and a patch on its own webhook configuration.
        "webhook": {"armAfterReady": False},
        "cluster": {"watchKartas": False, "ownerCache": False},
        "certificates": {"mode": "certManager"},
    },
}


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Values as helm merges a values file over values.yaml (maps deep, everything else replaced)."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


DEFAULT_VALUES: dict[str, Any] = yaml.safe_load((ROOT / "charts" / "karta-admission" / "values.yaml").read_text())


def effective_values(name: str) -> dict[str, Any]:
    return merged(DEFAULT_VALUES, VALUE_SETS[name])


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector applied to a label set (an absent selector matches everything)."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def namespace_labels(name: str, mode: str | None = None, label: str = "karta-admission.io/mode") -> dict[str, str]:
    """A Namespace's labels as the API server sets them, plus an optional mode label."""
    labels = {"kubernetes.io/metadata.name": name}
    if mode is not None:
        labels[label] = mode
    return labels


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result = containers[0]
    assert isinstance(result, dict)
    return result


def volume(deployment: Mapping[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    assert len(found) == 1, f"volume {name}: {len(found)} found"
    result = found[0]
    assert isinstance(result, dict)
    return result


def config_map(rendered: Rendered) -> dict[str, Any]:
    """The ConfigMap holding the server's config.yaml."""
    (found,) = [c for c in rendered.of_kind("ConfigMap") if "config.yaml" in c["data"]]
    return found


def config_of(rendered: Rendered) -> dict[str, Any]:
    config = yaml.safe_load(config_map(rendered)["data"]["config.yaml"])
    assert isinstance(config, dict)
    return config


def chart_file(*parts: str) -> Path:
    return ROOT.joinpath("charts", "karta-admission", *parts)
