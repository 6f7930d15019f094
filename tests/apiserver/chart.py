"""The Helm chart's own webhook configurations, rendered by `helm template`, for the test API server.

They are applied as the chart renders them, with exactly these changes (counted, and asserted in
test_chart_webhooks.py, so that a chart change that needs more fails loudly):

- `clientConfig.service` becomes `clientConfig.url` (`https://localhost:<port><the service path>`):
  the webhook runs on this machine's loopback, and 1.20 routes a Service reference to a ClusterIP
  that nothing here serves. The path is kept, so the chart's path per entry is what is tested.
- `clientConfig.caBundle` is set to the CA the webhook's certificate was made with (cert-manager
  or the self-managed mode do this in a cluster; the self-managed test lets the server do it).
- `matchConditions` are removed: they came in 1.27 (beta 1.28, GA 1.30) and 1.20 refuses them.
  What they filter out therefore reaches the server here, and the scenarios that depend on them
  are listed in docs/testing.md.

Everything else (names, rules, selectors, failure policies, timeouts, reinvocation) is the chart's.
"""

from __future__ import annotations

import base64
import copy
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.chart.helm import Helm, find_helm

RELEASE = NAMESPACE = "karta-admission"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")

URL_FROM_SERVICE = "service_reference_made_url"
CA_BUNDLE_SET = "ca_bundle_set"
MATCH_CONDITIONS_DROPPED = "match_conditions_dropped"


def render(home: Path, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """`helm template` of charts/karta-admission (release and namespace karta-admission)."""
    home.mkdir(parents=True, exist_ok=True)
    helm = Helm(find_helm(), home)
    return list(helm.render(values, release=RELEASE, namespace=NAMESPACE))


def webhook_configurations(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in rendered if o["kind"] in WEBHOOK_KINDS]


RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def rbac_objects(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ServiceAccount and the roles the chart grants it, for this rendering's features."""
    return [o for o in rendered if o["kind"] in RBAC_KINDS]


def server_config(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    """The server configuration the chart renders into its ConfigMap (`config.yaml`)."""
    maps = [o for o in rendered if o["kind"] == "ConfigMap" and "config.yaml" in (o.get("data") or {})]
    assert len(maps) == 1, f"expected one ConfigMap with config.yaml, found {len(maps)}"
    config = yaml.safe_load(maps[0]["data"]["config.yaml"])
    assert isinstance(config, dict)
    return config


def for_local_server(
    configurations: list[dict[str, Any]], base_url: str, ca_bundle: bytes | None, drop_match_conditions: bool = True
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The configurations pointed at base_url, with the counted changes (module docstring);
    matchConditions are kept for an API server that has them (drop_match_conditions=False)."""
    changes: Counter[str] = Counter()
    out = []
    for original in configurations:
        configuration = copy.deepcopy(original)
        for webhook in configuration["webhooks"]:
            client_config = webhook["clientConfig"]
            service = client_config.pop("service", None)
            if service is not None:
                client_config["url"] = f"{base_url}{service.get('path') or ''}"
                changes[URL_FROM_SERVICE] += 1
            if ca_bundle is not None:
                client_config["caBundle"] = base64.b64encode(ca_bundle).decode()
                changes[CA_BUNDLE_SET] += 1
            if drop_match_conditions and webhook.pop("matchConditions", None) is not None:
                changes[MATCH_CONDITIONS_DROPPED] += 1
        out.append(configuration)
    return out, changes


def entries(configurations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every webhook entry by name."""
    return {w["name"]: w for c in configurations for w in c["webhooks"]}
