"""`karta-admission audit`: check the objects already in a cluster; report like `check`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from kubernetes.client.exceptions import ApiException

from webhook.cli.exits import Exit
from webhook.cli.render import Progress, print_verdict, summary, verdict_fields
from webhook.cluster.audit import AuditReport, prepare_evaluator, run_audit
from webhook.cluster.client import (
    CONNECTION_ERRORS,
    ClusterUnavailable,
    api_error,
    close_client,
    connection_error,
    load_api_client,
    server_of,
)
from webhook.cluster.reports import PolicyReportWriter, ReportStats, ReportsUnavailable
from webhook.config import Config, load_definitions


def summary_line(report: AuditReport) -> str:
    return summary([a.verdict for a in report.checked]) + report.skipped_summary()


def print_text(report: AuditReport, out: TextIO) -> None:
    """Objects with violations in the layout of `check`, then one summary line."""
    for audited in report.checked:
        if audited.verdict.violations:
            print_verdict(audited.verdict, out)
    print(summary_line(report), file=out)


def _failure(exc: BaseException, server: str) -> str:
    if isinstance(exc, ApiException):
        return f"the Kubernetes API server at {server} refused: {api_error(exc)}"
    if isinstance(exc, ReportsUnavailable):
        return str(exc)
    return f"cannot reach the Kubernetes API server at {server}: {connection_error(exc)}"


def exit_status(report: AuditReport) -> Exit:
    if report.errors:
        return Exit.ERROR
    return Exit.DENIED if report.denied else Exit.OK


def audit_command(args: argparse.Namespace, config: Config) -> int:
    base = load_definitions(config)
    try:
        api_client = load_api_client(args.kubeconfig, args.context)
    except ClusterUnavailable as exc:
        print(f"karta-admission: {exc}", file=sys.stderr)
        return Exit.ERROR
    server = server_of(api_client)
    progress = Progress(sys.stderr)
    stats: ReportStats | None = None
    try:
        evaluator, notes = prepare_evaluator(api_client, config, base)
        writer = PolicyReportWriter(api_client, config) if args.policy_reports else None
        if writer is not None:
            writer.ensure_available()
        report = run_audit(api_client, evaluator, namespaces=list(args.namespace), progress=progress)
        progress.done()
        report.notes[:0] = notes
        if writer is not None:
            stats = writer.sync(
                ((a.ref, a.verdict) for a in report.checked),
                list(args.namespace),
                keep_kinds=report.failed_kinds,
            )
            report.errors.extend(stats.errors)
    except (ReportsUnavailable, ApiException, *CONNECTION_ERRORS) as exc:
        progress.done()
        print(f"karta-admission: {_failure(exc, server)}", file=sys.stderr)
        return Exit.ERROR
    finally:
        close_client(api_client)
    for note in report.notes:
        print(f"karta-admission: note: {note}", file=sys.stderr)
    for kind in report.not_served:
        print(
            f"karta-admission: note: the cluster does not serve {kind} (CRD not installed); not checked",
            file=sys.stderr,
        )
    for error in report.errors:
        print(f"karta-admission: {error}", file=sys.stderr)
    if args.output == "json":
        results = [{"apiVersion": a.ref.api_version, **verdict_fields(a.verdict)} for a in report.checked]
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_text(report, sys.stdout)
    if stats is not None:
        print(f"karta-admission: {stats}", file=sys.stderr)
    return exit_status(report)
