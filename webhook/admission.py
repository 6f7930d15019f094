"""The admission.k8s.io/v1 protocol: AdmissionReview in, AdmissionReview out (pure, no HTTP here)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.config import Config, build_evaluator
from webhook.evaluation import Evaluator, Mode
from webhook.gang.pods import admit_pod
from webhook.gang.settings import GangSettings
from webhook.gang.state import GangIndex, NoCluster
from webhook.karta.model import GVK
from webhook.karta.registry import DefinitionSet
from webhook.kube.meta import controller_of
from webhook.policy.model import Severity, Violation

REVIEW_API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})
# The API server truncates a warning past 256 characters and drops warnings past 4096 in total.
WARNING_MAX = 256
WARNINGS_TOTAL_MAX = 4096
AUDIT_VALUE_MAX = 2048
# A denial lists at most this many causes, each clipped, and a message of at most MESSAGE_MAX
# characters; what is left out is counted. One object can hold tens of thousands of violations
# (a 2.6 MiB RayService drew 70,929 causes and a 43.6 MiB answer before these bounds).
MAX_CAUSES = 50
CAUSE_MAX = 512
FIELD_MAX = 256
VALUE_MAX = 128
MESSAGE_MAX = 4096
NAME_MAX = 253


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
    # Pod mutation: why a grouped pod got no gang keys (or some left out); a metric label.
    gang_reason: str | None = None


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


# Where Pod mutation finds the gang of a pod's owner (webhook.gang.state); the names the cluster
# edge has always used.


class Admission:
    def __init__(self, evaluator: Evaluator, gang: GangSettings, owners: GangIndex | None = None) -> None:
        self.evaluator = evaluator
        self.gang = gang
        # Tested for None, not truth: a cluster cache has a length and is empty when a worker starts.
        self.owners: GangIndex = owners if owners is not None else NoCluster()

    @classmethod
    def for_config(
        cls, config: Config, definitions: DefinitionSet | None = None, owners: GangIndex | None = None
    ) -> Admission:
        """Admission deciding with the configuration's policy, mode and gang settings."""
        return cls(build_evaluator(config, definitions), config.gang, owners)

    # --- validation ---

    def validate(self, review: Review, mode: Mode | None = None) -> Outcome:
        mode = mode or self.evaluator.mode
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
        old = review.request.get("oldObject")
        verdict = self.evaluator.verdict(
            _with_kind(obj, review.kind),
            mode,
            old=_with_kind(old, review.kind) if review.operation == "UPDATE" and isinstance(old, dict) else None,
        )
        if verdict is None or verdict.mode is Mode.OFF:
            return outcome
        violations = list(verdict.violations)
        outcome.violations = violations
        response: dict[str, Any] = {"allowed": True}
        if not verdict.allowed:
            denying = verdict.denying
            response = {"allowed": False, "status": _status(verdict.kind, review, obj, denying)}
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
            mode=str(self.evaluator.mode),
        )
        if (
            review.operation != "CREATE"
            or review.sub_resource
            or review.kind.kind != "Pod"
            or review.kind.group
            or not isinstance(pod, dict)
            or self.gang.scheduler == "none"
            or self.evaluator.mode is Mode.OFF
        ):
            return outcome
        owner = controller_of(pod)
        if owner is None:
            return outcome
        compiled = self.evaluator.definitions.for_kind(GVK.of(owner))
        if compiled is None:
            return outcome
        claim = compiled.classifier.classify(pod)
        if claim is None or (claim.grouping is None and compiled.definition.pod_group is None):
            return outcome  # not a pod of any gang: no lookup at all
        namespace = review.namespace or str((pod.get("metadata") or {}).get("namespace") or "")
        lookup = self.owners.gang(namespace, owner)
        decision = admit_pod(pod, claim, compiled.definition, lookup, settings=self.gang, namespace=namespace)
        if not decision.grouped:
            return outcome
        outcome.notes.extend(decision.notes)
        if decision.withheld is not None:
            outcome.gang_reason = decision.withheld.reason
            outcome.notes.append(f"{decision.withheld.reason}: {decision.withheld.message}")
        patch = decision.patch(pod)
        if patch:
            encoded = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
            outcome.response = _envelope(review, {"allowed": True, "patchType": "JSONPatch", "patch": encoded})
            outcome.verdict = "patched"
        elif decision.withheld is not None:
            outcome.verdict = "withheld"
        else:
            outcome.verdict = "allowed"
        return outcome


def _with_kind(obj: Mapping[str, Any], kind: GVK) -> Mapping[str, Any]:
    """The API server always sets apiVersion and kind in request.object; fill them in if a caller did not."""
    if obj.get("apiVersion") and obj.get("kind"):
        return obj
    return {**obj, "apiVersion": kind.api_version, "kind": kind.kind}


def _object_name(review: Review, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or review.request.get("name")
    if name:
        return _clip(str(name), NAME_MAX)
    return _clip(f"{meta.get('generateName', '')}*", NAME_MAX) if meta.get("generateName") else ""


def _cause(v: Violation) -> str:
    value = "" if v.value is None else f"Invalid value: {_clip(json.dumps(v.value, default=str), VALUE_MAX)}: "
    return _clip(f"{_clip(v.path, FIELD_MAX) or '(object)'}: {value}{v.message} [{v.rule}]", CAUSE_MAX)


def _status(kind: str, review: Review, obj: Mapping[str, Any], denying: list[Violation]) -> dict[str, Any]:
    """A 422 Invalid status in the shape of Kubernetes' own field errors, bounded in size."""
    group = review.kind.group
    qualified = f"{kind}.{group}" if group else kind
    name = _object_name(review, obj)
    head = f'{qualified} "{name}" is invalid: '
    causes = [
        {"reason": "FieldValueInvalid", "message": _clip(f"{v.message} [{v.rule}]", CAUSE_MAX),
         "field": _clip(v.path, FIELD_MAX)}
        for v in denying[:MAX_CAUSES]
    ]  # fmt: skip
    if len(denying) > MAX_CAUSES:
        causes.append(
            {"reason": "FieldValueTooMany", "message": f"{len(denying) - MAX_CAUSES} more violations not listed",
             "field": ""}
        )  # fmt: skip
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 422,
        "reason": "Invalid",
        "message": head + _listed([_cause(v) for v in denying[:MAX_CAUSES]], len(denying), MESSAGE_MAX - len(head)),
        "details": {"name": name, "group": group, "kind": kind, "causes": causes},
    }


CLIPPED = " ... (cut)"


def _listed(causes: list[str], total: int, room: int) -> str:
    """One cause as it is, several as Kubernetes lists them: "[a, b, and 3 more]" within room characters."""
    if total == 1:
        return _clip(causes[0], room)
    shown: list[str] = []
    used = 2
    for index, cause in enumerate(causes):
        rest = f", and {total - index} more" if index else f"and {total} more"
        if used + len(cause) + 2 + len(rest) > room:
            return "[" + ", ".join(shown) + (", " if shown else "") + rest.removeprefix(", ") + "]"
        shown.append(cause)
        used += len(cause) + 2
    if total > len(causes):
        return "[" + ", ".join(shown) + f", and {total - len(causes)} more]"
    return "[" + ", ".join(shown) + "]"


def _clip(text: str, limit: int) -> str:
    """text within limit characters; a longer one is cut at a word boundary and says so."""
    if len(text) <= limit:
        return text
    room = text[: limit - len(CLIPPED) + 1]
    boundary = room.rfind(" ")
    kept = room[:boundary] if boundary > limit // 2 else room[:-1]
    return kept.rstrip(" ,;:") + CLIPPED


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
