"""Validation: the Evaluator's verdict on the reviewed object, answered as the API server expects."""

from __future__ import annotations

from typing import Any

from webhook.admission import answers
from webhook.admission.review import Outcome, Review, envelope, passed, with_kind
from webhook.evaluation import Evaluator, Mode
from webhook.policy.model import Severity


def validate(evaluator: Evaluator, review: Review, mode: Mode | None = None) -> Outcome:
    mode = mode or evaluator.mode
    obj = review.request.get("object")
    outcome = passed(review, str(mode))
    # Never stand in the way of deletes, status and scale writes, or kinds without a definition.
    if review.operation not in {"CREATE", "UPDATE"} or review.sub_resource or not isinstance(obj, dict):
        return outcome
    old = review.request.get("oldObject")
    verdict = evaluator.verdict(
        with_kind(obj, review.kind),
        mode,
        old=with_kind(old, review.kind) if review.operation == "UPDATE" and isinstance(old, dict) else None,
    )
    if verdict is None or verdict.mode is Mode.OFF:
        return outcome
    violations = list(verdict.violations)
    outcome.violations = violations
    response: dict[str, Any] = {"allowed": True}
    if not verdict.allowed:
        response = {"allowed": False, "status": answers.status(verdict.kind, review, obj, verdict.denying)}
        warned = [v for v in violations if v.severity is not Severity.DENY]
        outcome.verdict = "denied"
    else:
        warned = violations
        outcome.verdict = "warned" if violations else "allowed"
    warnings = answers.warnings(warned)
    if warnings:
        response["warnings"] = warnings
    annotations = answers.audit_annotations(violations, mode)
    if annotations:
        response["auditAnnotations"] = annotations
    outcome.response = envelope(review, response)
    return outcome
