"""Background audit: check the objects already in a cluster with the same rules as admission.

`karta-admission audit` lists every kind that has a definition (paginated), runs `Evaluator.verdict`
on each object (objects from the API already carry their CRD defaults) and reports like `check`.
RayClusters owned by a RayService or RayJob are skipped: their owner is checked, so each problem is
reported once. `AuditLoop` runs the same audit every cluster.auditIntervalSeconds in the agent that
holds the Lease (one place per deployment), optionally writing PolicyReports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook.config import Config, build_evaluator, load_definitions
from webhook.evaluation import Evaluator, Verdict
from webhook.karta.model import GVK
from webhook.karta.registry import DefinitionSet
from webhook.kube.meta import controller_of
from webhook.observability import logs, metrics

from .client import CONNECTION_ERRORS, api_error, connection_error, discover, iter_pages
from .kartas import cluster_definition_set
from .reports import ObjectRef, PolicyReportWriter, ReportStats, ReportsUnavailable

log = logs.get("cluster.audit")

PAGE_SIZE = 500


@dataclass(frozen=True)
class AuditedObject:
    ref: ObjectRef
    verdict: Verdict


@dataclass
class AuditReport:
    checked: list[AuditedObject] = field(default_factory=list)
    # kind -> {owner kind -> count}: objects left to their owner's check
    skipped_owned: dict[str, Counter[str]] = field(default_factory=dict)
    not_served: list[GVK] = field(default_factory=list)
    failed_kinds: set[GVK] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def denied(self) -> int:
        return sum(1 for c in self.checked if not c.verdict.allowed)

    @property
    def warned(self) -> int:
        return sum(1 for c in self.checked if c.verdict.allowed and c.verdict.violations)

    @property
    def skipped(self) -> int:
        return sum(sum(c.values()) for c in self.skipped_owned.values())

    def skipped_summary(self) -> str:
        """Objects left to their owner's check, e.g. "; 2 RayClusters owned by a RayService skipped (...)"."""
        text = ""
        for kind, owners in sorted(self.skipped_owned.items()):
            count = sum(owners.values())
            by = " or ".join(sorted(owners))
            text += f"; {count} {kind}{'s' if count != 1 else ''} owned by a {by} skipped (checked through the owner)"
        return text


def audited_kinds(definitions: DefinitionSet) -> list[GVK]:
    return [k for k in definitions.kinds() if not (k.group == "" and k.kind == "Pod")]


def run_audit(
    api_client: k8s.ApiClient,
    evaluator: Evaluator,
    *,
    namespaces: Sequence[str] = (),
    page_size: int = PAGE_SIZE,
    progress: Callable[[int], None] | None = None,
    timeout: tuple[float, float] = (10, 60),
) -> AuditReport:
    """Check every object of every kind with a definition, in all namespaces or the given ones.

    Connection failures propagate (nothing useful can be said); API errors for one kind are recorded
    and the other kinds are still checked.
    """
    report = AuditReport()
    kinds = audited_kinds(evaluator.definitions)
    root_kinds = set(kinds)
    seen = 0
    for kind in kinds:
        try:
            resource = discover(api_client, kind, timeout)
        except ApiException as exc:
            report.errors.append(f"{kind}: cannot look up the resource: {api_error(exc)}")
            report.failed_kinds.add(kind)
            continue
        if resource is None:
            report.not_served.append(kind)
            continue
        if namespaces and not resource.namespaced:
            report.notes.append(f"{kind} is cluster-scoped; not checked when namespaces are given")
            continue
        for namespace in _namespaces_or_all(namespaces):
            try:
                for page, _ in iter_pages(
                    api_client, resource, namespace=namespace, page_size=page_size, timeout=timeout
                ):
                    for obj in page:
                        owner = controller_of(obj)
                        owner_kind = GVK.of(owner) if owner else None
                        if owner_kind is not None and owner_kind != kind and owner_kind in root_kinds:
                            report.skipped_owned.setdefault(kind.kind, Counter())[owner_kind.kind] += 1
                            continue
                        verdict = evaluator.verdict(obj)
                        if verdict is None:
                            continue
                        report.checked.append(AuditedObject(ObjectRef.of(obj), verdict))
                        seen += 1
                        if progress is not None:
                            progress(seen)
            except ApiException as exc:
                where = f" in namespace {namespace}" if namespace else ""
                report.errors.append(f"{kind}: cannot list{where}: {api_error(exc)}")
                report.failed_kinds.add(kind)
    return report


def _namespaces_or_all(namespaces: Sequence[str]) -> list[str | None]:
    return list(namespaces) if namespaces else [None]


def prepare_evaluator(api_client: k8s.ApiClient, config: Config, base: DefinitionSet) -> tuple[Evaluator, list[str]]:
    """An evaluator with the definitions the webhook in that cluster uses (its Karta objects over base)."""
    if not config.cluster.watch_kartas:
        return build_evaluator(config, base), []
    definitions, notes = cluster_definition_set(api_client, base)
    return build_evaluator(config, definitions), notes


# --- periodic audit ---------------------------------------------------------------------------


class AuditLoop:
    """The periodic audit: while started (the agent starts it on the replica that holds the Lease),
    one audit every cluster.auditIntervalSeconds, optionally writing PolicyReports."""

    def __init__(
        self,
        config: Config,
        api_client: k8s.ApiClient,
        *,
        interval_seconds: float | None = None,
        base: DefinitionSet | None = None,
    ) -> None:
        self.config = config
        self.api_client = api_client
        self.interval = (
            interval_seconds if interval_seconds is not None else float(config.cluster.audit_interval_seconds)
        )
        if self.interval <= 0:
            raise ValueError("the periodic audit needs cluster.auditIntervalSeconds > 0")
        self.base = base or load_definitions(config)
        self.runs = 0
        self.last_report: AuditReport | None = None
        self.last_stats: ReportStats | None = None
        self._halt = threading.Event()  # set: the audit thread ends after its current run
        self._auditor: threading.Thread | None = None
        self._reports_missing_logged = False

    @property
    def running(self) -> bool:
        return self._auditor is not None

    def start(self) -> None:
        if self._auditor is not None:
            return
        self._halt.clear()
        self._auditor = threading.Thread(target=self._audit_loop, name="karta-admission-audit", daemon=True)
        self._auditor.start()

    def stop(self) -> None:
        self._halt.set()
        auditor, self._auditor = self._auditor, None
        if auditor is not None and auditor is not threading.current_thread():
            auditor.join(30)

    def _audit_loop(self) -> None:
        while not self._halt.is_set():
            self.run_once()
            self._halt.wait(self.interval)

    def run_once(self) -> AuditReport | None:
        started = time.monotonic()
        try:
            evaluator, notes = prepare_evaluator(self.api_client, self.config, self.base)
            report = run_audit(self.api_client, evaluator, namespaces=self.config.cluster.audit_namespaces)
            report.notes[:0] = notes
            if self.config.cluster.policy_reports:
                self._write_reports(report)
        except (ApiException, *CONNECTION_ERRORS) as exc:
            metrics.AUDIT_RUNS.labels("error").inc()
            logs.event(log, logging.WARNING, f"periodic audit failed: {connection_error(exc)}")
            return None
        self.runs += 1
        self.last_report = report
        outcome = "error" if report.errors else ("denied" if report.denied else "ok")
        metrics.AUDIT_RUNS.labels(outcome).inc()
        clean = len(report.checked) - report.denied - report.warned
        for result, count in (("denied", report.denied), ("warned", report.warned), ("allowed", clean),
                              ("skipped", report.skipped)):  # fmt: skip
            metrics.AUDIT_OBJECTS.labels(result).set(count)
        logs.event(
            log, logging.INFO, "periodic audit done",
            checked=len(report.checked), denied=report.denied, warned=report.warned, skipped=report.skipped,
            errors=report.errors, notes=report.notes, duration_s=round(time.monotonic() - started, 3),
            denied_objects=[f"{a.ref.kind} {a.ref.namespace}/{a.ref.name}" for a in report.checked
                            if not a.verdict.allowed][:50],
            policy_reports=str(self.last_stats) if self.last_stats else None,
        )  # fmt: skip
        return report

    def _write_reports(self, report: AuditReport) -> None:
        writer = PolicyReportWriter(self.api_client, self.config)
        try:
            self.last_stats = writer.sync(
                ((a.ref, a.verdict) for a in report.checked),
                self.config.cluster.audit_namespaces,
                keep_kinds=report.failed_kinds,
            )
            report.errors.extend(self.last_stats.errors)
            self._reports_missing_logged = False
        except ReportsUnavailable as exc:
            if not self._reports_missing_logged:
                logs.event(log, logging.ERROR, f"cluster.policyReports is on, but: {exc}")
                self._reports_missing_logged = True
            report.errors.append(str(exc))
