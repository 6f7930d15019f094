"""The webhook configurations: which requests reach which path, with which failure policy."""

from __future__ import annotations

from typing import Any

import cel
import pytest

from tests.reviews import ray_pod

from .cases import VALUE_SETS, config_map, config_of, effective_values, namespace_labels, selector_matches
from .helm import NAMESPACE, Helm, Rendered

RAY_RULE = {
    "operations": ["CREATE", "UPDATE"],
    "apiGroups": ["ray.io"],
    "apiVersions": ["v1"],
    "resources": ["rayservices", "rayclusters", "rayjobs"],
    "scope": "Namespaced",
}
PATHS = {
    "validate.karta-admission.io": "/validate",
    "validate-enforce.karta-admission.io": "/validate/enforce",
    "validate-audit.karta-admission.io": "/validate/audit",
    "mutate-pods.karta-admission.io": "/mutate",
}
ALL_SETS = sorted(VALUE_SETS)


def validating(rendered: Rendered) -> list[dict[str, Any]]:
    entries = rendered.one("ValidatingWebhookConfiguration")["webhooks"]
    assert isinstance(entries, list)
    return entries


def mutating(rendered: Rendered) -> dict[str, Any] | None:
    config = rendered.maybe("MutatingWebhookConfiguration")
    if config is None:
        return None
    (entry,) = config["webhooks"]
    assert isinstance(entry, dict)
    return entry


def entries(rendered: Rendered) -> list[dict[str, Any]]:
    found = validating(rendered)
    entry = mutating(rendered)
    return [*found, entry] if entry is not None else found


def validating_paths_for(rendered: Rendered, labels: dict[str, str]) -> list[str]:
    """The paths the API server would call for a Ray object in a namespace with these labels."""
    return [e["clientConfig"]["service"]["path"] for e in validating(rendered)
            if selector_matches(e["namespaceSelector"], labels)]  # fmt: skip


@pytest.mark.parametrize("name", ALL_SETS)
def test_every_entry_follows_the_webhook_contract(render_set, name: str) -> None:
    rendered = render_set(name)
    values = effective_values(name)
    service = rendered.one("Service")
    for entry in entries(rendered):
        assert entry["admissionReviewVersions"] == ["v1"]
        assert entry["sideEffects"] == "None"
        assert entry["matchPolicy"] == "Equivalent"
        assert entry["failurePolicy"] in ("Fail", "Ignore")
        kind = "mutate" if entry["name"].startswith("mutate") else "validate"
        assert 1 <= entry["timeoutSeconds"] <= 30
        assert entry["timeoutSeconds"] == values["webhook"]["timeoutSeconds"][kind]
        target = entry["clientConfig"]["service"]
        assert target == {
            "name": service["metadata"]["name"],
            "namespace": NAMESPACE,
            "path": PATHS[entry["name"]],
            "port": service["spec"]["ports"][0]["port"],
        }
        assert service["spec"]["ports"][0]["targetPort"] == "https"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("defaults", {"/validate": "Fail", "/validate/enforce": "Fail", "/validate/audit": "Ignore"}),
        ("audit", {"/validate": "Ignore", "/validate/enforce": "Fail", "/validate/audit": "Ignore"}),
        ("off", {"/validate/enforce": "Fail", "/validate/audit": "Ignore"}),
    ],
)
def test_failure_policy_and_path_per_entry(render_set, name: str, expected: dict[str, str]) -> None:
    """Fail-closed entries are installed with Ignore and armed by the server once it is ready."""
    rendered = render_set(name)
    found = {e["clientConfig"]["service"]["path"]: e for e in validating(rendered)}
    assert {path: e["failurePolicy"] for path, e in found.items()} == dict.fromkeys(expected, "Ignore") | {
        path: policy for path, policy in expected.items() if policy == "Ignore"
    }
    arm = config_of(rendered)["cluster"]["armWebhooks"]
    assert arm["validatingWebhookConfiguration"] == rendered.one("ValidatingWebhookConfiguration")["metadata"]["name"]
    assert arm["webhooks"] == [found[path]["name"] for path, policy in expected.items() if policy == "Fail"]
    entry = mutating(render_set(name))
    assert entry is not None
    assert entry["failurePolicy"] == "Ignore"
    assert entry["reinvocationPolicy"] == "IfNeeded"


def test_failure_policies_are_configurable(helm: Helm) -> None:
    policies = {"enforce": "Ignore", "audit": "Fail", "mutate": "Fail"}
    rendered = helm.render({"webhook": {"failurePolicy": policies, "armAfterReady": False}})
    found = {e["clientConfig"]["service"]["path"]: e["failurePolicy"] for e in validating(rendered)}
    assert found == {"/validate": "Ignore", "/validate/enforce": "Ignore", "/validate/audit": "Fail"}
    assert "armWebhooks" not in config_of(rendered)["cluster"]
    entry = mutating(rendered)
    assert entry is not None
    assert entry["failurePolicy"] == "Fail"


# (namespace, mode label or None) -> validating paths, per global mode.
ROUTING = [
    (("team-a", None), {"enforce": ["/validate"], "audit": ["/validate"], "off": []}),
    (
        ("team-a", "enforce"),
        {"enforce": ["/validate/enforce"], "audit": ["/validate/enforce"], "off": ["/validate/enforce"]},
    ),
    (("team-a", "audit"), {"enforce": ["/validate/audit"], "audit": ["/validate/audit"], "off": ["/validate/audit"]}),
    (("team-a", "off"), {"enforce": [], "audit": [], "off": []}),
    # An unknown label value is not a mode: the global one applies.
    (("team-a", "bogus"), {"enforce": ["/validate"], "audit": ["/validate"], "off": []}),
    # Never the webhook's own namespace or kube-system, whatever their labels say.
    (("kube-system", None), {"enforce": [], "audit": [], "off": []}),
    (("kube-system", "enforce"), {"enforce": [], "audit": [], "off": []}),
    ((NAMESPACE, None), {"enforce": [], "audit": [], "off": []}),
    ((NAMESPACE, "audit"), {"enforce": [], "audit": [], "off": []}),
]


@pytest.mark.parametrize(("namespace", "by_mode"), ROUTING, ids=[f"{ns}-{mode}" for (ns, mode), _ in ROUTING])
@pytest.mark.parametrize("global_mode", ["enforce", "audit", "off"])
def test_namespace_routing(render_set, namespace: tuple[str, str | None], by_mode, global_mode: str) -> None:
    rendered = render_set({"enforce": "defaults", "audit": "audit", "off": "off"}[global_mode])
    labels = namespace_labels(*namespace)
    assert validating_paths_for(rendered, labels) == by_mode[global_mode]
    # Pod mutation: everywhere the webhook may run except off-labelled namespaces.
    entry = mutating(rendered)
    assert entry is not None
    expected_mutation = namespace[0] not in ("kube-system", NAMESPACE) and namespace[1] != "off"
    assert selector_matches(entry["namespaceSelector"], labels) == expected_mutation


def test_excluded_namespaces_use_the_immutable_name_label(render_set) -> None:
    rendered = render_set("everything")
    for entry in entries(rendered):
        (name_rule,) = [e for e in entry["namespaceSelector"]["matchExpressions"]
                        if e["key"] == "kubernetes.io/metadata.name"]  # fmt: skip
        assert name_rule["operator"] == "NotIn"
        # kube-system given twice (default and user list) is listed once.
        assert name_rule["values"] == ["kube-system", NAMESPACE, "legacy"]
    assert validating_paths_for(rendered, namespace_labels("legacy")) == []
    assert validating_paths_for(rendered, namespace_labels("legacy2")) == ["/validate"]


def test_custom_mode_label_is_used_by_every_entry_and_the_server(helm: Helm) -> None:
    label = "policy.example.com/karta-mode"
    rendered = helm.render({"namespaceModeLabel": label})
    assert validating_paths_for(rendered, namespace_labels("team-a", "audit", label)) == ["/validate/audit"]
    assert validating_paths_for(rendered, namespace_labels("team-a", "audit")) == ["/validate"]
    for entry in entries(rendered):
        keys = [e["key"] for e in entry["namespaceSelector"]["matchExpressions"]]
        assert keys == ["kubernetes.io/metadata.name", label]
    assert f"namespaceModeLabel: {label}" in config_map(rendered)["data"]["config.yaml"]


@pytest.mark.parametrize("name", ALL_SETS)
def test_rules_cover_only_ray_kinds_and_ray_pods(render_set, name: str) -> None:
    rendered = render_set(name)
    values = effective_values(name)
    extra = [{"operations": ["CREATE", "UPDATE"], "scope": "Namespaced", **r} for r in values["webhook"]["extraRules"]]
    for validating_entry in validating(rendered):
        assert validating_entry["rules"] == [RAY_RULE, *extra]
    entry = mutating(rendered)
    if not values["mutation"]["enabled"]:
        assert entry is None
        return
    assert entry is not None
    assert entry["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]


def _conditions_hold(conditions: list[dict[str, str]], obj: dict[str, Any]) -> bool:
    """matchConditions as the API server applies them: all true -> call the webhook."""
    request = {"userInfo": {"username": "system:serviceaccount:ray-system:kuberay-operator"}}
    return all(cel.evaluate(c["expression"], {"object": obj, "request": request}) is True for c in conditions)


@pytest.mark.parametrize(
    ("pod", "reaches_webhook"),
    [
        (ray_pod("head"), True),
        (ray_pod("worker"), True),
        # Labels alone are not enough: the pod must be controlled by a RayCluster.
        (ray_pod("worker", owner_kind="Job"), False),
        (ray_pod("worker", labels={"ray.io/node-type": "redis"}), False),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}}}, False),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"}}, False),
    ],
    ids=["head", "worker", "owned-by-job", "other-node-type", "other-app", "no-labels"],
)
def test_only_ray_pods_reach_the_mutating_webhook(render_set, pod: dict[str, Any], reaches_webhook: bool) -> None:
    entry = mutating(render_set("defaults"))
    assert entry is not None
    labels = pod["metadata"].get("labels") or {}
    # Objects without labels never match an objectSelector, as in the API server.
    selected = bool(labels) and selector_matches(entry["objectSelector"], labels)
    assert (selected and _conditions_hold(entry["matchConditions"], pod)) == reaches_webhook


def test_pod_without_ray_cluster_label_is_not_selected(render_set) -> None:
    entry = mutating(render_set("defaults"))
    assert entry is not None
    pod = ray_pod("worker")
    del pod["metadata"]["labels"]["ray.io/cluster"]
    assert not selector_matches(entry["objectSelector"], pod["metadata"]["labels"])


def test_validating_match_conditions_compile_and_apply(render_set) -> None:
    (entry, *_) = validating(render_set("everything"))
    (condition,) = entry["matchConditions"]
    assert cel.evaluate(condition["expression"], {"request": {"userInfo": {"username": "alice"}}}) is True
    operator = {"userInfo": {"username": "system:serviceaccount:ray-system:kuberay-operator"}}
    assert cel.evaluate(condition["expression"], {"request": operator}) is False


def test_mutation_can_be_disabled_and_global_off_removes_only_the_global_entry(render_set) -> None:
    assert render_set("minimal").maybe("MutatingWebhookConfiguration") is None
    names = [e["name"] for e in validating(render_set("off"))]
    assert names == ["validate-enforce.karta-admission.io", "validate-audit.karta-admission.io"]


def test_timeouts_are_configurable(render_set) -> None:
    rendered = render_set("everything")
    assert {e["timeoutSeconds"] for e in validating(rendered)} == {10}
    entry = mutating(rendered)
    assert entry is not None
    assert entry["timeoutSeconds"] == 2
