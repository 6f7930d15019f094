"""Audit results as wgpolicyk8s.io/v1alpha2 PolicyReports, for Policy Reporter, the Kyverno UI and the like.

Layout: one PolicyReport per checked object, in its namespace, named after its uid, with `scope` set
to the object and an ownerReference to it (the garbage collector removes the report with the
object). One result per violation (policy "karta-admission", rule = rule id, result fail for deny
and warn for warn) and one `pass` result per applicable rule the object satisfies. Reports are
labelled app.kubernetes.io/managed-by=karta-admission; a sync creates missing ones, patches changed
ones, leaves equal ones alone (so a periodic audit of a quiet cluster writes nothing) and deletes the
labelled reports whose object was not seen.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook.config import Config
from webhook.evaluation import Verdict
from webhook.karta.model import GVK
from webhook.policy.model import Rule, Severity
from webhook.policy.registry import BUILTIN_RULES

from .client import Resource, api_error, discover, list_all

REPORT_KIND = GVK("wgpolicyk8s.io", "v1alpha2", "PolicyReport")
POLICY = "karta-admission"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "karta-admission"
RESOURCE_UID_LABEL = "karta-admission.io/resource-uid"
# PolicyReport severities are critical|high|medium|low|info; ours say what admission would do.
SEVERITY = {Severity.DENY: "high", Severity.WARN: "medium"}
RESULT = {Severity.DENY: "fail", Severity.WARN: "warn"}


class ReportsUnavailable(RuntimeError):
    """The cluster does not serve PolicyReports (CRD not installed) or they cannot be read."""


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion") or ""),
            str(obj.get("kind") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
        )

    @property
    def gvk(self) -> GVK:
        return GVK.of({"apiVersion": self.api_version, "kind": self.kind})


def report_name(ref: ObjectRef) -> str:
    return f"karta-admission-{ref.uid}"


def applicable_rules(kind: GVK, config: Config) -> list[Rule]:
    """The rules the engine runs for a root kind."""
    return [rule for rule, _ in BUILTIN_RULES.in_force(kind.group, config.policy, kind.kind)]


def build_report(ref: ObjectRef, verdict: Verdict, config: Config, now: datetime) -> dict[str, Any]:
    """The PolicyReport for one checked object."""
    timestamp = {"seconds": int(now.timestamp()), "nanos": 0}
    results: list[dict[str, Any]] = []
    failed_rules = set()
    for violation in verdict.violations:
        rule = BUILTIN_RULES.get(violation.rule)
        failed_rules.add(violation.rule)
        results.append({
            "source": POLICY,
            "policy": POLICY,
            "rule": violation.rule,
            "category": rule.category if rule else "Policy",
            "severity": SEVERITY.get(violation.severity, "info"),
            "result": RESULT.get(violation.severity, "warn"),
            "scored": True,
            "message": violation.message,
            "properties": {"path": violation.path or "(object)", "definition": verdict.definition},
            "timestamp": timestamp,
        })  # fmt: skip
    for rule in applicable_rules(ref.gvk, config):
        if rule.id in failed_rules:
            continue
        results.append({
            "source": POLICY,
            "policy": POLICY,
            "rule": rule.id,
            "category": rule.category,
            "result": "pass",
            "scored": True,
            "message": rule.summary,
            "properties": {"definition": verdict.definition},
            "timestamp": timestamp,
        })  # fmt: skip
    summary = {key: sum(1 for r in results if r["result"] == key) for key in ("pass", "fail", "warn", "error", "skip")}
    return {
        "apiVersion": REPORT_KIND.api_version,
        "kind": REPORT_KIND.kind,
        "metadata": {
            "name": report_name(ref),
            "namespace": ref.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, RESOURCE_UID_LABEL: ref.uid},
            # Not blockOwnerDeletion: that would need update rights on the owner's finalizers.
            "ownerReferences": [{"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name, "uid": ref.uid}],
        },
        "scope": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
        },
        "summary": summary,
        "results": results,
    }


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a report this tool writes, timestamps left out (equal: nothing to write)."""
    meta = report.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner_keys = ("apiVersion", "kind", "name", "uid")
    result_keys = (
        "source",
        "policy",
        "rule",
        "category",
        "severity",
        "result",
        "scored",
        "message",
        "properties",
    )
    return {
        "labels": {k: labels.get(k) for k in (MANAGED_BY_LABEL, RESOURCE_UID_LABEL)},
        "owners": [{k: o.get(k) for k in owner_keys} for o in meta.get("ownerReferences") or ()],
        "scope": report.get("scope"),
        "summary": report.get("summary"),
        "results": [{k: r.get(k) for k in result_keys} for r in report.get("results") or ()],
    }


@dataclass
class ReportStats:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"PolicyReports: {self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.deleted} stale deleted"
        )
        return text + (f", {len(self.errors)} failed" if self.errors else "")


class PolicyReportWriter:
    def __init__(self, api_client: k8s.ApiClient, config: Config, timeout: tuple[float, float] = (10, 60)) -> None:
        self.api_client = api_client
        self.config = config
        self.timeout = timeout
        self._resource: Resource | None = None

    def ensure_available(self) -> Resource:
        """The PolicyReport resource; ReportsUnavailable with a clear message when it is not served."""
        if self._resource is None:
            try:
                self._resource = discover(self.api_client, REPORT_KIND, self.timeout)
            except ApiException as exc:
                raise ReportsUnavailable(f"cannot look up PolicyReports: {api_error(exc)}") from exc
            if self._resource is None:
                raise ReportsUnavailable(
                    "the cluster does not serve wgpolicyk8s.io/v1alpha2 PolicyReport (CRD not installed); "
                    "install the PolicyReport CRD (it comes with Kyverno, or from "
                    "kubernetes-sigs/wg-policy-prototypes) or run without --policy-reports"
                )
        return self._resource

    def sync(
        self,
        checked: Iterable[tuple[ObjectRef, Verdict]],
        namespaces: Sequence[str] = (),
        *,
        keep_kinds: Iterable[GVK] = (),
        now: datetime | None = None,
    ) -> ReportStats:
        """Write the reports of this run and delete the stale ones in the namespaces audited.

        keep_kinds: kinds whose listing failed in this run; their reports are kept, not taken as stale.
        """
        resource = self.ensure_available()
        api = k8s.CustomObjectsApi(self.api_client)
        now = now or datetime.now(UTC)
        stats = ReportStats()
        existing = self._existing(resource, namespaces)
        desired: set[tuple[str, str]] = set()
        for ref, verdict in checked:
            if not ref.namespace or not ref.uid:
                continue  # cluster-scoped objects would need ClusterPolicyReports
            body = build_report(ref, verdict, self.config, now)
            key = (ref.namespace, body["metadata"]["name"])
            desired.add(key)
            try:
                self._write(api, resource, key, body, existing.get(key), stats=stats)
            except ApiException as exc:
                stats.errors.append(f"PolicyReport {key[0]}/{key[1]}: {api_error(exc)}")
        kept = {str(k) for k in keep_kinds}
        for key, old in existing.items():
            if key in desired or str(GVK.of(old.get("scope") or {})) in kept:
                continue
            try:
                api.delete_namespaced_custom_object(
                    resource.group, resource.version, key[0], resource.plural, key[1], _request_timeout=self.timeout
                )
                stats.deleted += 1
            except ApiException as exc:
                if exc.status != 404:
                    stats.errors.append(f"PolicyReport {key[0]}/{key[1]}: {api_error(exc)}")
        return stats

    def _existing(self, resource: Resource, namespaces: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
        """Our reports now in the cluster, by (namespace, name), in the namespaces audited (all: none given)."""
        existing: dict[tuple[str, str], dict[str, Any]] = {}
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        try:
            scopes: list[str | None] = list(namespaces) if namespaces else [None]
            for namespace in scopes:
                items, _ = list_all(
                    self.api_client, resource, namespace=namespace, label_selector=selector, timeout=self.timeout
                )
                for item in items:
                    meta = item.get("metadata") or {}
                    existing[(str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = item
        except ApiException as exc:
            raise ReportsUnavailable(f"cannot list PolicyReports: {api_error(exc)}") from exc
        return existing

    def _write(
        self,
        api: Any,
        resource: Resource,
        key: tuple[str, str],
        body: dict[str, Any],
        old: dict[str, Any] | None,
        *,
        stats: ReportStats,
    ) -> None:
        """Create the report, or patch it when what it says changed (a create that lost a race patches)."""
        namespace, name = key
        if old is None:
            try:
                api.create_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural, body, _request_timeout=self.timeout
                )
                stats.created += 1
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        elif _comparable(old) == _comparable(body):
            stats.unchanged += 1
            return
        patch = copy.deepcopy(body)
        del patch["apiVersion"], patch["kind"]
        api.patch_namespaced_custom_object(
            resource.group, resource.version, namespace, resource.plural, name, patch, _request_timeout=self.timeout
        )
        stats.updated += 1
