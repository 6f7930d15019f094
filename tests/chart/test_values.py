"""values.schema.json and the template checks refuse bad values with a message that names the value;
every value is documented."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import webhook.policy.engine  # noqa: F401  (importing it registers the rules)
from webhook.policy.registry import BUILTIN_RULES

from .cases import CA_PEM, DEFAULT_VALUES, chart_file
from .helm import Helm

SCHEMA_ERROR = "values don't meet the specifications of the schema(s)"

REJECTED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown-mode", {"mode": "block"}, ["at '/mode': value must be one of 'enforce', 'audit', 'off'"]),
    ("misspelt-key", {"replicas": 3}, ["additional properties 'replicas' not allowed"]),
    (
        "timeout-too-long",
        {"webhook": {"timeoutSeconds": {"validate": 60}}},
        ["at '/webhook/timeoutSeconds/validate': maximum: got 60, want 30"],
    ),
    (
        "timeout-zero",
        {"webhook": {"timeoutSeconds": {"mutate": 0}}},
        ["at '/webhook/timeoutSeconds/mutate': minimum: got 0, want 1"],
    ),
    (
        "failure-policy-case",
        {"webhook": {"failurePolicy": {"enforce": "fail"}}},
        ["at '/webhook/failurePolicy/enforce': value must be one of 'Fail', 'Ignore'"],
    ),
    (
        "unknown-rule",
        {"rules": {"no-such-rule": "deny"}},
        ["at '/rules': additional properties 'no-such-rule' not allowed"],
    ),
    (
        "unknown-severity",
        {"rules": {"gpu-on-head": "maybe"}},
        ["at '/rules/gpu-on-head': value must be one of 'deny', 'warn', 'off'"],
    ),
    ("unknown-scheduler", {"gang": {"scheduler": "slurm"}}, ["at '/gang/scheduler': value must be one of"]),
    ("zero-schedule-timeout", {"gang": {"scheduleTimeoutSeconds": 0}}, ["at '/gang/scheduleTimeoutSeconds'"]),
    (
        "custom-scheduler-without-keys",
        {"gang": {"scheduler": "custom"}},
        ["at '/gang/custom/labels': minProperties: got 0, want 1", "at '/gang/custom/annotations': minProperties"],
    ),
    (
        "unknown-certificate-mode",
        {"certificates": {"mode": "vault"}},
        ["at '/certificates/mode': value must be one of 'selfManaged', 'certManager', 'provided'"],
    ),
    (
        "provided-without-secret-or-ca",
        {"certificates": {"mode": "provided"}},
        [
            "at '/certificates/provided/secretName': minLength: got 0, want 1",
            "at '/certificates/provided/caBundle': '' does not match pattern",
        ],
    ),
    (
        "provided-ca-not-a-certificate",
        {"certificates": {"mode": "provided", "provided": {"secretName": "tls", "caBundle": "aGVsbG8="}}},
        ["at '/certificates/provided/caBundle': 'aGVsbG8=' does not match pattern"],
    ),
    (
        "cert-manager-duration-in-days",
        {"certificates": {"certManager": {"duration": "365d"}}},
        ["at '/certificates/certManager/duration': '365d' does not match pattern"],
    ),
    (
        "issuer-ref-without-name",
        {"certificates": {"certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}},
        ["at '/certificates/certManager/issuerRef'", "missing property 'name'"],
    ),
    ("no-replicas", {"replicaCount": 0}, ["at '/replicaCount': minimum: got 0, want 1"]),
    ("replicas-as-string", {"replicaCount": "2"}, ["at '/replicaCount': got string, want integer"]),
    (
        "bad-excluded-namespace",
        {"webhook": {"excludeNamespaces": ["Team_A"]}},
        ["at '/webhook/excludeNamespaces/0': 'Team_A' does not match pattern"],
    ),
    (
        "bad-mode-label",
        {"namespaceModeLabel": "mode label!"},
        ["at '/namespaceModeLabel': 'mode label!' does not match pattern"],
    ),
    ("tag-in-digest", {"image": {"digest": "latest"}}, ["at '/image/digest': 'latest' does not match pattern"]),
    (
        "not-a-karta",
        {
            "definitions": {
                "extra": {"x.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "spec": {}}}
            }
        },
        [
            "at '/definitions/extra/x.yaml/apiVersion': value must be 'run.ai/v1alpha1'",
            "at '/definitions/extra/x.yaml/kind': value must be 'Karta'",
        ],
    ),
    (
        "definition-file-name",
        {"definitions": {"extra": {"x.json": {}}}},
        ["invalid propertyName 'x.json'", "'x.json' does not match pattern"],
    ),
    (
        "match-condition-without-expression",
        {"mutation": {"matchConditions": [{"name": "x"}]}},
        ["at '/mutation/matchConditions/0': missing property 'expression'"],
    ),
    (
        "unknown-anti-affinity",
        {"podAntiAffinity": "always"},
        ["at '/podAntiAffinity': value must be one of 'soft', 'hard', 'none'"],
    ),
    (
        "unknown-extra-rule-field",
        {
            "webhook": {
                "extraRules": [
                    {"apiGroups": ["x"], "apiVersions": ["v1"], "resources": ["y"], "operations": ["DELETE"]}
                ]
            }
        },
        ["at '/webhook/extraRules/0': additional properties 'operations' not allowed"],
    ),
]

# Checks across values, made by the templates (the schema cannot compare two values).
FAILED_IN_TEMPLATES: list[tuple[str, dict[str, Any], str]] = [
    (
        "renewal-after-expiry",
        {"certificates": {"selfManaged": {"validityDays": 90, "renewBeforeDays": 90}}},
        "certificates.selfManaged.renewBeforeDays (90) must be less than validityDays (90)",
    ),
    (
        "pdb-blocks-drains",
        {"podDisruptionBudget": {"minAvailable": 2}},
        "podDisruptionBudget.minAvailable (2) must be less than replicaCount (2), or no node could ever be drained",
    ),
    (
        "roles-without-account",
        {"serviceAccount": {"create": False}},
        "rbac.create=true with serviceAccount.create=false needs serviceAccount.name",
    ),
]


@pytest.mark.parametrize(("case", "values", "messages"), REJECTED, ids=[c[0] for c in REJECTED])
def test_schema_rejects_with_a_message_naming_the_value(helm: Helm, case: str, values: dict[str, Any],
                                                        messages: list[str]) -> None:  # fmt: skip
    result = helm.template(values)
    assert result.returncode != 0, f"{case}: accepted"
    assert SCHEMA_ERROR in result.stderr
    for message in messages:
        assert message in result.stderr, result.stderr


@pytest.mark.parametrize(("case", "values", "message"), FAILED_IN_TEMPLATES, ids=[c[0] for c in FAILED_IN_TEMPLATES])
def test_templates_reject_inconsistent_values(helm: Helm, case: str, values: dict[str, Any], message: str) -> None:
    result = helm.template(values)
    assert result.returncode != 0, f"{case}: accepted"
    assert message in result.stderr, result.stderr


def test_lint_reports_schema_errors_too(helm: Helm) -> None:
    result = helm.lint({"mode": "block"})
    assert result.returncode != 0
    assert "at '/mode': value must be one of" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"certificates": {"mode": "provided", "provided": {"secretName": "tls", "caBundle": CA_PEM}}},
        {"podDisruptionBudget": {"minAvailable": "50%"}},
        {"rules": dict.fromkeys(BUILTIN_RULES.ids(), "warn")},
        {"gang": {"scheduler": "custom", "custom": {"annotations": {"example.com/group": "{group}"}}}},
    ],
    ids=["provided", "pdb-percent", "every-rule", "custom-annotations-only"],
)
def test_edge_values_are_accepted(helm: Helm, values: dict[str, Any]) -> None:
    result = helm.template(values)
    assert result.returncode == 0, result.stderr


def _schema() -> dict[str, Any]:
    schema = json.loads(chart_file("values.schema.json").read_text())
    assert isinstance(schema, dict)
    return schema


def test_schema_knows_exactly_the_servers_rules() -> None:
    assert set(_schema()["properties"]["rules"]["properties"]) == set(BUILTIN_RULES.ids())


# Values whose content is a Kubernetes structure or a free-form map, documented as a whole.
OPAQUE = {"resources", "mutation.objectSelector", "probes.startup", "probes.liveness", "probes.readiness"}


def value_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, Mapping) and value and path not in OPAQUE:
            yield from value_paths(value, path + ".")


def documented_values() -> set[str]:
    readme = chart_file("README.md").read_text()
    values_section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", values_section, flags=re.MULTILINE))


def test_every_value_is_documented_in_the_chart_readme() -> None:
    leaves = {p for p in value_paths(DEFAULT_VALUES)
              if not isinstance(_lookup(DEFAULT_VALUES, p), Mapping) or not _lookup(DEFAULT_VALUES, p)
              or p in OPAQUE}  # fmt: skip
    missing = leaves - documented_values()
    assert not missing, f"values not documented in charts/karta-admission/README.md: {sorted(missing)}"


def test_readme_documents_no_value_that_does_not_exist() -> None:
    stale = documented_values() - set(value_paths(DEFAULT_VALUES))
    assert not stale, f"README documents values that values.yaml does not have: {sorted(stale)}"


def _lookup(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node
