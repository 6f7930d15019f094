"""The admission.k8s.io/v1 protocol: AdmissionReview in, AdmissionReview out (pure, no HTTP here)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from jsonpointer import escape as escape_pointer

from webhook.checker import Checker
from webhook.config import Config, Mode
from webhook.gang import GroupInfo, PodGang, convention_for, desired_metadata
from webhook.karta.model import GVK
from webhook.kube import names
from webhook.policy.engine import demote_existing
from webhook.policy.model import Severity, Violation

REVIEW_API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})
# The API server truncates a warning past 256 characters and drops warnings past 4096 in total.
WARNING_MAX = 256
WARNINGS_TOTAL_MAX = 4096
AUDIT_VALUE_MAX = 2048


class ReviewError(ValueError):
    """The body is not an AdmissionReview request we can answer (HTTP 400)."""


@dataclass(frozen=True)
class Review:
    api_version: str
    uid: str
    request: Mapping[str, Any]

    @property
    def operation(self) -> str:
        return str(self.request.get("operation") or "")

    @property
    def kind(self) -> GVK:
        kind = self.request.get("kind") or {}
        return GVK(str(kind.get("group") or ""), str(kind.get("version") or ""), str(kind.get("kind") or ""))

    @property
    def namespace(self) -> str:
        return str(self.request.get("namespace") or "")

    @property
    def sub_resource(self) -> str:
        return str(self.request.get("subResource") or "")


def parse_review(body: Any) -> Review:
    if not isinstance(body, dict):
        raise ReviewError("the body is not a JSON object")
    api_version = body.get("apiVersion")
    if (
        not isinstance(api_version, str)
        or api_version not in REVIEW_API_VERSIONS
        or body.get("kind") != "AdmissionReview"
    ):
        raise ReviewError(
            f"expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got apiVersion "
            f"{api_version!r} and kind {body.get('kind')!r}"
        )
    request = body.get("request")
    if not isinstance(request, dict):
        raise ReviewError("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    for key in ("object", "oldObject"):
        obj = request.get(key)
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise ReviewError(f"request.{key} is not an object")
        problem = _metadata_problem(obj.get("metadata"))
        if problem:
            raise ReviewError(f"request.{key}.metadata{problem}")
    if not isinstance(request.get("kind", {}), dict):
        raise ReviewError("request.kind is not an object")
    return Review(str(api_version), uid, request)


def _metadata_problem(metadata: Any) -> str | None:
    """What the API server would never send: metadata fields of the wrong shape."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return " is not an object"
    for field_name in ("labels", "annotations"):
        values = metadata.get(field_name)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            return f".{field_name} is not a map of strings"
    refs = metadata.get("ownerReferences")
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs)):
        return ".ownerReferences is not a list of objects"
    for field_name in ("name", "namespace", "generateName"):
        if metadata.get(field_name) is not None and not isinstance(metadata.get(field_name), str):
            return f".{field_name} is not a string"
    return None


@dataclass
class Outcome:
    """The answer plus what the HTTP edge logs and counts."""

    response: dict[str, Any]
    verdict: str  # allowed | denied | warned | patched | skipped | error
    kind: str
    operation: str
    namespace: str
    mode: str
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _envelope(review: Review, response: dict[str, Any]) -> dict[str, Any]:
    response["uid"] = review.uid
    return {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}


def error_response(review: Review, allowed: bool, message: str) -> dict[str, Any]:
    """An internal failure answered per the failure posture (the uid is still echoed)."""
    response: dict[str, Any] = {"allowed": allowed}
    if not allowed:
        response["status"] = {"code": 500, "reason": "InternalError", "message": message}
    else:
        response["warnings"] = [_clip(f"karta-admission could not check this object: {message}", WARNING_MAX)]
    return _envelope(review, response)


class OwnerIndex(Protocol):
    """Where Pod mutation finds the gang size: the pod's owner, resolved ahead of time."""

    def group_info(
        self, namespace: str, owner: Mapping[str, Any], component: str, instance: str | None
    ) -> GroupInfo | None: ...


class NoOwnerIndex:
    """Without a cluster the size is not known; the group keys are still written."""

    def group_info(
        self, namespace: str, owner: Mapping[str, Any], component: str, instance: str | None
    ) -> GroupInfo | None:
        return None


class Admission:
    def __init__(self, checker: Checker, owners: OwnerIndex | None = None) -> None:
        self.checker = checker
        # `is None`, not truthiness: the owner cache has a length, and it is empty (falsy) when the
        # server starts, before its first list; `or` would swap it for NoOwnerIndex for good.
        self.owners: OwnerIndex = owners if owners is not None else NoOwnerIndex()

    @property
    def config(self) -> Config:
        return self.checker.config

    # --- validation ---

    def validate(self, review: Review, mode: Mode | None = None) -> Outcome:
        mode = mode or self.config.mode
        obj = review.request.get("object")
        outcome = Outcome(
            response=_envelope(review, {"allowed": True}),
            verdict="skipped",
            kind=review.kind.kind,
            operation=review.operation,
            namespace=review.namespace,
            mode=str(mode),
        )
        # Never stand in the way of deletes, status and scale writes, or kinds without a definition.
        if review.operation not in {"CREATE", "UPDATE"} or review.sub_resource or not isinstance(obj, dict):
            return outcome
        compiled = self.checker.definition_for(_with_kind(obj, review.kind))
        if compiled is None or mode is Mode.OFF:
            return outcome
        workload = compiled.resolve(_with_kind(obj, review.kind))
        violations = self.checker.violations(workload)
        old = review.request.get("oldObject")
        if review.operation == "UPDATE" and isinstance(old, dict) and violations:
            old_violations = self.checker.violations(compiled.resolve(_with_kind(old, review.kind)))
            violations = demote_existing(violations, old_violations)
        outcome.violations = violations
        denying = [v for v in violations if v.severity is Severity.DENY]
        response: dict[str, Any] = {"allowed": True}
        if mode is Mode.ENFORCE and denying:
            response = {"allowed": False, "status": _status(workload.kind, review, obj, denying)}
            warned = [v for v in violations if v.severity is not Severity.DENY]
            outcome.verdict = "denied"
        else:
            warned = violations
            outcome.verdict = "warned" if violations else "allowed"
        warnings = _warnings(warned)
        if warnings:
            response["warnings"] = warnings
        annotations = _audit_annotations(violations, mode)
        if annotations:
            response["auditAnnotations"] = annotations
        outcome.response = _envelope(review, response)
        return outcome

    # --- mutation ---

    def mutate(self, review: Review) -> Outcome:
        pod = review.request.get("object")
        outcome = Outcome(
            response=_envelope(review, {"allowed": True}),
            verdict="skipped",
            kind=review.kind.kind,
            operation=review.operation,
            namespace=review.namespace,
            mode=str(self.config.mode),
        )
        if (
            review.operation != "CREATE"
            or review.sub_resource
            or review.kind.kind != "Pod"
            or review.kind.group
            or not isinstance(pod, dict)
            or self.config.gang.scheduler == "none"
            or self.config.mode is Mode.OFF
        ):
            return outcome
        owner = _controller(pod)
        if owner is None:
            return outcome
        compiled = self.checker.definitions.for_kind(GVK.of(owner))
        if compiled is None:
            return outcome
        claim = compiled.classifier.classify(pod)
        if claim is None or claim.grouping is None:
            return outcome
        if claim.errors or claim.group_name is None:
            outcome.notes.extend(claim.errors or ["no group key"])
            outcome.verdict = "ungrouped"
            return outcome
        namespace = review.namespace or str((pod.get("metadata") or {}).get("namespace") or "")
        effective = claim.grouping.effective_component
        instance = claim.instance_id if effective == claim.component else None
        info = self.owners.group_info(namespace, owner, effective, instance)
        if info is None:
            outcome.notes.append("size-unknown")
        gang = convention_for(self.config.gang.scheduler, self.config.gang.custom_labels,
                              self.config.gang.custom_annotations)  # fmt: skip
        labels, annotations = desired_metadata(
            gang, PodGang(claim.group_name, claim.component, claim.instance_id, namespace, info)
        )
        bad = [k for k, v in labels.items() if names.label_value_problems(v)]
        for key in bad:
            outcome.notes.append(f"label {key}={labels.pop(key)!r} is not a valid label value; not written")
        patch = add_missing_metadata(pod, labels, annotations)
        if patch:
            encoded = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
            outcome.response = _envelope(review, {"allowed": True, "patchType": "JSONPatch", "patch": encoded})
            outcome.verdict = "patched"
        else:
            outcome.verdict = "allowed"
        return outcome


def add_missing_metadata(
    obj: Mapping[str, Any], labels: Mapping[str, str], annotations: Mapping[str, str]
) -> list[dict[str, Any]]:
    """RFC 6902 operations adding only the keys the object lacks; never replaces what is there."""
    metadata = obj.get("metadata") or {}
    ops: list[dict[str, Any]] = []
    if "metadata" not in obj or not isinstance(obj.get("metadata"), dict):
        ops.append({"op": "add", "path": "/metadata", "value": {}})
        metadata = {}
    for field_name, wanted in (("labels", labels), ("annotations", annotations)):
        existing = metadata.get(field_name)
        missing = {k: v for k, v in wanted.items() if not isinstance(existing, dict) or k not in existing}
        if not missing:
            continue
        if not isinstance(existing, dict):
            ops.append({"op": "add", "path": f"/metadata/{field_name}", "value": dict(sorted(missing.items()))})
            continue
        for key, value in sorted(missing.items()):
            ops.append({"op": "add", "path": f"/metadata/{field_name}/{escape_pointer(key)}", "value": value})
    return ops


def _controller(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = (pod.get("metadata") or {}).get("ownerReferences")
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def _with_kind(obj: Mapping[str, Any], kind: GVK) -> Mapping[str, Any]:
    """The API server always sets apiVersion and kind in request.object; fill them in if a caller did not."""
    if obj.get("apiVersion") and obj.get("kind"):
        return obj
    return {**obj, "apiVersion": kind.api_version, "kind": kind.kind}


def _object_name(review: Review, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or review.request.get("name")
    if name:
        return str(name)
    return f"{meta.get('generateName', '')}*" if meta.get("generateName") else ""


def _cause(v: Violation) -> str:
    value = "" if v.value is None else f"Invalid value: {json.dumps(v.value, default=str)}: "
    return f"{v.path or '(object)'}: {value}{v.message} [{v.rule}]"


def _status(kind: str, review: Review, obj: Mapping[str, Any], denying: list[Violation]) -> dict[str, Any]:
    """A 422 Invalid status in the shape of Kubernetes' own field errors."""
    group = review.kind.group
    qualified = f"{kind}.{group}" if group else kind
    causes = [_cause(v) for v in denying]
    listed = causes[0] if len(causes) == 1 else "[" + ", ".join(causes) + "]"
    name = _object_name(review, obj)
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 422,
        "reason": "Invalid",
        "message": f'{qualified} "{name}" is invalid: {listed}',
        "details": {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": f"{v.message} [{v.rule}]", "field": v.path} for v in denying
            ],
        },
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _warnings(violations: list[Violation]) -> list[str]:
    """One warning per violation, within the API server's limits on length and total size."""

    def tail(count: int) -> str:
        return f"... and {count} more violations (see the audit annotations)"

    out: list[str] = []
    total = 0
    for index, v in enumerate(violations):
        text = _clip(f"[{v.rule}] {v.path + ': ' if v.path else ''}{v.message}", WARNING_MAX)
        after = len(violations) - index - 1
        # Room is kept for the closing "... and N more" line whenever more follow.
        if total + len(text) + (len(tail(after)) if after else 0) > WARNINGS_TOTAL_MAX:
            out.append(tail(len(violations) - index))
            break
        out.append(text)
        total += len(text)
    return out


def _audit_annotations(violations: list[Violation], mode: Mode) -> dict[str, str]:
    """Keys are rule ids (valid qualified names; the API server prefixes the webhook name)."""
    if not violations:
        return {}
    by_rule: dict[str, list[dict[str, str]]] = {}
    for v in violations:
        by_rule.setdefault(v.rule, []).append({"path": v.path, "severity": str(v.severity), "message": v.message})
    annotations = {"mode": str(mode)}
    for rule_id, entries in by_rule.items():
        annotations[rule_id] = _bounded_json_list(entries, AUDIT_VALUE_MAX)
    return annotations


def _bounded_json_list(entries: list[dict[str, str]], limit: int) -> str:
    """As many whole entries as fit in limit characters (still valid JSON), then a count of the rest."""
    kept: list[dict[str, Any]] = []
    for index, original in enumerate(entries):
        entry = {**original, "message": _clip(original["message"], limit // 4)}
        if len(json.dumps([*kept, entry], separators=(",", ":"))) > limit - 20:
            kept.append({"more": len(entries) - index})
            break
        kept.append(entry)
    return json.dumps(kept, separators=(",", ":"))
